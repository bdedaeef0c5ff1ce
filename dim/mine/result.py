"""What an estimate returns: :class:`MIEstimate` and the points of its training curve."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LOG2 = math.log(2.0)


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
        mi_nats: the held-out estimate, in nats.
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
        return out

    def __str__(self) -> str:
        return f"I(X;Y) ≈ {self.mi_nats:.3f} nats ({self.mi_bits:.3f} bits)"
