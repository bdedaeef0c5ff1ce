"""AMDIM through the user's commands: dim-train (and its exact resume, with the views built in
loader workers or on the device), dim-embed, dim-eval, dim-export and dim.load_encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, compose_train, run_cli
from omegaconf import OmegaConf
from preemption_helpers import assert_same_training

import dim
from dim.errors import DimError
from dim.training import check_checkpoint, train

SMALL = ["method=amdim", "model.ndf=4", "model.n_rkhs=8", "model.n_depth=1"]


@pytest.mark.parametrize("on_device", [False, True])
def test_mid_epoch_resume_is_exact_with_views(tmp_path, on_device):
    """A checkpoint from the middle of an epoch resumes with the same view pairs (drawn per
    sample in a loader worker, or per batch on the device) and the same 5x5 source locations."""
    overrides = [
        *TINY, *SMALL,
        "optim.warmup_steps=5",
        f"data.num_workers={0 if on_device else 1}",
        f"data_on_device={str(on_device).lower()}",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
        "callbacks.checkpoint.every_n_train_steps=3",
    ]  # fmt: skip
    train(compose_train(overrides), tmp_path / "straight", None)
    train(compose_train([*overrides, "trainer.max_steps=6"]), tmp_path / "first", None)
    first = tmp_path / "first/checkpoints/last.ckpt"
    assert torch.load(first, weights_only=True)["global_step"] == 6  # mid-epoch, mid-warm-up
    train(compose_train(overrides), tmp_path / "first", first)
    assert_same_training(tmp_path / "straight", tmp_path / "first", steps=8)


def test_train_embed_eval_export_through_the_console_scripts(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("dim-train", *TINY, *SMALL, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mi/1t5 estimate (nats)" in proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    for term in ("1t5", "1t7", "5t5"):
        assert metrics[f"val/loss/{term}"] is not None and f"train/loss/{term}" in metrics
    assert "val/knn/acc_y" in metrics
    assert metrics["lr/encoder"] == pytest.approx(2e-4 * 4 / 500)  # 4 steps into the warm-up

    out = tmp_path / "test.npz"
    proc = run_cli("dim-embed", f"run={run}", "split=test", f"out={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        arrays = dict(f)
    assert set(arrays) == {"conv", "fc", "y", "labels"}
    assert arrays["y"].shape == (32, 8)  # the global 1x1 feature, n_rkhs units
    assert arrays["conv"].shape == (32, 16, 5, 5) and arrays["fc"].shape == (32, 16, 3, 3)

    encoder = dim.load_encoder(run)
    assert encoder.config == {
        "name": "amdim", "in_channels": 3, "image_size": 32, "y_dim": 8, "ndf": 4,
        "n_depth": 1, "use_bn": False,
    }  # fmt: skip
    exported = tmp_path / "exported.pt"
    proc = run_cli("dim-export", f"run={run}", f"out={exported}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = dim.load_encoder(exported)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(images)["y"], encoder(images)["y"])

    ev = tmp_path / "ev"
    proc = run_cli(
        "dim-eval", f"run={run}", "eval=knn,fewshot", "num_threads=1", "eval.fewshot.seeds=1",
        "eval.fewshot.steps=10", f"hydra.run.dir={ev}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((ev / "eval.json").read_text())["results"]
    assert set(results) == {"knn", "fewshot"}
    assert 0 <= results["fewshot"]["values"]["5shot/y"]["mean"] <= 100

    # resuming with another encoder width is refused in one line, before anything trains
    from dim.methods import build_method

    cfg = OmegaConf.to_container(compose_train([*TINY, *SMALL, "model.ndf=8"]), resolve=True)
    groups = {k: cfg[k] for k in ("model", "bound", "objective", "optim")}
    module = build_method("amdim", **groups, data=dict(channels=3, image_size=32, num_classes=10))
    with pytest.raises(DimError, match="was trained with encoder"):
        check_checkpoint(run / "checkpoints" / "last.ckpt", module)
