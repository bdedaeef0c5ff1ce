"""Deterministic preemption: a callback that signals its own process at a chosen point.

Also a torchrun entry point (``python -m torch.distributed.run ... preemption_helpers.py``) that
trains with the callback on rank 0 only, so the other process learns of the stop from rank 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dim.monitor.visuals as eval_callbacks
import dim.training as training

# Where a signal can arrive: after the step (training_step done), in the middle of validation,
# during the kNN monitor, while a checkpoint is being written.
POINTS = ("step", "validation", "knn", "checkpoint")


class Preempt(pl.Callback):
    """Send ``sig`` to this process when ``global_step == step`` at ``point`` (once)."""

    def __init__(self, point: str, step: int, sig: int = signal.SIGTERM) -> None:
        assert point in POINTS, point
        self.point, self.step, self.sig, self.fired = point, step, sig, False

    def fire(self, trainer: pl.Trainer, point: str) -> None:
        if point == self.point and trainer.global_step == self.step and not self.fired:
            self.fired = True
            os.kill(os.getpid(), self.sig)  # the handler runs before the next line

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.fire(trainer, "step")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self.fire(trainer, "validation")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.fire(trainer, "checkpoint")  # the checkpoint dict is built, the file not yet written


def install(monkeypatch_setattr, preempt: Preempt) -> None:
    """Make :func:`dim.training.train` run with ``preempt`` (and signal inside the kNN monitor)."""
    build = training.build_callbacks
    features = eval_callbacks._shared_features

    def build_callbacks(cfg, run_dir, *args):
        return [preempt, *build(cfg, run_dir, *args)]

    def shared_features(trainer, *args, **kwargs):
        preempt.fire(trainer, "knn")
        return features(trainer, *args, **kwargs)

    monkeypatch_setattr(training, "build_callbacks", build_callbacks)
    monkeypatch_setattr(eval_callbacks, "_shared_features", shared_features)


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: sorted((e.step, e.value) for e in ea.Scalars(t)) for t in ea.Tags()["scalars"]}


def assert_same_training(
    straight: Path, run: Path, steps: int = 12, relogged: bool = False
) -> None:
    """Same final state and curves; ``relogged``: steps between the last checkpoint and a kill
    were logged twice, with the same values."""
    a = torch.load(straight / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert b["global_step"] == a["global_step"] == steps
    for key, value in a["state_dict"].items():  # encoder, critics, prior D, probes
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for sa, sb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])
            assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    ca, cb = curves(straight), curves(run)
    assert ca.keys() == cb.keys()
    for tag in ca:  # train losses and probes every step; validation and kNN every epoch
        if relogged:
            assert sorted(set(ca[tag])) == sorted(set(cb[tag])), tag
        else:
            assert ca[tag] == cb[tag], tag
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (straight / "checkpoints").iterdir()
    )  # no last-v1.ckpt beside last.ckpt


def torchrun(overrides_json: Path, run: Path, resume: bool, *point: str):
    """This module's ``main`` on 2 gloo processes under torchrun (one thread each)."""
    here = Path(__file__).parent
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node=2"]
    cmd += [str(here / "preemption_helpers.py"), str(overrides_json), str(run), str(int(resume))]
    env = {**os.environ, "PYTHONPATH": str(here), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *point], capture_output=True, text=True, env=env)


def main() -> None:
    """torchrun worker: ``preemption_helpers.py <overrides.json> <run_dir> <resume 0|1> [point
    step]``; rank 0 gets the signal."""
    from conftest import compose_train

    overrides = json.loads(Path(sys.argv[1]).read_text())
    run, resume = Path(sys.argv[2]), sys.argv[3] == "1"
    if len(sys.argv) > 4 and int(os.environ.get("RANK", "0")) == 0:
        install(setattr, Preempt(sys.argv[4], int(sys.argv[5])))
    training.train(compose_train(overrides), run, run / "checkpoints/last.ckpt" if resume else None)


if __name__ == "__main__":
    main()
