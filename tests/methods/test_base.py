"""The shared method base: the non-finite policy (stop naming the term, or skip and count)."""

import pytest
import torch
from conftest import TINY, compose_train

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


def test_nonfinite_skip_policy_skips_and_counts(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 1)
    cfg = compose_train([*TINY, "optim.on_nonfinite=skip", "trainer.max_steps=3"])
    metrics = train(cfg, tmp_path, None)
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["skipped_steps"] == 1
    assert metrics["train/skipped_steps"] == 1.0
