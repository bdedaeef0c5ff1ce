"""The classic failure signatures of an MI estimate, found after the fact (:func:`diagnose`).

Each one found becomes a line of ``MIEstimate.warnings`` (and a ``warning:`` line on stderr in
``dim-mine`` and ``dim-eval``); the thresholds are the module constants below.
"""

from __future__ import annotations

import math

import numpy as np

from dim.mine.result import Z95
from dim.mine.training import TrainConfig, TrainOutcome

# Fewer training pairs than this per input dimension: the estimate is flagged as untrustworthy.
MIN_PAIRS_PER_DIM = 10
# Held-out critic scores beyond this magnitude: e^T over- or underflows the DV/NWJ averages.
SCORE_BLOWUP = 50.0


def diagnose(
    bound: str,
    raw: float,
    se: float,
    n_train: int,
    x_dim: int,
    y_dim: int,
    cfg: TrainConfig | None = None,
    outcome: TrainOutcome | None = None,
    max_score: float = 0.0,
    n_eval: int | None = None,
) -> list[str]:
    """The failure signatures an estimate shows, one line each (empty: none found).

    - too few pairs for the dimension (fewer than ``MIN_PAIRS_PER_DIM`` training pairs per input
      dimension; KSG: more than 10 dimensions in all, where k-NN estimates are biased low);
    - the held-out estimate far below the training estimate of the kept critic (overfitting);
    - no convergence (still improving at ``max_steps``);
    - a critic score blow-up (non-finite loss, huge held-out scores or a held-out spread too wide
      to mean anything);
    - InfoNCE at its ceiling log(K);
    - any other bound above log(``n_eval``), more than the held-out sample can certify
      (McAllester & Stratos 2020): the log-mean-exp of the critic over the negatives is then
      dominated by a few rare pairs and the value can be far off in either direction;
    - a raw estimate below zero beyond its own 95% interval.
    """
    out: list[str] = []
    dims = x_dim + y_dim
    if bound == "ksg":
        if dims > 10:
            out.append(
                f"KSG in {dims} dimensions is biased low (k-NN distances concentrate); "
                "use bound=mine"
            )
        if raw + Z95 * se < 0:
            out.append(f"estimate {raw:.3f} is below zero beyond its interval; reported as 0")
        return out
    if n_train < MIN_PAIRS_PER_DIM * dims:
        out.append(
            f"only {n_train} training pairs for {x_dim}+{y_dim} dimensions (fewer than "
            f"{MIN_PAIRS_PER_DIM} per dimension): not trustworthy at this sample size"
        )
    if outcome is not None and outcome.curve and outcome.best_step:
        train_at_best = next(
            (p.train_mi for p in outcome.curve if p.step == outcome.best_step), None
        )
        if train_at_best is not None and train_at_best - raw > max(0.15, 0.25 * abs(raw)):
            out.append(
                f"held-out estimate {raw:.3f} is far below the training estimate "
                f"{train_at_best:.3f}: the critic overfits (more pairs or a smaller critic)"
            )
    if outcome is not None and cfg is not None and not outcome.stopped_early:
        vals = [p.heldout_mi for p in outcome.curve if p.heldout_mi is not None]
        if not outcome.diverged and outcome.best_step == outcome.steps and len(vals) >= 2:
            out.append(
                f"not converged: the validation estimate was still rising at the last step "
                f"({max(vals[:-1]):.3f} -> {vals[-1]:.3f}); raise train.max_steps"
            )
    if outcome is not None and outcome.diverged:
        out.append("critic scores blew up (non-finite loss); the last finite critic was kept")
    elif max_score > SCORE_BLOWUP or not np.isfinite(raw) or se > 0.5 + 0.25 * abs(raw):
        out.append(
            f"critic scores blew up (largest held-out |T| {max_score:.1f}, s.e. {se:.3f}): "
            "the estimate is not reliable; lower train.lr"
        )
    if bound == "infonce" and cfg is not None:
        cap = math.log(cfg.batch_size)
        if raw > cap - 0.5:
            out.append(
                f"InfoNCE is at its ceiling log({cfg.batch_size}) = {cap:.3f}: the MI may be "
                "far higher; use bound=mine or a larger train.batch_size"
            )
    elif n_eval is not None and n_eval > 1 and raw > math.log(n_eval):
        out.append(
            f"estimate {raw:.3f} exceeds log({n_eval} held-out pairs) = {math.log(n_eval):.3f}, "
            "more than this sample can certify: not trustworthy (it may be far off either way)"
        )
    if raw + Z95 * se < 0:
        out.append(
            f"estimate {raw:.3f} is below zero beyond its interval (the critic failed); "
            "reported as 0"
        )
    return out
