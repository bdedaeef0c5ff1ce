"""How closely the representation matches DIM's prior: ``dim-eval eval=prior``.

DIM's prior term pushes sigmoid(Y) toward U(0, 1)^d.  The discriminator's own accuracy says little
about that (a collapsed discriminator scores 0.5 against anything), so this protocol measures the
match directly, with two statistics that need no trained D:

- **KS**: the Kolmogorov-Smirnov distance of each coordinate of sigmoid(Y) to U(0, 1) (scipy's
  one-sample test), averaged over coordinates: 0 = matching marginals, 1 = disjoint.
- **C2ST**: a classifier two-sample test.  A fresh gradient-boosting classifier (scikit-learn)
  learns to tell sigmoid(Y) from as many prior samples; its accuracy on held-out rows is 0.5 when
  the two are indistinguishable and 1.0 when they are trivially told apart.  It sees the joint
  distribution, so it also catches dependent coordinates with uniform marginals.

The same two numbers are computed during training by :class:`dim.monitor.visuals.PriorMonitor`.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import numpy as np
from scipy import special, stats

from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat


def ks_to_uniform(u: np.ndarray) -> np.ndarray:
    """Per-coordinate KS distance of the columns of ``u`` (samples x d) to U(0, 1)."""
    return np.array([stats.kstest(u[:, j], "uniform").statistic for j in range(u.shape[1])])


def c2st_accuracy(u: np.ndarray, seed: int = 0, max_iter: int = 100) -> float:
    """Held-out accuracy of a classifier telling the rows of ``u`` from U(0, 1)^d samples.

    Half of each sample trains the classifier, the other half scores it (balanced classes).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    prior = rng.random(u.shape)
    x = np.concatenate([u, prior]).astype(np.float32)
    labels = np.r_[np.zeros(len(u)), np.ones(len(prior))]
    x_tr, x_te, l_tr, l_te = train_test_split(
        x, labels, test_size=0.5, stratify=labels, random_state=seed
    )
    clf = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
    return float(clf.fit(x_tr, l_tr).score(x_te, l_te))


def prior_match(y: np.ndarray, seeds: int = 1, seed: int = 0, max_iter: int = 100) -> dict:
    """``{"ks": mean KS distance, "ks_max": worst coordinate, "c2st": [accuracy per seed]}``
    of sigmoid(y) against the uniform prior."""
    u = special.expit(np.asarray(y, dtype=np.float64))  # no overflow warning for large |y|
    ks = ks_to_uniform(u)
    accs = [c2st_accuracy(u, seed + s, max_iter) for s in range(int(seeds))]
    return {"ks": float(ks.mean()), "ks_max": float(ks.max()), "c2st": accs}


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """KS distance and C2ST accuracy of sigmoid(Y) on the training split against U(0, 1)^d.

    Args:
        ctx: the evaluation context (the training split's Y; ``eval.max_train`` caps it).
        cfg: the protocol's options (``configs/eval/prior.yaml``).

    Returns:
        ``ks/y`` (mean per-coordinate KS distance; the worst coordinate is in the settings) and
        ``c2st/y`` (held-out accuracy, mean ± std over seeds; 0.5 = matched).
    """
    start = perf_counter()
    y = ctx.features("train").y.numpy()
    m = prior_match(y, int(cfg["seeds"]), ctx.seed, int(cfg["max_iter"]))
    values = {"ks/y": Stat(m["ks"], None, [m["ks"]]), "c2st/y": Stat.of(m["c2st"])}
    settings = {**cfg, "ks_max": m["ks_max"], "n": len(y)}
    return ProtocolResult(
        "KS distance", values, settings, perf_counter() - start, units={"c2st": "accuracy"}
    )
