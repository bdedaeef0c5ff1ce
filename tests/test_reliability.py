"""No lost work: graceful stop on signals, atomic checkpoints, exact resume, non-finite losses."""

import json
import signal
import subprocess
import time

import pytest
import torch
from conftest import BIN, TINY, compose_train, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dim.reliability as reliability
from dim.methods.dim import DIMModule, NonFiniteLossError
from dim.training import train


def test_atomic_checkpoint_survives_a_crash_while_saving(tmp_path, monkeypatch):
    io = reliability.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(reliability.torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert torch.load(path, weights_only=True)["step"].item() == 1  # previous one intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def _start_long_run(run):
    args = [*TINY, "trainer.max_epochs=500", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        [str(BIN / "dim-train"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "tensorboard").glob("events.out.*")):
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps in
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_with_resume_hint(tmp_path, sig):
    run = tmp_path / "run"
    proc = _start_long_run(run)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"Continue with: dim-train resume={run}" in err and "Traceback" not in err
    step = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert step > 0
    if sig == signal.SIGTERM:  # the saved state resumes
        resumed = run_cli("dim-train", f"resume={run}", f"trainer.max_epochs={step // 4 + 2}")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert json.loads((run / "metrics.json").read_text())["global_step"] == (step // 4 + 2) * 4


def _losses(run):
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = [t for t in ea.Tags()["scalars"] if t.startswith("train/")]
    return {t: {e.step: e.value for e in ea.Scalars(t)} for t in tags}


def _assert_same_training(a_ckpt, b_ckpt) -> None:
    a = torch.load(a_ckpt, weights_only=True)
    b = torch.load(b_ckpt, weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    # Every weight and buffer: encoder, critics, prior discriminator, probes.
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pa, pb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
            assert torch.equal(pa["exp_avg"], pb["exp_avg"])


# Stopped at an epoch end (after 4 of 8 steps) and in the middle of the second epoch (6 of 8).
@pytest.mark.parametrize("stop", ["trainer.max_epochs=1", "trainer.max_steps=6"])
def test_exact_resume_equals_a_straight_run(tmp_path, stop):
    """Both ways, 2 epochs straight and stopped + ``resume`` give identical training."""
    det = [*TINY, "trainer.deterministic=true", "callbacks.checkpoint.every_n_train_steps=3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert (
        run_cli("dim-train", *det, "trainer.max_epochs=2", f"hydra.run.dir={straight}").returncode
        == 0
    )
    first = run_cli("dim-train", *det, "trainer.max_epochs=2", stop, f"hydra.run.dir={split}")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = torch.load(split / "checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == (4 if "epochs" in stop else 6)
    proc = run_cli("dim-train", f"resume={split}", "trainer.max_epochs=2", "trainer.max_steps=-1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_training(straight / "checkpoints/last.ckpt", split / "checkpoints/last.ckpt")
    la, lb = _losses(straight), _losses(split)
    for tag in ("train/loss/local", "train/loss/prior_discriminator", "train/probe/acc_y"):
        assert la[tag] == lb[tag], tag


@pytest.mark.parametrize("on_device", [False, True])
def test_mid_epoch_resume_is_exact_with_augmentation_and_workers(tmp_path, monkeypatch, on_device):
    """Random crops + flips in a worker process (or on the device): a checkpoint from the middle of
    an epoch resumes with the same batches and the same augmented images."""
    from dataset_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", n_per_batch=13).register(monkeypatch)  # 65 images, 4 batches
    overrides = [
        *(o for o in TINY if not o.startswith("data")),
        "data=cifar10",
        "data.batch_size=16",
        f"data.data_dir={tmp_path / 'data'}",
        "data.download=false",
        "data.augment.crop_padding=4",
        "data.augment.hflip=true",
        f"data.num_workers={0 if on_device else 1}",
        "data.pin_memory=false",
        f"data_on_device={str(on_device).lower()}",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
        "callbacks.checkpoint.every_n_train_steps=3",
        "callbacks.knn.every_n_epochs=0",
    ]
    train(compose_train(overrides), tmp_path / "straight", None)
    train(compose_train([*overrides, "trainer.max_steps=6"]), tmp_path / "first", None)
    first = tmp_path / "first/checkpoints/last.ckpt"
    assert torch.load(first, weights_only=True)["global_step"] == 6  # mid-epoch
    train(compose_train(overrides), tmp_path / "resumed", first)
    _assert_same_training(
        tmp_path / "straight/checkpoints/last.ckpt", tmp_path / "resumed/checkpoints/last.ckpt"
    )


def _nan_at_step(monkeypatch, step):
    original = DIMModule.compute_losses
    fired = []

    def compute_losses(self, x, labels):
        out = original(self, x, labels)
        if self.training and self.global_step == step and not fired:
            fired.append(True)
            out["local_loss"] = out["local_loss"] * float("nan")
            out["encoder_loss"] = out["encoder_loss"] + out["local_loss"]
        return out

    monkeypatch.setattr(DIMModule, "compute_losses", compute_losses)


def test_nonfinite_loss_stops_naming_the_term_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 2)
    cfg = compose_train([*TINY, "callbacks.checkpoint.every_n_train_steps=1"])
    with pytest.raises(NonFiniteLossError, match="'local' became nan at step 2"):
        train(cfg, tmp_path, None)
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_nonfinite_skip_policy_skips_and_counts(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 1)
    cfg = compose_train([*TINY, "optim.on_nonfinite=skip", "trainer.max_steps=3"])
    metrics = train(cfg, tmp_path, None)
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["skipped_steps"] == 1
    assert metrics["train/skipped_steps"] == 1.0


def test_sigkill_loses_at_most_one_checkpoint_interval(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=500", "callbacks.checkpoint.every_n_train_steps=2"]
    proc = subprocess.Popen([str(BIN / "dim-train"), *args, f"hydra.run.dir={run}"])
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints/last.ckpt").exists():
        time.sleep(0.2)
    time.sleep(2.0)
    proc.kill()
    proc.wait(timeout=60)
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)  # intact, loadable
    saved = ckpt["global_step"]
    logged = max(max(steps) for steps in _losses(run).values())  # last step that ran
    assert saved >= 2 and logged + 1 - saved <= 2  # at most one interval (2 steps) lost
    proc = run_cli("dim-train", f"resume={run}", f"trainer.max_steps={saved + 3}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == saved + 3
