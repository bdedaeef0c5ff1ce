"""The methods' optimisers, built ready for CUDA-graph capture (docs/gpu.md).

A captured step replays fixed kernels on fixed addresses, so nothing it reads may change by
being re-assigned on the host.  Hence:

- every Adam is ``fused`` (one kernel per optimiser; its step counts live on the device, so a
  step reads nothing back: the single-tensor CPU path calls ``.item()`` on its step count) and,
  on CUDA, ``capturable``;
- each learning rate is a 0-dim tensor on the parameters' device; the warm-up and the epoch
  schedules (torch's schedulers fill a tensor rate in place) write into that tensor, outside
  the step, and never replace it.

Exact resume is unchanged: the rate tensor is saved with the optimiser's state and
:func:`tensor_learning_rates` restores it as a tensor after a resume (also from checkpoints
written when the rate was a float).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dim.errors import DimError

#: devices whose Adam has a fused kernel (CPU since torch 2.4)
FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")


def _device(params: list[nn.Parameter]) -> torch.device:
    devices = {p.device for p in params}
    if len(devices) != 1:
        raise DimError(
            f"an optimiser's parameters must share one device; got {sorted(map(str, devices))}"
        )
    return devices.pop()


def build_adam(
    params: list[nn.Parameter], lr: float, betas: tuple[float, float], **options: Any
) -> torch.optim.Adam:
    """Adam with a tensor learning rate on the parameters' device, fused, capturable on CUDA."""
    device = _device(params)
    fused = device.type in FUSED_DEVICES
    return torch.optim.Adam(
        params,
        lr=torch.tensor(float(lr), device=device),
        betas=betas,
        fused=fused,
        capturable=device.type == "cuda",
        foreach=None if fused else False,  # foreach does not take a tensor rate uncaptured
        **options,
    )


def build_schedulers(
    optimizer: torch.optim.Optimizer, optim: dict[str, Any], max_epochs: int
) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """The epoch schedule ``optim.scheduler`` (none | cosine | step) of the encoder's optimiser."""
    kind = optim.get("scheduler", "none")
    if kind == "cosine":
        return [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, max_epochs))]
    if kind == "step":
        milestones = list(optim.get("milestones", [50, 100]))
        return [
            torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, optim.get("lr_decay", 0.1))
        ]
    if kind != "none":
        raise DimError(f"optim.scheduler must be none, cosine or step; got '{kind}'")
    return []


def tensor_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Make every group's ``lr`` a tensor on its parameters' device (after a resume, Adam's
    ``load_state_dict`` puts back the checkpoint's value: a float from an older run, or a tensor
    on the CPU)."""
    for group in optimizer.param_groups:
        params = group["params"]
        if not params:
            continue
        lr, device = group["lr"], params[0].device
        if not isinstance(lr, torch.Tensor) or lr.device != device:
            group["lr"] = torch.as_tensor(lr, dtype=torch.float32).to(device).clone()


def set_learning_rate(group: dict[str, Any], value: float) -> None:
    """Write ``value`` into the group's rate: in place when it is a tensor (its address is what a
    captured step reads)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def prepare_warm_up(optimizer: torch.optim.Optimizer, warmup_steps: int, lr: float) -> None:
    """Record the configured rate ``lr`` as the float ``warmup_lr`` of each group (saved with the
    optimiser's state) that :func:`warm_up` scales, so a step never reads the rate tensor."""
    if warmup_steps <= 0:
        return
    for group in optimizer.param_groups:
        group.setdefault("warmup_lr", float(lr))


def warm_up(optimizer: torch.optim.Optimizer, step: int, warmup_steps: int) -> None:
    """Linear warm-up over the first ``warmup_steps`` updates: update k (0-based ``step``) uses
    ``warmup_lr * (k + 1) / warmup_steps`` (:func:`prepare_warm_up`).  Derived from the step count
    alone, so a resumed run continues it exactly; an epoch schedule should not have a milestone
    inside the warm-up."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return
    for group in optimizer.param_groups:
        set_learning_rate(group, group["warmup_lr"] * (step + 1) / warmup_steps)
