"""dim.mine.pairs: synthetic tasks with analytic MI, loaders and input validation."""

import math

import numpy as np
import pytest

from dim.errors import DimError
from dim.mine.pairs import (
    Staircase,
    gaussian_mi,
    gaussian_pairs,
    load_csv,
    load_npy,
    load_npz,
    rho_for_mi,
    validate_pairs,
)


@pytest.mark.parametrize("dim,mi", [(1, 0.5), (2, 1.0), (20, 4.0), (20, 10.0)])
def test_rho_for_mi_inverts_the_gaussian_formula(dim, mi):
    rho = rho_for_mi(mi, dim)
    assert gaussian_mi(rho, dim) == pytest.approx(mi, rel=1e-12)
    # I = -(d/2) log(1 - rho^2) for d coordinate pairs of correlation rho
    assert gaussian_mi(rho, dim) == pytest.approx(-dim / 2 * math.log(1 - rho**2))


def test_gaussian_sample_has_the_requested_correlation():
    p = gaussian_pairs(20_000, 3, mi=1.5, seed=1)
    assert p.true_mi == pytest.approx(1.5)
    assert p.x.shape == p.y.shape == (20_000, 3) and p.x.dtype == np.float32
    rho = rho_for_mi(1.5, 3)
    for i in range(3):
        assert np.corrcoef(p.x[:, i], p.y[:, i])[0, 1] == pytest.approx(rho, abs=0.01)
    assert abs(np.corrcoef(p.x[:, 0], p.y[:, 1])[0, 1]) < 0.03  # coordinates are independent


def test_gaussian_by_rho_and_cubic_variant():
    p = gaussian_pairs(500, 2, rho=0.5, seed=3)
    c = gaussian_pairs(500, 2, rho=0.5, seed=3, cubic=True)
    assert p.true_mi == c.true_mi == pytest.approx(-math.log(0.75))
    np.testing.assert_allclose(c.y, p.y**3, rtol=1e-5)  # same sample, invertible map of y
    with pytest.raises(DimError, match="exactly one"):
        gaussian_pairs(500, 2, mi=1.0, rho=0.5)
    with pytest.raises(DimError, match="between -1 and 1"):
        gaussian_pairs(500, 2, rho=1.0)


def test_staircase_steps_through_its_levels():
    task = Staircase(dim=4, levels=(2, 4, 6), steps_per_level=10)
    assert task.total_steps == 30
    assert [task.true_mi(s) for s in (1, 10, 11, 20, 21, 30, 99)] == [2, 2, 4, 4, 6, 6, 6]
    x, y = task.sample(25, 5000, np.random.default_rng(0))
    rho = np.corrcoef(x[:, 0], y[:, 0])[0, 1]
    assert rho == pytest.approx(rho_for_mi(6, 4), abs=0.01)


def test_loaders_read_npz_npy_and_csv(tmp_path):
    x = np.arange(12.0).reshape(6, 2)
    y = np.arange(6.0)
    np.savez(tmp_path / "p.npz", x=x, y=y, z=y)
    gx, gy = load_npz(tmp_path / "p.npz")
    np.testing.assert_array_equal(gx, x)
    assert gy.shape == (6, 1)  # 1-d arrays become one feature
    gx, gy = load_npz(tmp_path / "p.npz", x_key="z", y_key="x")
    assert gx.shape == (6, 1) and gy.shape == (6, 2)
    np.save(tmp_path / "x.npy", np.zeros((6, 2, 3)))  # trailing axes are flattened
    np.save(tmp_path / "y.npy", y)
    gx, gy = load_npy(tmp_path / "x.npy", tmp_path / "y.npy")
    assert gx.shape == (6, 6) and gy.shape == (6, 1)
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n4,,6\n7,8,9\n")
    gx, gy = load_csv(tmp_path / "t.csv", ["a", "c"], [1])
    np.testing.assert_array_equal(gx, [[1, 3], [4, 6], [7, 9]])
    assert np.isnan(gy[1, 0])  # empty cell -> NaN, handled by validation


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda p: load_npz(p / "nope.npz"), "data file not found: .*nope.npz"),
        (lambda p: load_npz(p / "p.npz", y_key="w"), "p.npz has no array 'w' .*it holds: x, y"),
        (lambda p: load_csv(p / "t.csv", ["a"], ["q"]), "t.csv has no column 'q'"),
        (lambda p: load_csv(p / "t.csv", ["a"], ["s"]), "column 's' of t.csv holds no numbers"),
    ],
)
def test_loader_errors_are_one_actionable_line(tmp_path, call, message):
    np.savez(tmp_path / "p.npz", x=np.ones(3), y=np.ones(3))
    (tmp_path / "t.csv").write_text("a,s\n1,foo\n2,bar\n")
    with pytest.raises(DimError, match=message) as err:
        call(tmp_path)
    assert "\n" not in str(err.value)


def test_validation_rejects_what_would_make_an_estimate_meaningless():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(200, 3))
    with pytest.raises(DimError, match="x has 200 samples but y has 199"):
        validate_pairs(x, y[:199])
    with pytest.raises(DimError, match="only 99 samples"):
        validate_pairs(x[:99], y[:99])
    const = y.copy()
    const[:, 2] = 1.5
    with pytest.raises(DimError, match="column 2 of y is constant"):
        validate_pairs(x, const)
    bad = x.copy()
    bad[[7, 9], 0] = [np.nan, np.inf]
    with pytest.raises(DimError, match="2 rows hold NaN or inf .first: row 7.*drop_nonfinite"):
        validate_pairs(bad, y)
    gx, gy, dropped = validate_pairs(bad, y, drop_nonfinite=True)
    assert dropped == 2 and len(gx) == len(gy) == 198 and np.isfinite(gx).all()
    with pytest.raises(DimError, match="only 98 samples after dropping 2"):
        validate_pairs(bad[:100], y[:100], drop_nonfinite=True)
