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
from dim.modules.dim import DIMModule, NonFiniteLossError
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


def test_exact_resume_equals_a_straight_run(tmp_path):
    det = [*TINY, "trainer.deterministic=true"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert (
        run_cli("dim-train", *det, "trainer.max_epochs=2", f"hydra.run.dir={straight}").returncode
        == 0
    )
    assert (
        run_cli("dim-train", *det, "trainer.max_epochs=1", f"hydra.run.dir={split}").returncode == 0
    )
    proc = run_cli("dim-train", f"resume={split}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(straight / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(split / "checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    # Every weight and buffer: encoder, critics, prior discriminator, probes.
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pa, pb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
            assert torch.equal(pa["exp_avg"], pb["exp_avg"])
    la, lb = _losses(straight), _losses(split)
    for tag in ("train/loss/local", "train/loss/prior_discriminator", "train/probe/acc_y"):
        assert la[tag] == lb[tag], tag


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
