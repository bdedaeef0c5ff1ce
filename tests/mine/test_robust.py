"""The robust defaults of dim.estimate_mi and its honesty about failure (issue 14).

Real-data failure modes with known MI (dim.mine.tasks, fixed seeds): heavy tails, sharp
dependence; no negative answer on independent heavy-tailed data; the failure signatures warn on
constructed failures and stay quiet on a clean Gaussian.
"""

import json
import math

import numpy as np
import pytest

import dim
from dim.mine.diagnostics import diagnose
from dim.mine.result import Z95, CurvePoint, MIEstimate
from dim.mine.tasks import TASKS, make_task, student_t_correction
from dim.mine.training import TrainConfig, TrainOutcome
from dim.mine.transforms import fit_transform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def target(truth: float) -> float:
    """The issue's tolerance for tasks of at most 5 dims per variable."""
    return max(0.05, 0.10 * truth)


def test_closed_form_mi_of_the_issue_tasks():
    assert student_t_correction(1, 1, 1) == pytest.approx(0.224, abs=5e-4)
    assert make_task("student-5x5-dof2", 10).true_mi == pytest.approx(0.448, abs=5e-4)
    # 5x5 with 1 dof: the same closed form (checked against a 400 000-sample Monte Carlo average
    # of the log density ratio, 0.802 ± 0.002); the issue's six Student-t families are all there.
    assert make_task("student-5x5-dof1", 10).true_mi == pytest.approx(0.801, abs=5e-4)
    assert {f"student-{d}x{d}-dof{v}" for d in (1, 2, 5) for v in (1, 2)} <= set(TASKS)
    assert make_task("additive-noise-0.1", 10).true_mi == pytest.approx(1.709, abs=5e-4)
    assert make_task("spiral@mn-sparse-5x5", 10).true_mi == pytest.approx(1.022, abs=5e-4)
    assert len(TASKS) >= 25


def test_copula_transform_is_fitted_on_train_rows_and_monotone():
    rng = np.random.default_rng(0)
    train = rng.standard_cauchy((500, 2))
    f = fit_transform("copula", train)
    z = f(train)
    assert abs(z.mean()) < 0.05 and z.std(0) == pytest.approx(1.0, abs=1e-6)
    new = np.sort(rng.standard_cauchy((300, 2)) * 100, axis=0)  # far outside the train range
    out = f(new)
    assert np.isfinite(out).all() and (np.diff(out, axis=0) >= 0).all()


@pytest.mark.parametrize("task", ["student-1x1-dof1", "additive-noise-0.1"])
def test_heavy_tails_and_sharp_dependence_within_target(task):
    # 3000 pairs and 800 steps (not 10 000 and 1500) keep the test at a few seconds; the
    # 10 000-sample numbers are in docs/mine.md.  Fixed seed; measured: 0.229 for 0.224 and
    # 1.559 for 1.709 (target ± 0.171).
    p = make_task(task, 3000, seed=0)
    res = dim.estimate_mi(p.x, p.y, seed=0, max_steps=800)
    assert abs(res.mi_nats - p.true_mi) <= target(p.true_mi), (res.mi_nats, p.true_mi)
    assert res.mi_nats > 0 and res.ci_nats[0] <= res.mi_nats <= res.ci_nats[1]


def test_independent_heavy_tails_never_give_a_negative_answer():
    rng = np.random.default_rng(3)
    x, y = rng.standard_cauchy((1500, 2)), rng.standard_t(1, (1500, 1)) ** 3
    res = dim.estimate_mi(x, y, seed=0, max_steps=300)
    assert res.mi_nats >= 0 and res.ci_nats[0] == pytest.approx(0.0, abs=0.02)
    assert res.raw_mi_nats + Z95 * res.stderr_nats >= 0  # not negative beyond its interval
    assert str(res).startswith("I(X;Y) ≈ 0.0")


@pytest.mark.parametrize("seed", [1, 2])
def test_independent_heavy_tails_in_20d_are_not_a_failed_estimate(seed):
    # The plug-in Gaussian critic of 400 cross-covariances fitted on 2100 pairs overfits by about
    # 0.1 nats: its held-out value was below zero beyond its interval ("a failed estimate") on
    # independent data until the estimator could pick a shrunk Gaussian term on validation.
    rng = np.random.default_rng(seed)
    x, y = rng.standard_cauchy((3000, 20)), rng.standard_t(1, (3000, 20))
    res = dim.estimate_mi(x, y, seed=0)
    assert res.settings["gauss_shrink"] < 1.0
    assert res.raw_mi_nats + Z95 * res.stderr_nats >= 0 and res.warnings == [], res.warnings
    assert res.ci_nats[1] < 0.01 and "a failed estimate" not in str(res)


