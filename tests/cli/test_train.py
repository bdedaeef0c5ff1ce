"""dim-train through the real console script: outputs, TensorBoard, resume, bad input."""

import json
import re

import pytest
import torch
from conftest import TINY, run_cli
from hparams_helpers import hparams_sessions
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dim
from dim.monitor.warnings_filter import is_filtered


def _scalars(tb_dir, tag):
    steps = []
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        if tag in ea.Tags()["scalars"]:
            steps += [e.step for e in ea.Scalars(tag)]
    return steps


def test_run_dir_layout_and_summary(tiny_run):
    run, proc = tiny_run
    for rel in (".hydra/config.yaml", "checkpoints/last.ckpt", "metrics.json", "encoder.pt"):
        assert (run / rel).is_file(), rel
    assert "${" not in (run / ".hydra/config.yaml").read_text()  # resolved config
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4  # 64 images / batch 16, one epoch
    assert "val/probe/acc_y" in metrics["metrics"]
    assert "online probe accuracy" in proc.stdout and str(run) in proc.stdout


def test_tensorboard_has_every_term(tiny_run):
    run, _ = tiny_run
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    for tag in (
        "train/loss/local",
        "train/mi/local",
        "train/bound/local",
        "train/loss/prior_encoder",
        "train/loss/prior_discriminator",
        "train/prior/d_accuracy",
        "train/probe/acc_y",
        "lr/encoder",
        "lr/prior_disc",
        "val/mi/local",
        "val/probe/acc_y",
    ):
        assert tag in tags["scalars"], tag
    assert {"representation/y", "representation/sigmoid_y", "representation/prior_samples"} <= set(
        tags["histograms"]
    )
    assert "inputs/train_batch" in tags["images"]


def test_load_encoder_from_run_dir_checkpoint_and_export(tiny_run):
    run, _ = tiny_run
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for path in (run, run / "checkpoints" / "last.ckpt", run / "encoder.pt"):
        enc = dim.load_encoder(path)
        with torch.no_grad():
            out = enc(x)
        assert set(out) == {"local", "conv", "fc", "y"} and out["y"].shape == (2, 64)
        outs.append(out["y"])
    assert torch.allclose(outs[0], outs[1]) and torch.allclose(outs[1], outs[2])
    # Both formats load without arbitrary unpickling.
    torch.load(run / "encoder.pt", weights_only=True)
    torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def test_resume_continues_same_run_dir_and_tensorboard(tmp_path):
    run = tmp_path / "r"
    assert run_cli("dim-train", *TINY, f"hydra.run.dir={run}").returncode == 0
    original_cfg = (run / ".hydra/config.yaml").read_text()
    first = json.loads((run / "metrics.json").read_text())
    proc = run_cli("dim-train", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((run / "metrics.json").read_text())
    assert final["global_step"] == 8
    assert final["train_seconds"] > first["train_seconds"] > 0  # summed over both sessions
    # TensorBoard's HParams tab: still one entry, with the final metrics
    sessions = hparams_sessions(run)
    assert (
        list(sessions) == ["tensorboard"] and sessions["tensorboard"]["status"] == "STATUS_SUCCESS"
    )
    # TensorBoard keeps the first record of a run: its settings as started (a resume may only
    # change keys such as the end); the metrics are the latest
    assert sessions["tensorboard"]["hparams"]["trainer.max_epochs"] == 1
    for tag in ("val/probe/acc_y", "val/knn/acc_y", "val/mi/local"):
        assert sessions["tensorboard"]["metrics"][tag] == pytest.approx(final["metrics"][tag])
    assert (run / ".hydra/config.yaml").read_text() == original_cfg
    steps = _scalars(run / "tensorboard", "train/loss/local")
    assert len(steps) == len(set(steps)) == 8 and max(steps) == 7  # continues, no duplicates
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no second run dir


def test_ckpt_path_starts_a_new_run_dir(tiny_run, tmp_path):
    run, _ = tiny_run
    new = tmp_path / "new"
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = run_cli(
        "dim-train", *TINY, f"ckpt_path={ckpt}", "trainer.max_epochs=2", f"hydra.run.dir={new}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((new / "metrics.json").read_text())["global_step"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["objective.alpha=0", "objective.beta=0", "objective.gamma=0"], "not all zero"),
        (["data.image_size=64"], "use model=basic64"),
        (["data=cifar10", "data.download=false", "data.data_dir={tmp}/nodata"], "data=digits"),
        (["ckpt_path={tmp}/missing.ckpt"], "no such checkpoint"),
        (["model=basic64", "data.image_size=64", "ckpt_path={ckpt}"], "was trained with encoder"),
        (["resume={tmp}"], "not a dim run directory"),
        (["bound.name=infonse"], "unknown bound 'infonse'"),
        (["model.encoder=vgg"], "unknown encoder 'vgg'"),
        (["data.name=imagenet21k"], "unknown dataset 'imagenet21k'"),
        (["ckpt_path={garbage}"], "cannot read"),
    ],
)
def test_bad_input_gives_one_line_error_and_leaves_nothing(tiny_run, tmp_path, args, message):
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 100)
    args = [a.format(tmp=tmp_path, ckpt=ckpt, garbage=garbage) for a in args]
    out = tmp_path / "out"
    base = [a for a in TINY if not a.startswith("data")] if args[0].startswith("data=") else TINY
    proc = run_cli("dim-train", *base, *args, f"hydra.run.dir={out}")
    code, stderr = proc.returncode, proc.stderr
    assert code == 2, stderr[-2000:]
    err = stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], stderr[-2000:]
    assert "Traceback" not in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.mi_units=128", "holds local_critic"),
        ("model.prior_hidden=[8,8]", "holds prior_disc"),
        ("model.y_dim=32", "was trained with encoder"),
    ],
)
def test_resume_refuses_an_override_that_changes_what_the_checkpoint_holds(
    tiny_run, override, message
):
    run = tiny_run[0]
    before = (run / "checkpoints/last.ckpt").read_bytes()
    proc = run_cli("dim-train", f"resume={run}", "trainer.max_epochs=2", override)
    code, stderr = proc.returncode, proc.stderr
    assert code == 2, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in stderr
    assert (run / "checkpoints/last.ckpt").read_bytes() == before


