"""dim.mine.estimate_mi: held-out estimates near the truth, caps, determinism, splits."""

import math

import numpy as np
import pytest

import dim
from dim.errors import DimError
from dim.mine import estimate_staircase
from dim.mine.pairs import Staircase, gaussian_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"hidden": 64, "max_steps": 400}


def test_short_mine_estimate_lands_near_the_analytic_mi():
    # Measured over seeds 0-5 with these settings: errors -0.04 ... +0.07 nats.
    p = gaussian_pairs(2000, 2, mi=1.0, seed=0)
    res = dim.estimate_mi(p.x, p.y, "mine", seed=0, true_mi=p.true_mi, **FAST)
    assert res.mi_nats == pytest.approx(1.0, abs=0.15)
    assert res.mi_bits == pytest.approx(res.mi_nats / math.log(2))
    assert 0 < res.stderr_nats < 0.2
    lo, hi = res.ci_nats
    assert lo < res.mi_nats < hi and hi - lo == pytest.approx(2 * 1.959964 * res.stderr_nats)
    assert str(res) == (
        f"I(X;Y) ≈ {res.mi_nats:.3f} nats ({res.mi_bits:.3f} bits), "
        f"95% CI [{lo:.3f}, {hi:.3f}] nats"
    )
    # The training curve: one point per validation, with the truth alongside.
    assert [p.step for p in res.curve] == [100, 200, 300, 400][: len(res.curve)]
    assert all(p.true_mi == 1.0 and p.heldout_mi is not None for p in res.curve)


def test_estimate_is_computed_on_pairs_the_critic_never_saw():
    p = gaussian_pairs(1000, 2, mi=1.0, seed=0)
    res = dim.estimate_mi(p.x, p.y, "dv", seed=0, hidden=64, max_steps=100)
    assert (res.n_train, res.n_val, res.n_eval) == (700, 100, 200)
    # Independent variables and a critic free to overfit the training pairs: the training
    # estimate climbs above zero, the held-out estimate must not follow it.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(600, 5)), rng.normal(size=(600, 5))
    res = dim.estimate_mi(x, y, "nwj", hidden=256, layers=1, lr=1e-2, max_steps=300, patience=100)
    assert max(p.train_mi for p in res.curve) > 0.1
    assert res.mi_nats < 0.05


def test_infonce_never_exceeds_log_batch():
    # True MI 8 nats: far above log(32) = 3.47, so InfoNCE saturates at its cap.
    p = gaussian_pairs(2000, 2, mi=8.0, seed=0)
    res = dim.estimate_mi(p.x, p.y, "infonce", batch_size=32, hidden=64, max_steps=200)
    assert res.settings["eval_block"] == 32
    assert 1.5 < res.mi_nats <= math.log(32)
    assert all(pt.heldout_mi <= math.log(32) for pt in res.curve)


@pytest.mark.parametrize("bound", ["mine", "mine_f", "nwj", "infonce", "dv", "jsd", "smile"])
def test_every_bound_finds_dependence(bound):
    p = gaussian_pairs(800, 1, mi=1.0, seed=1)
    res = dim.estimate_mi(p.x, p.y, bound, hidden=32, max_steps=150, seed=1)
    assert 0.5 < res.mi_nats < 1.3, res.mi_nats
    assert res.bound == bound and res.steps > 0


def test_separable_critic_and_shuffled_negatives():
    p = gaussian_pairs(1000, 2, mi=1.0, seed=2)
    sep = dim.estimate_mi(p.x, p.y, critic="separable", hidden=32, embed=8, max_steps=200)
    shuf = dim.estimate_mi(p.x, p.y, negatives="shuffle", n_shuffles=4, hidden=32, max_steps=200)
    assert 0.6 < sep.mi_nats < 1.3 and 0.6 < shuf.mi_nats < 1.3


def test_same_seed_same_estimate_other_seed_other_estimate():
    p = gaussian_pairs(600, 2, mi=1.0, seed=0)
    a = dim.estimate_mi(p.x, p.y, seed=5, hidden=32, max_steps=100)
    b = dim.estimate_mi(p.x, p.y, seed=5, hidden=32, max_steps=100)
    c = dim.estimate_mi(p.x, p.y, seed=6, hidden=32, max_steps=100)
    assert a.mi_nats == b.mi_nats and [p.heldout_mi for p in a.curve] == [
        p.heldout_mi for p in b.curve
    ]
    assert a.mi_nats != c.mi_nats


def test_standardisation_makes_the_estimate_scale_free():
    p = gaussian_pairs(600, 2, mi=1.0, seed=0)
    a = dim.estimate_mi(p.x, p.y, hidden=32, max_steps=100)
    b = dim.estimate_mi(p.x * 1e4 + 3.0, p.y * 1e-3, hidden=32, max_steps=100)
    assert a.mi_nats == pytest.approx(b.mi_nats, abs=0.02)


def test_ksg_through_estimate_mi_uses_all_pairs():
    p = gaussian_pairs(3000, 2, mi=1.0, seed=0)
    res = dim.estimate_mi(p.x, p.y, "ksg", k=4)
    assert (res.n_train, res.n_eval, res.curve) == (0, 3000, [])
    assert res.mi_nats == pytest.approx(1.0, abs=0.08)


def test_bad_arguments_are_user_errors():
    p = gaussian_pairs(300, 1, mi=1.0)
    with pytest.raises(DimError, match="unknown bound 'mien'"):
        dim.estimate_mi(p.x, p.y, "mien")
    with pytest.raises(DimError, match="unknown estimate_mi option.*max_step"):
        dim.estimate_mi(p.x, p.y, max_step=10)
    with pytest.raises(DimError, match="x has 300 samples but y has 299"):
        dim.estimate_mi(p.x, p.y[:-1])
    with pytest.raises(DimError, match="negatives must be 'all' or 'shuffle'"):
        dim.estimate_mi(p.x, p.y, negatives="some")
    with pytest.raises(DimError, match="batch_size must be >= 1"):
        dim.estimate_mi(p.x, p.y, batch_size=0)
    x = p.x.copy()
    x[3] = np.nan
    res = dim.estimate_mi(x, p.y, drop_nonfinite=True, hidden=16, max_steps=10)
    assert res.n_dropped == 1 and res.n_train + res.n_val + res.n_eval == 299


def test_staircase_tracks_the_true_mi_levels():
    task = Staircase(dim=2, levels=(0.5, 2.0), steps_per_level=200)
    res = estimate_staircase(task, "mine", hidden=64, eval_every=50, n_eval=1000, lr=5e-3)
    assert [p.true_mi for p in res.curve] == [0.5] * 4 + [2.0] * 4
    first, last = res.curve[3].heldout_mi, res.curve[-1].heldout_mi
    assert first == pytest.approx(0.5, abs=0.2) and last == pytest.approx(2.0, abs=0.35)
    assert res.true_mi == 2.0 and res.mi_nats == pytest.approx(2.0, abs=0.35)
