"""A training step reads nothing back to the host (the precondition of capturing it in one CUDA
graph, docs/gpu.md): three full steps through dim-train's own training run, each under a
TorchDispatchMode that records every aten op whose result the host would have to wait for.

On the CPU a read is cheap, but it is the same op that on a GPU waits for the device; what the
mode cannot see on the CPU is a ``.tolist()`` / ``.numpy()`` of a CPU tensor (no op at all),
which on a GPU goes through the device-to-host copy caught below.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, compose_train
from torch.utils._python_dispatch import TorchDispatchMode

from dim.methods.amdim import AMDIMModule
from dim.methods.dim import DIMModule
from dim.objective import bounds
from dim.training import train

#: ops whose result is a host value, or whose output shape depends on tensor values
READS = {
    "aten._local_scalar_dense",  # .item(), float(t), int(t), bool(t), `if t:`
    "aten.item",
    "aten.is_nonzero",  # bool(t) of a one-element tensor
    "aten.equal",  # torch.equal returns a Python bool
    "aten.allclose",
    "aten.nonzero",  # nonzero / argwhere / where(cond) with one argument
    "aten.argwhere",
    "aten.masked_select",
    "aten.unique_dim",
    "aten._unique",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.bincount",  # output size = max(values) + 1
    "aten._assert_async",  # no wait on a GPU, but a captured step must not hold it either
    "aten._assert_async_msg",
}


def _reads(func, args, kwargs) -> str | None:
    name = func.overloadpacket._qualified_op_name.replace("::", ".")
    if name in READS:
        return str(func)
    if name == "aten.repeat_interleave" and func._overloadname == "Tensor":
        if kwargs.get("output_size") is None:  # tensor repeats: the size is read back
            return str(func)
    if name in ("aten.index", "aten.index_put", "aten.index_put_"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            return f"{func} with a boolean mask"  # the mask's count sets the output size
    if name in ("aten._to_copy", "aten.copy_", "aten.to"):
        device = kwargs.get("device")
        src = args[0] if args else None
        if device is not None and torch.device(device).type == "cpu":
            if isinstance(src, torch.Tensor) and src.device.type != "cpu":
                return f"{func} to the host"
    return None


class HostReads(TorchDispatchMode):
    """Records the ops of :data:`READS` (with the step they ran in)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        read = _reads(func, args, kwargs)
        if read is not None:
            self.found.append(read)
        return func(*args, **kwargs)


#: the monitors run after validation, not in a step: off, to keep these tests short
QUIET = [*TINY, "callbacks.knn.every_n_epochs=0", "callbacks.projector.num_images=0"]


def _steps_under_the_mode(monkeypatch, cls) -> tuple[HostReads, list[int]]:
    """Run every ``training_step`` of ``cls`` (the whole step: forward, backward, every
    optimiser, warm-up, logging) under one recording mode."""
    mode, steps = HostReads(), []
    original = cls.training_step
    # These CPU steps stand for accelerator steps: InfoNCE's positives-only CPU path (boolean
    # indexing, a sync on a GPU) is never taken there, so take the accelerators' path here too.
    monkeypatch.setattr(bounds, "positives_only", lambda device: False)

    def training_step(self, batch, batch_idx):
        with mode:
            result = original(self, batch, batch_idx)
        steps.append(self.global_step)
        return result

    monkeypatch.setattr(cls, "training_step", training_step)
    return mode, steps


def test_three_dim_steps_with_the_prior_game_read_nothing_back(tmp_path, monkeypatch):
    mode, steps = _steps_under_the_mode(monkeypatch, DIMModule)
    cfg = compose_train(
        [
            *QUIET,
            "objective=local_global",  # local, global and the prior game
            "objective.gamma=1.0",
            "model.d_steps=2",  # and the extra discriminator steps
            "model.gp_every=2",  # steps with and without the lazy penalty
            "optim.scheduler=cosine",
            "optim.grad_clip=1.0",
            "trainer.max_steps=3",
        ]
    )
    metrics = train(cfg, tmp_path, None)
    assert steps == [1, 2, 3]  # three optimiser steps ran, every one logged (log_every_n_steps=1)
    assert mode.found == []
    assert metrics["train/prior/gradient_penalty"] > 0  # step 2 (the third) had the penalty
    assert 0.0 <= metrics["train/probe/acc_y"] <= 1.0


def test_three_amdim_steps_read_nothing_back(tmp_path, monkeypatch):
    mode, steps = _steps_under_the_mode(monkeypatch, AMDIMModule)
    cfg = compose_train(
        [
            *QUIET,
            "method=amdim",
            "model.ndf=4",
            "model.n_rkhs=8",
            "model.n_depth=1",
            "optim.warmup_steps=5",  # AMDIM's warm-up, written into the rate tensor
            "optim.scheduler=step",
            "trainer.max_steps=3",
        ]
    )
    train(cfg, tmp_path, None)
    assert steps == [1, 2, 3]
    assert mode.found == []


@pytest.mark.parametrize(
    "read",
    [
        lambda x: float(x.sum()),
        lambda x: bool(x[0] > 0),
        lambda x: int(x.argmax()),
        lambda x: x[x > 0],
        lambda x: torch.equal(x, x),
        lambda x: (x > 0).nonzero(),
        lambda x: x.repeat_interleave(torch.full((8,), 2)),
    ],
)
def test_the_mode_sees_each_kind_of_read(read):
    """The detector itself: a read of each kind in a step would be reported."""
    x = torch.randn(8)
    mode = HostReads()
    with mode:
        read(x)
    assert mode.found


def test_tensor_only_ops_are_not_reads():
    x = torch.randn(8)
    mode = HostReads()
    with mode:
        torch.isfinite(x).all()
        torch.where(x > 0, x, 0.0).sum()
        x.repeat_interleave(2)
    assert mode.found == []


def test_the_record_of_a_nan_is_tensor_only():
    from dim.methods.nonfinite import NonFiniteWatch

    watch = NonFiniteWatch()
    mode = HostReads()
    with mode:
        watch.record(["a_loss", "b_loss"], torch.tensor([1.0, 2.0]), step=0)
        watch.record(["a_loss", "b_loss"], torch.tensor([1.0, float("inf")]), step=1)
        watch.record(["a_loss", "b_loss"], torch.tensor([float("nan"), 2.0]), step=2)
    assert mode.found == []
    assert watch.first() == (1, "b_loss", float("inf"))  # the first one is kept


def test_the_skip_policy_is_the_one_step_that_reads(tmp_path, monkeypatch):
    """The harness sees a read in a real step: ``optim.on_nonfinite=skip`` decides on the host
    whether to step, so it reads one flag per step (docs/gpu.md)."""
    mode, steps = _steps_under_the_mode(monkeypatch, DIMModule)
    train(compose_train([*QUIET, "optim.on_nonfinite=skip", "trainer.max_steps=2"]), tmp_path, None)
    assert steps == [1, 2]
    assert len(mode.found) == 2 and all("_local_scalar_dense" in f for f in mode.found)
