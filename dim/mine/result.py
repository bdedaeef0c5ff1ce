"""What an estimate returns: :class:`MIEstimate` and the points of its training curve."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LOG2 = math.log(2.0)
Z95 = 1.959964  # two-sided 95% normal quantile


@dataclass
class CurvePoint:
    """One row of the training curve (nats)."""

    step: int
    train_mi: float
    heldout_mi: float | None = None
    true_mi: float | None = None


@dataclass
class MIEstimate:
    """An estimate of I(X;Y).

    Attributes:
        mi_nats: the reported estimate, in nats: the held-out estimate, or 0 where that is below
            zero (MI is never negative; the raw value is ``raw_mi_nats``).
        stderr_nats: its standard error (spread across held-out blocks; KSG: across samples).
        bound: the estimator used.
        n_train: pairs the critic was fitted on (0 for KSG).
        n_val: pairs used for early stopping (0 for KSG).
        n_eval: pairs the reported estimate was computed on.
        curve: training curve: step, train estimate (mean over the last steps), held-out
            (validation) estimate and, for synthetic tasks, the true MI.
        true_mi: analytic MI in nats, when known.
        best_step: training step of the kept critic.
        steps: training steps taken (early stopping may end before ``max_steps``).
        seconds: wall-clock time of the estimate.
        n_dropped: rows dropped for holding NaN/inf (only with ``drop_nonfinite=True``).
        settings: the estimator settings, for the record.
        raw_mi_nats: the held-out estimate before clipping at 0 (None: same as ``mi_nats``).
        warnings: failure signatures found (one line each; empty when none fired).
    """

    mi_nats: float
    stderr_nats: float
    bound: str
    n_train: int
    n_val: int
    n_eval: int
    curve: list[CurvePoint] = field(default_factory=list)
    true_mi: float | None = None
    best_step: int = 0
    steps: int = 0
    seconds: float = 0.0
    n_dropped: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    raw_mi_nats: float | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.raw_mi_nats is None:
            self.raw_mi_nats = self.mi_nats
        self.mi_nats = max(0.0, self.mi_nats)

    @property
    def ci_nats(self) -> tuple[float, float]:
        """95% interval of the estimate (raw estimate ± 1.96 s.e.), clipped at 0 (nats)."""
        raw = self.mi_nats if self.raw_mi_nats is None else self.raw_mi_nats
        half = Z95 * self.stderr_nats
        return max(0.0, raw - half), max(0.0, raw + half)

    @property
    def clipped(self) -> bool:
        """True when the raw estimate was below zero and 0 is reported instead."""
        return self.raw_mi_nats is not None and self.raw_mi_nats < 0

    @property
    def mi_bits(self) -> float:
        """The estimate in bits."""
        return self.mi_nats / LOG2

    @property
    def stderr_bits(self) -> float:
        """The standard error in bits."""
        return self.stderr_nats / LOG2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (what ``dim-mine`` writes to ``mi.json``)."""
        out = asdict(self)
        out["curve"] = [asdict(p) for p in self.curve]
        out["mi_bits"], out["stderr_bits"] = self.mi_bits, self.stderr_bits
        out["ci95_nats"] = list(self.ci_nats)
        out["ci95_bits"] = [v / LOG2 for v in self.ci_nats]
        return out

    def __str__(self) -> str:
        """``I(X;Y) ≈ 1.234 nats (1.780 bits), 95% CI [1.190, 1.278] nats``, plus, when the raw
        estimate was negative, ``; raw estimate -0.031: consistent with independence`` (or
        ``...: below its own interval, not a result`` when even the interval lies below 0)."""
        lo, hi = self.ci_nats
        line = (
            f"I(X;Y) ≈ {self.mi_nats:.3f} nats ({self.mi_bits:.3f} bits), "
            f"95% CI [{lo:.3f}, {hi:.3f}] nats"
        )
        if self.clipped:
            verdict = "consistent with independence" if hi > 0 else "a failed estimate"
            line += f"; raw estimate {self.raw_mi_nats:.3f}: {verdict}"
        return line