def test_legacy_defaults_stay_reachable():
    p = make_task("normal-1x1", 1000, seed=0)
    res = dim.estimate_mi(p.x, p.y, transform="zscore", critic="concat", max_steps=100)
    assert res.settings["transform"] == "zscore" and res.settings["critic"] == "concat"
    assert res.settings["layers"] == 1 and res.settings["hidden"] == 256
    old = dim.estimate_mi(p.x, p.y, standardize=False, critic="concat", max_steps=100)
    assert old.settings["transform"] == "none"


def test_a_clean_gaussian_raises_no_warning():
    p = make_task("mn-sparse-2x2", 2000, seed=1)
    res = dim.estimate_mi(p.x, p.y, seed=1)
    assert res.warnings == [], res.warnings
    assert abs(res.mi_nats - p.true_mi) < 0.1
    assert res.settings["gauss_shrink"] == 1.0  # the fitted Gaussian critic is kept whole


def test_too_few_samples_for_the_dimension_warns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 20))
    y = x + rng.normal(size=(120, 20))
    res = dim.estimate_mi(x, y, max_steps=50, eval_every=25)
    assert any("not trustworthy at this sample size" in w for w in res.warnings), res.warnings
    assert "warnings" in res.to_dict() and res.to_dict()["ci95_nats"] == list(res.ci_nats)


def test_infonce_at_its_ceiling_warns():
    p = dim.mine.pairs.gaussian_pairs(1000, 2, mi=6.0, seed=0)
    res = dim.estimate_mi(p.x, p.y, "infonce", batch_size=16, max_steps=100)
    assert res.mi_nats <= math.log(16)
    assert any("ceiling" in w for w in res.warnings), res.warnings


def _outcome(points, best, steps, stopped=True, diverged=False):
    curve = [CurvePoint(s, t, h) for s, t, h in points]
    return TrainOutcome(curve, best, 0.0, steps, stopped, diverged)


def test_failure_signatures():
    cfg = TrainConfig()
    quiet = diagnose("mine", 1.0, 0.02, 7000, 2, 2, cfg, _outcome([(100, 1.02, 1.0)], 100, 300))
    assert quiet == []
    overfit = _outcome([(100, 0.9, 0.05)], 100, 600)
    assert "overfits" in diagnose("nwj", 0.02, 0.01, 7000, 5, 5, cfg, overfit)[0]
    rising = _outcome([(100, 0.5, 0.4), (200, 0.7, 0.6)], 200, 200, stopped=False)
    assert "not converged" in diagnose("mine", 0.6, 0.02, 7000, 2, 2, cfg, rising)[0]
    blown = _outcome([(100, 0.5, 0.4)], 100, 150, diverged=True)
    assert "blew up" in diagnose("mine", 0.4, 0.02, 7000, 2, 2, cfg, blown)[0]
    huge = diagnose("mine", 0.4, 0.02, 7000, 2, 2, cfg, _outcome([], 0, 100), max_score=80.0)
    assert "blew up" in huge[0]
    neg = diagnose("mine", -0.5, 0.05, 7000, 2, 2, cfg, _outcome([], 0, 100))
    assert any("below zero beyond its interval" in w for w in neg)
    assert "biased low" in diagnose("ksg", 0.5, 0.01, 10000, 20, 20)[0]
    # Above log(n_eval) no held-out sample of that size can certify the value (McAllester &
    # Stratos 2020); measured: 20.4 nats for a true 16.6 (20-d Gaussians, rho 0.9), no warning.
    done = _outcome([(100, 9.0, 9.0)], 100, 600)
    high = diagnose("mine", 9.0, 0.2, 7000, 20, 20, cfg, done, n_eval=2000)
    assert high and "more than this sample can certify" in high[0]
    fine = _outcome([(100, 4.0, 4.0)], 100, 600)
    assert diagnose("mine", 4.0, 0.05, 7000, 2, 2, cfg, fine, n_eval=2000) == []


def test_negative_estimate_is_reported_as_zero_with_its_raw_value():
    consistent = MIEstimate(-0.03, 0.02, "mine", 700, 100, 200)
    assert consistent.mi_nats == 0.0 and consistent.raw_mi_nats == -0.03
    assert str(consistent) == (
        "I(X;Y) ≈ 0.000 nats (0.000 bits), 95% CI [0.000, 0.009] nats; "
        "raw estimate -0.030: consistent with independence"
    )
    failed = MIEstimate(-3.15, 0.1, "mine", 700, 100, 200)
    assert str(failed).endswith("raw estimate -3.150: a failed estimate")
    assert json.loads(json.dumps(failed.to_dict()))["raw_mi_nats"] == -3.15


def test_an_mi_beyond_what_the_sample_can_certify_warns():
    # 20-d Gaussians at rho 0.9: 16.6 nats, far above log(600 held-out pairs) = 6.4.
    p = dim.mine.pairs.gaussian_pairs(3000, 20, rho=0.9, seed=0)
    res = dim.estimate_mi(p.x, p.y, seed=0, max_steps=200)
    assert any("more than this sample can certify" in w for w in res.warnings), res.warnings