def test_existing_run_dir_is_not_overwritten(tiny_run):
    run, _ = tiny_run
    before = (run / "metrics.json").read_text()
    proc = run_cli("dim-train", *TINY, f"hydra.run.dir={run}")
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (run / "metrics.json").read_text() == before


def test_quickstart_runs_on_real_digits_quietly(tmp_path):
    """The real console script, its output going to files as under nohup or SLURM: plain
    progress lines, and nothing on stderr (no third-party warnings, see
    dim/monitor/warnings_filter.py)."""
    run = tmp_path / "qs"
    proc = run_cli(
        "dim-train",
        "experiment=quickstart",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=2",
        f"hydra.run.dir={run}",
        real=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        proc.stderr == ""
    )  # in particular none of the messages dim.monitor.warnings_filter silences
    assert not [line for line in proc.stdout.splitlines() if is_filtered(line)], proc.stdout
    assert "online probe accuracy (   y)" in proc.stdout
    assert re.search(
        r"^epoch 1/1 done  step 3/3 \(100%\)  \d+ img/s  ETA 0:00:00  loss/", proc.stdout, re.M
    )
    assert "v_num" not in proc.stdout
    cfg = (run / ".hydra/config.yaml").read_text()
    assert "name: digits" in cfg and "encoder: basic32" in cfg and "name: infonce" in cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer=gpu", "needs a CUDA GPU and this machine has none; use trainer=cpu"),
        ("trainer=ddp", "needs a CUDA GPU and this machine has none"),
        ("trainer.precision=fp8", "trainer.precision='fp8' is not a precision Lightning knows"),
        ("trainer.strategy=nosuch", "trainer.strategy='nosuch' is not a strategy"),
        ("trainer.accelerator=tpu", "trainer.accelerator=tpu is not available on this machine"),
        ("trainer.devices=0", "trainer settings refused"),
        ("trainer.sync_batchnorm=true", "add trainer.sync_batchnorm=false to train on CPU"),
    ],
)
def test_trainer_settings_this_machine_cannot_run_are_one_line(tmp_path, override, message):
    if override.startswith(("trainer=", "trainer.sync")) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    for _ in range(2):  # nothing is left behind that blocks running the same command again
        proc = run_cli("dim-train", *TINY, override, f"hydra.run.dir={out}")
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error: ") and message in last, last
        assert "Traceback" not in proc.stderr and not out.exists()


def test_a_missing_gpu_is_named_before_any_data_is_loaded(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    args = ["trainer=gpu", f"data.data_dir={tmp_path}/nodata", "data.download=false"]
    proc = run_cli("dim-train", *args, f"hydra.run.dir={out}")
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr.strip().splitlines()[-1]
