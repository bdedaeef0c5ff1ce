"""The non-finite policy's record, kept on the device so a training step reads nothing back.

Testing each step's losses for NaN/inf on the host makes the host wait for the device on every
step, and a captured CUDA graph cannot contain that read at all.  Instead the step only launches
a few tensor ops that keep, on the device, the first non-finite step, the index of its term and
its value (:meth:`NonFiniteWatch.record`); the host reads that record at the checks of
:class:`~dim.methods.base.MethodModule` (every ``trainer.log_every_n_steps`` steps, at each
epoch's end, before every checkpoint is written and at the end of training), so a NaN still
stops the run naming its term and step, and no checkpoint after it is ever written.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dim.errors import DimError


class NonFiniteLossError(DimError):
    """A loss term became NaN/inf; the run stops and keeps its last good checkpoint."""


class NonFiniteWatch:
    """The first non-finite entry of the checks recorded since the run (or resume) started."""

    def __init__(self) -> None:
        self._where: Tensor | None = None  # int64 [step + 1 (0: none yet), index of the entry]
        self._value: Tensor | None = None  # the entry's value
        self._names: list[str] = []

    def record(self, names: list[str], checks: Tensor, step: int) -> None:
        """Keep the first non-finite entry of ``checks`` (named ``names``) of step ``step``,
        unless an earlier one is kept already.  Tensor ops only: no host read."""
        self._names = list(names)
        if self._where is None or self._value is None:
            self._where = torch.zeros(2, dtype=torch.long, device=checks.device)
            self._value = torch.zeros((), dtype=checks.dtype, device=checks.device)
        bad = ~torch.isfinite(checks)
        index = bad.to(torch.uint8).argmax()  # the first bad entry (0 when none is)
        # full(), not tensor(): it sets the value in a kernel, without a host-to-device copy
        new = torch.stack([torch.full((), step + 1, dtype=torch.long, device=checks.device), index])
        take = bad.any() & (self._where[0] == 0)
        self._where.copy_(torch.where(take, new, self._where))
        self._value.copy_(torch.where(take, checks.gather(0, index.view(1))[0], self._value))

    def first(self) -> tuple[int, str, float] | None:
        """``(step, name, value)`` of the first non-finite entry, or None: reads the device."""
        if self._where is None or self._value is None:
            return None
        step_plus_one, index = self._where.tolist()
        if step_plus_one == 0:
            return None
        return step_plus_one - 1, self._names[index], float(self._value)
