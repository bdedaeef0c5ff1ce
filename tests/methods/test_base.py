"""The shared method base: the non-finite policy (stop naming the term, or skip and count)."""

import pytest
import torch
from conftest import TINY, compose_train, run_cli

from dim.methods.dim import DIMModule, NonFiniteLossError
from dim.training import train


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


def test_a_fresh_run_stopped_by_a_nan_keeps_its_dir_and_curves(tmp_path, monkeypatch):
    """A run that diverges before its first checkpoint is a result, not a bad command: its
    resolved config and TensorBoard curves stay (only a run that never trained is cleaned up)."""
    _nan_at_step(monkeypatch, 2)
    run = tmp_path / "new" / "r1"
    proc = run_cli("dim-train", *TINY, f"hydra.run.dir={run}")
    assert proc.returncode != 0 and "'local' became nan at step 2" in proc.stderr
    assert (run / ".hydra" / "config.yaml").is_file()
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (run / ".lock").exists()


def test_nonfinite_skip_policy_skips_and_counts(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 1)
    cfg = compose_train([*TINY, "optim.on_nonfinite=skip", "trainer.max_steps=3"])
    metrics = train(cfg, tmp_path, None)
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["skipped_steps"] == 1
    assert metrics["train/skipped_steps"] == 1.0


def test_a_nan_between_checks_stops_the_run_at_the_next_check(tmp_path, monkeypatch):
    """The step only records the NaN on the device; the host reads the record every
    ``log_every_n_steps`` steps and before each checkpoint: the run stops there, naming the step
    of the NaN, and no checkpoint is written after it."""
    _nan_at_step(monkeypatch, 1)
    cfg = compose_train(
        [*TINY, "data.num_samples=160", "trainer.log_every_n_steps=4", "trainer.max_epochs=2"]
    )
    with pytest.raises(
        NonFiniteLossError, match=r"'local' became nan at step 1 \(found at step 4\)"
    ):
        train(cfg, tmp_path, None)
    assert not (tmp_path / "checkpoints/last.ckpt").exists()  # the first is due at epoch end


def test_learning_rates_are_tensors_that_resume_exactly(tmp_path):
    """Adam's rates are tensors (fused, ready for capture) that the warm-up and the epoch
    schedule write in place; a run resumed mid-warm-up equals the straight one and its rates
    are tensors again, also from a checkpoint that saved them as floats."""
    from preemption_helpers import assert_same_training

    overrides = [
        *TINY,
        "objective.gamma=1.0",
        "optim.warmup_steps=2",  # 4 steps per epoch: the warm-up ends in epoch 0
        "optim.scheduler=step",
        "optim.milestones=[1]",
        "optim.lr_decay=0.5",
        "trainer.max_epochs=3",
        "callbacks.checkpoint.every_n_train_steps=1",
    ]
    train(compose_train(overrides), tmp_path / "straight", None)
    train(compose_train([*overrides, "trainer.max_steps=1"]), tmp_path / "first", None)
    first = tmp_path / "first/checkpoints/last.ckpt"
    ckpt = torch.load(first, weights_only=True)
    encoder_group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert torch.is_tensor(encoder_group["lr"]) and encoder_group["warmup_lr"] == 1e-4
    assert encoder_group["lr"].item() == pytest.approx(1e-4 / 2)  # mid-warm-up: update 1 of 2
    for state in ckpt["optimizer_states"]:  # a checkpoint of a run with float rates
        for group in state["param_groups"]:
            group["lr"] = float(group["lr"])
    torch.save(ckpt, first)
    train(compose_train(overrides), tmp_path / "first", first)
    assert_same_training(tmp_path / "straight", tmp_path / "first", steps=12)
    final = torch.load(tmp_path / "first/checkpoints/last.ckpt", weights_only=True)
    lrs = [s["param_groups"][0]["lr"] for s in final["optimizer_states"]]
    assert all(torch.is_tensor(lr) for lr in lrs)
    assert lrs[0].item() == pytest.approx(1e-4 * 0.5)  # warmed up, then the milestone of epoch 1
