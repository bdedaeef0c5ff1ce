"""Per-variable input transforms fitted on the training split (MI is invariant under them).

I(X;Y) does not change when x's coordinates (or y's) go through invertible maps, so the estimator
may pick whichever coordinates make the critic's job easiest:

- ``copula`` (default): every column goes through its empirical CDF (mid-ranks, linearly
  interpolated between the training values) and then the standard normal quantile function.
  Each column becomes standard normal whatever its marginal: heavy tails (Student-t, Cauchy),
  half-cubes, CDFs, asinh or any other monotone distortion disappear, and outliers can no longer
  dominate a batch. Only the dependence between coordinates (the copula) is left, which is
  where all of the MI lives.
- ``zscore``: subtract the training mean, divide by the training standard deviation (the old
  ``standardize=true``).
- ``none``: the arrays as given.

Each transform is fitted on the training rows only and then applied to every row, so the
held-out rows are mapped by a function that never saw them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtri

from dim.errors import DimError

TRANSFORMS = ("copula", "zscore", "none")


def _copula_column(train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Empirical-CDF-then-normal-quantile map of one column, fitted on ``train``."""
    values, counts = np.unique(train, return_counts=True)
    n = len(train)
    # Mid-rank of each distinct value (ties share the middle of their ranks), as a probability.
    cdf = (np.cumsum(counts) - 0.5 * counts) / n
    lo, hi = 0.5 / n, 1.0 - 0.5 / n

    def apply(col: np.ndarray) -> np.ndarray:
        if len(values) == 1:
            return np.zeros_like(col)
        u = np.interp(col, values, cdf)
        # Beyond the training range: extend the tails a little rather than piling rows up.
        below, above = col < values[0], col > values[-1]
        if below.any():
            span = values[-1] - values[0]
            u[below] = lo * np.exp(-(values[0] - col[below]) / span)
        if above.any():
            span = values[-1] - values[0]
            u[above] = 1.0 - (1.0 - hi) * np.exp(-(col[above] - values[-1]) / span)
        return ndtri(np.clip(u, 1e-12, 1.0 - 1e-12))

    return apply


def fit_transform(kind: str, train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping an ``(n, d)`` array column by column, fitted on ``train`` rows.

    A column constant on the training rows maps to 0 under ``copula`` (it tells the critic
    nothing) and is refused under ``zscore``.

    Raises:
        DimError: an unknown kind, or (``zscore``) a column constant on the training rows.
    """
    if kind not in TRANSFORMS:
        raise DimError(f"transform must be one of {', '.join(TRANSFORMS)}, got '{kind}'")
    if kind == "none":
        return lambda a: a
    if kind == "zscore":
        if (np.ptp(train, axis=0) == 0).any():
            raise DimError("a column is constant on the training split; drop it")
        mu, sd = train.mean(0), train.std(0)
        return lambda a: (a - mu) / sd
    columns = [_copula_column(train[:, j].astype(np.float64)) for j in range(train.shape[1])]

    def apply(a: np.ndarray) -> np.ndarray:
        out = np.empty(a.shape, dtype=np.float64)
        for j, f in enumerate(columns):
            out[:, j] = f(a[:, j].astype(np.float64))
        # Re-standardise: with ties (discrete columns) the normal scores are not unit-variance.
        return out

    scale = apply(train).std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return lambda a: (apply(a) / scale).astype(a.dtype)
