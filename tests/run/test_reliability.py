"""No lost work: atomic checkpoints, preemption at any moment (``resume`` trains to the configured
end, bit-identical to a run never interrupted: every weight, Adam moment and logged curve), SIGKILL
during a checkpoint write, exact resume with augmentation in workers or on the device."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, TINY, compose_train, run_cli
from preemption_helpers import Preempt, assert_same_training, install

import dim.run.reliability as reliability
from dim.run.diskio import WriteError
from dim.training import train

TESTS = Path(__file__).parents[1]  # tests/: conftest.py for the killed process
# 64 images / batch 16 = 4 steps an epoch; 3 epochs; validation and the kNN monitor every epoch.
BASE = [*TINY, "trainer.deterministic=true", "trainer.enable_progress_bar=false"]
BY_STEPS = [*BASE, "trainer.max_epochs=-1", "trainer.max_steps=12"]
BY_EPOCHS = [*BASE, "trainer.max_epochs=3"]
PERIODIC = [*BY_STEPS, "callbacks.checkpoint.every_n_train_steps=3"]
ON_DEVICE = [*BY_STEPS, "data_on_device=true"]

_straight: dict[tuple[str, ...], Path] = {}


def straight_run(overrides: list[str], tmp_path_factory) -> Path:
    """The uninterrupted run of a configuration (trained once per session)."""
    key = tuple(overrides)
    if key not in _straight:
        run = tmp_path_factory.mktemp("straight")
        train(compose_train(overrides), run, None)
        _straight[key] = run
    return _straight[key]


def interrupted(overrides, run, monkeypatch, point, step, sig=signal.SIGTERM) -> int:
    """Train until the signal stops the run; returns the exit code train() asked for."""
    with monkeypatch.context() as m:
        install(m.setattr, Preempt(point, step, sig))
        with pytest.raises(SystemExit) as stop:
            train(compose_train(overrides), run, None)
    return stop.value.code


def resume(overrides, run) -> None:
    train(compose_train(overrides), run, run / "checkpoints/last.ckpt")


# (configuration, where the signal arrives, at which step, the step the checkpoint holds)
CASES = {
    "first epoch": (BY_STEPS, "step", 2, 2),
    "second epoch": (BY_STEPS, "step", 6, 6),
    "last step of an epoch": (BY_STEPS, "step", 4, 4),
    "during validation": (BY_STEPS, "validation", 8, 8),
    "during the kNN monitor": (BY_STEPS, "knn", 4, 4),
    "during an epoch-end checkpoint write": (BY_STEPS, "checkpoint", 8, 8),
    "during a periodic checkpoint write": (PERIODIC, "checkpoint", 3, 3),
    "first epoch, run bounded by epochs": (BY_EPOCHS, "step", 1, 1),
    "epoch end, run bounded by epochs": (BY_EPOCHS, "validation", 4, 4),
    "first epoch, data on the device": (ON_DEVICE, "step", 3, 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_after_a_signal_anywhere_equals_the_straight_run(
    case, tmp_path, tmp_path_factory, monkeypatch, capsys
):
    overrides, point, step, saved = CASES[case]
    straight = straight_run(overrides, tmp_path_factory)
    assert interrupted(overrides, tmp_path, monkeypatch, point, step) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert f"Stopped by SIGTERM at step {saved}; checkpoint saved to " in err
    assert f"Continue with: dim-train resume={tmp_path}" in err
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == saved
    resume(overrides, tmp_path)
    assert "Training finished." in capsys.readouterr().out
    assert_same_training(straight, tmp_path)


def test_two_interruptions_and_sigint_resume_exactly(tmp_path, tmp_path_factory, monkeypatch):
    straight = straight_run(BY_STEPS, tmp_path_factory)
    assert interrupted(BY_STEPS, tmp_path, monkeypatch, "step", 1) == 128 + signal.SIGTERM
    with monkeypatch.context() as m:
        install(m.setattr, Preempt("step", 7, signal.SIGINT))
        with pytest.raises(SystemExit) as stop:
            resume(BY_STEPS, tmp_path)
    assert stop.value.code == 128 + signal.SIGINT
    resume(BY_STEPS, tmp_path)
    assert_same_training(straight, tmp_path)


def test_signal_at_the_last_step_finishes_and_resume_has_nothing_to_do(
    tmp_path, monkeypatch, capsys
):
    with monkeypatch.context() as m:
        install(m.setattr, Preempt("step", 12))
        train(compose_train(BY_STEPS), tmp_path, None)  # the run ends here anyway: no stop
    assert "Training finished." in capsys.readouterr().out
    (tmp_path / "encoder.pt").unlink()  # as if killed before the export
    resume(BY_STEPS, tmp_path)
    out = capsys.readouterr().out
    assert "Nothing to train: already at step 12 of 12 (trainer.max_steps)" in out
    assert "Training finished." not in out
    assert (tmp_path / "encoder.pt").is_file()


def test_resumed_run_that_stops_early_says_why(tmp_path, monkeypatch, capsys):
    assert interrupted(BY_STEPS, tmp_path, monkeypatch, "step", 2) == 128 + signal.SIGTERM
    resume([*BY_STEPS, "+trainer.max_time=00:00:00:00"], tmp_path)
    out = capsys.readouterr().out
    assert "Training stopped early at step 2 (configured end: step 12): trainer.max_time" in out


@pytest.mark.slow  # real processes killed and restarted (about 17 s): make test-slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_previous_one(
    tmp_path, tmp_path_factory
):
    """Killed while writing the step-6 checkpoint: the half-written file is never resumed from;
    resume continues from step 3 and is exact from there."""
    straight = straight_run(PERIODIC, tmp_path_factory)
    script = (
        "import os, signal, sys, torch, dim.run.reliability as r\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import compose_train\n"
        "from dim.training import train\n"
        "save = torch.save\n"
        "def half(obj, f, *a, **k):\n"
        "    if obj['global_step'] == 6:\n"
        "        f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    save(obj, f, *a, **k)\n"
        "r.torch.save = half\n"
        f"train(compose_train({PERIODIC!r}), __import__('pathlib').Path({str(tmp_path)!r}), None)\n"
    )
    # the killed run computes with this process's thread count: CPU kernels (the fused Adam
    # among them) may round differently with another one, and the comparison is bit-exact
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    resume(PERIODIC, tmp_path)
    assert_same_training(straight, tmp_path, relogged=True)


def test_cli_resume_with_nothing_left_says_so(tiny_run):
    run, _ = tiny_run
    steps = json.loads((run / "metrics.json").read_text())["global_step"]
    proc = run_cli("dim-train", f"resume={run}")
    code, out, err = proc.returncode, proc.stdout, proc.stderr
    assert code == 0, err[-2000:]
    assert f"already at epoch 1 of 1 (trainer.max_epochs), step {steps}" in out
    assert "Training finished." not in out


def test_extending_a_finished_run_equals_the_straight_run(tmp_path, tmp_path_factory):
    """End-of-training work (projector, final checkpoint) leaves the resumable state as it was:
    1 epoch, then ``resume`` with ``max_epochs=3``, equals 3 epochs straight."""
    straight = straight_run(BY_EPOCHS, tmp_path_factory)
    train(compose_train([*BY_EPOCHS, "trainer.max_epochs=1"]), tmp_path, None)
    resume(BY_EPOCHS, tmp_path)
    assert_same_training(straight, tmp_path)


# 48 images / batch 16 = 3 steps an epoch; an epoch schedule that halves the rate after epoch 1
CUT = [
    *BASE,
    "data.num_samples=48",
    "trainer.max_epochs=-1",
    "callbacks.knn.every_n_epochs=0",
    "optim.scheduler=step",
    "optim.milestones=[1]",
    "optim.lr_decay=0.5",
]


def test_extending_a_run_ended_by_max_steps_mid_epoch_equals_the_straight_run(
    tmp_path, tmp_path_factory, capsys
):
    """2 steps (the middle of epoch 0), then ``resume`` with ``max_steps=5`` (the rest of epoch 0,
    its validation and schedule step, 2 steps of epoch 1), equals 5 steps straight: the end of
    fit by ``max_steps`` is saved as the middle of the epoch, not as its end."""
    straight = straight_run([*CUT, "trainer.max_steps=5"], tmp_path_factory)
    train(compose_train([*CUT, "trainer.max_steps=2"]), tmp_path, None)
    cut = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert cut["global_step"] == 2
    assert cut["ImageDataModule"] == {"epoch": 0, "batches_done": 2}  # the data order goes on
    assert reliability.trained_so_far(cut) == (2, 0)  # epoch 0 is not done
    by_epochs = compose_train([*CUT, "trainer.max_steps=-1", "trainer.max_epochs=1"])
    assert reliability.nothing_left(by_epochs, cut) is None  # 1 step of epoch 0 is left
    resume([*CUT, "trainer.max_steps=5"], tmp_path)
    assert "Training finished." in capsys.readouterr().out
    assert_same_training(straight, tmp_path, steps=5)
    for run in (straight, tmp_path):  # both ended by max_steps in the middle of epoch 1
        last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
        assert last["ImageDataModule"] == {"epoch": 1, "batches_done": 2}


def test_atomic_checkpoint_survives_a_crash_while_saving(tmp_path, monkeypatch):
    io = reliability.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(reliability.torch, "save", crash)
    with pytest.raises(WriteError, match=f"cannot write {path}: Input/output error .EIO."):
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


@pytest.mark.slow  # the console script signalled and resumed (about 10 s): make test-slow
def test_sigterm_to_the_console_script_saves_and_resume_finishes(tmp_path):
    """The real process, a real signal at whatever step it has reached; meanwhile a second
    ``resume`` of the same run dir is refused (one writer per run dir)."""
    sig = signal.SIGTERM
    run = tmp_path / "run"
    proc = _start_long_run(run)
    second = run_cli("dim-train", f"resume={run}")
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is in use by dim-train (pid {proc.pid} on host " in second.stderr.splitlines()[-1]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"Continue with: dim-train resume={run}" in err and "Traceback" not in err
    assert not (run / ".lock").exists()  # released on the way out
    step = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert step > 0
    resumed = run_cli("dim-train", f"resume={run}", f"trainer.max_epochs={step // 4 + 2}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == (step // 4 + 2) * 4


@pytest.mark.parametrize(
    "on_device",
    [pytest.param(False, marks=pytest.mark.slow), True],  # worker processes: 13 s, make test-slow
)
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
    train(compose_train(overrides), tmp_path / "first", first)  # as resume does: same run dir
    assert_same_training(tmp_path / "straight", tmp_path / "first", steps=8)
