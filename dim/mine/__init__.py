"""MINE and friends: I(X;Y) between two paired arrays, estimated on held-out pairs.

- :mod:`dim.mine.pairs` — loading and validating array files; synthetic tasks with analytic MI.
- :mod:`dim.mine.critics` — the critics T(x, y) (``concat``, ``separable``).
- :mod:`dim.mine.training` — the training loop of a critic and the held-out block estimate.
- :mod:`dim.mine.estimator` — :func:`estimate_mi` / :func:`estimate_staircase`, the protocol.
- :mod:`dim.mine.ksg` — the non-neural Kraskov (KSG) estimator.
- :mod:`dim.mine.run` — what ``dim-mine`` does with its config (the CLI only parses and prints).

See docs/mine.md for the user guide.
"""

from dim.mine.estimator import ESTIMATORS, estimate_mi, estimate_staircase
from dim.mine.result import CurvePoint, MIEstimate

__all__ = ["ESTIMATORS", "CurvePoint", "MIEstimate", "estimate_mi", "estimate_staircase"]
