"""The prior-matching measures of ``dim-eval eval=prior`` and the training monitor."""

import numpy as np
import pytest

from dim.eval.prior import c2st_accuracy, ks_to_uniform, prior_match


def _logit(u: np.ndarray) -> np.ndarray:
    return np.log(u) - np.log1p(-u)


def test_matched_representation_scores_as_the_prior():
    rng = np.random.default_rng(123)  # not the classifier's prior seeds (0, 1)
    m = prior_match(_logit(rng.random((1000, 8))), seeds=2)  # sigmoid(Y) is exactly uniform
    assert m["ks"] < 0.05 and m["ks_max"] < 0.08
    assert all(0.4 < acc < 0.6 for acc in m["c2st"])  # chance: indistinguishable


def test_concentrated_representation_is_far_from_the_prior():
    rng = np.random.default_rng(0)
    m = prior_match(rng.normal(0.0, 0.1, (1000, 8)))  # sigmoid(Y) ~ 0.5 +- 0.025
    assert m["ks"] > 0.4 and m["c2st"][0] > 0.95


def test_classifier_sees_dependence_that_the_marginals_hide():
    rng = np.random.default_rng(123)
    u = rng.random((1000, 1))
    copies = np.repeat(u, 4, axis=1)  # every coordinate uniform, all four identical
    assert ks_to_uniform(copies).max() < 0.05
    assert c2st_accuracy(copies) > 0.8


def test_ks_distance_is_the_largest_cdf_gap():
    u = np.array([[0.1], [0.2], [0.3], [0.4]])  # empirical CDF reaches 1 at 0.4: gap 0.6
    assert ks_to_uniform(u)[0] == pytest.approx(0.6)
