"""Benchmark tasks with closed-form MI, after the task families of Czyż et al. (NeurIPS 2023).

Every task is a distribution with known I(X;Y) (multivariate normal, multivariate Student-t,
additive uniform noise), possibly pushed through invertible maps of X and of Y separately,
which leave the MI unchanged (half-cube, asinh, normal CDF, "wiggly" monotone sums of sines,
spiral rotations, a Swiss-roll embedding, a bimodal marginal).  Built with numpy/scipy only; the
parameters are this project's choices in the spirit of the original benchmark, written out below.

``TASKS`` maps a name to a builder ``(n, seed) -> Pairs``; ``scripts/benchmark_mi_tasks.py`` runs
the estimators on them and docs/mine.md lists the results.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import digamma, gammaln, ndtr

from dim.mine.pairs import Pairs

# ---------------------------------------------------------------- closed-form MI


def gaussian_mi_of(cov: np.ndarray, x_dim: int) -> float:
    """I(X;Y) (nats) of a joint normal with covariance ``cov``, X = the first ``x_dim`` coords."""
    ld = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    return 0.5 * float(ld(cov[:x_dim, :x_dim]) + ld(cov[x_dim:, x_dim:]) - ld(cov))


def student_t_correction(dof: float, x_dim: int, y_dim: int) -> float:
    """The MI a multivariate Student-t adds to the normal with the same dispersion (nats)."""

    def f(v: float) -> float:
        return float(gammaln(v / 2) - v / 2 * digamma(v / 2))

    return f(dof) + f(dof + x_dim + y_dim) - f(dof + x_dim) - f(dof + y_dim)


def additive_noise_mi(eps: float) -> float:
    """I(X; X + N), X ~ U(0, 1), N ~ U(−eps, eps) (nats)."""
    return eps - math.log(2 * eps) if eps <= 0.5 else 1 / (4 * eps)


# ---------------------------------------------------------------- base distributions


def dense_cov(x_dim: int, y_dim: int, off_diag: float = 0.5) -> np.ndarray:
    """Unit variances, every other pair of coordinates correlated ``off_diag``."""
    d = x_dim + y_dim
    return np.full((d, d), off_diag) + (1 - off_diag) * np.eye(d)


def sparse_cov(x_dim: int, y_dim: int, pairs: int = 2, rho: float = 0.8) -> np.ndarray:
    """Independent coordinates except ``pairs`` pairs (x_i, y_i) correlated ``rho``."""
    cov = np.eye(x_dim + y_dim)
    for i in range(min(pairs, x_dim, y_dim)):
        cov[i, x_dim + i] = cov[x_dim + i, i] = rho
    return cov


def diag_cov(dim: int, rho: float) -> np.ndarray:
    """``dim`` pairs (x_i, y_i), each correlated ``rho`` (the project's correlated Gaussians)."""
    return sparse_cov(dim, dim, dim, rho)


def normal(n: int, cov: np.ndarray, x_dim: int, rng: np.random.Generator) -> Pairs:
    z = rng.multivariate_normal(np.zeros(len(cov)), cov, size=n, method="cholesky")
    return Pairs(z[:, :x_dim], z[:, x_dim:], gaussian_mi_of(cov, x_dim), "normal")


def student(n: int, cov: np.ndarray, x_dim: int, dof: float, rng: np.random.Generator) -> Pairs:
    """Multivariate Student-t with dispersion ``cov``: a normal over sqrt(chi2_dof / dof)."""
    z = rng.multivariate_normal(np.zeros(len(cov)), cov, size=n, method="cholesky")
    z = z / np.sqrt(rng.chisquare(dof, size=(n, 1)) / dof)
    mi = gaussian_mi_of(cov, x_dim) + student_t_correction(dof, x_dim, len(cov) - x_dim)
    return Pairs(z[:, :x_dim], z[:, x_dim:], mi, "student")


def additive_noise(n: int, eps: float, rng: np.random.Generator) -> Pairs:
    x = rng.uniform(0, 1, size=(n, 1))
    return Pairs(x, x + rng.uniform(-eps, eps, size=(n, 1)), additive_noise_mi(eps), "noise")


# ---------------------------------------------------------------- invertible maps


def half_cube(a: np.ndarray) -> np.ndarray:
    return a * np.sqrt(np.abs(a))


def wiggly(a: np.ndarray) -> np.ndarray:
    """Monotone (derivative ≥ 0.11): t + 0.4 sin t + 0.2 sin(1.7 t + 1) + 0.05 sin(3 t + 0.2)."""
    return a + 0.4 * np.sin(a) + 0.2 * np.sin(1.7 * a + 1) + 0.05 * np.sin(3 * a + 0.2)


def spiral(a: np.ndarray, speed: float = 0.5) -> np.ndarray:
    """Rotate the first two coordinates by ``speed · |a|²`` (norm-preserving, so invertible)."""
    theta = speed * (a**2).sum(1)
    c, s = np.cos(theta), np.sin(theta)
    out = a.copy()
    out[:, 0] = c * a[:, 0] - s * a[:, 1]
    out[:, 1] = s * a[:, 0] + c * a[:, 1]
    return out


def swiss_roll(a: np.ndarray) -> np.ndarray:
    """Embed a 1-d standard normal as a 2-d Swiss roll (injective, so the MI is unchanged)."""
    t = 1.5 * np.pi * (1 + 2 * ndtr(a[:, 0]))
    return np.stack([t * np.cos(t), t * np.sin(t)], 1) / 21.0


def bimodal(a: np.ndarray) -> np.ndarray:
    """Map standard normal coordinates to an equal mixture of N(−1.5, 0.5²) and N(1.5, 0.5²)
    through the quantile function of the mixture (monotone, tabulated)."""
    grid = np.linspace(-6, 6, 4001)
    cdf = 0.5 * (ndtr((grid + 1.5) / 0.5) + ndtr((grid - 1.5) / 0.5))
    return np.interp(ndtr(a), cdf, grid)


def on_both(f: Callable[[np.ndarray], np.ndarray], p: Pairs) -> Pairs:
    return Pairs(f(p.x), f(p.y), p.true_mi, p.name)


# ---------------------------------------------------------------- the task list


TaskBuilder = Callable[[int, np.random.Generator], Pairs]
BN = sparse_cov(1, 1, 1, 0.75)  # binormal, ρ = 0.75

TASKS: dict[str, TaskBuilder] = {
    "normal-1x1": lambda n, r: normal(n, BN, 1, r),
    "mn-dense-2x2": lambda n, r: normal(n, dense_cov(2, 2), 2, r),
    "mn-dense-3x3": lambda n, r: normal(n, dense_cov(3, 3), 3, r),
    "mn-dense-5x5": lambda n, r: normal(n, dense_cov(5, 5), 5, r),
    "mn-dense-25x25": lambda n, r: normal(n, dense_cov(25, 25), 25, r),
    "mn-sparse-2x2": lambda n, r: normal(n, sparse_cov(2, 2), 2, r),
    "mn-sparse-3x3": lambda n, r: normal(n, sparse_cov(3, 3), 3, r),
    "mn-sparse-5x5": lambda n, r: normal(n, sparse_cov(5, 5), 5, r),
    "mn-sparse-25x25": lambda n, r: normal(n, sparse_cov(25, 25), 25, r),
    "student-1x1-dof1": lambda n, r: student(n, np.eye(2), 1, 1, r),
    "student-1x1-dof2": lambda n, r: student(n, np.eye(2), 1, 2, r),
    "student-2x2-dof1": lambda n, r: student(n, np.eye(4), 2, 1, r),
    "student-2x2-dof2": lambda n, r: student(n, np.eye(4), 2, 2, r),
    "student-5x5-dof1": lambda n, r: student(n, np.eye(10), 5, 1, r),
    "student-5x5-dof2": lambda n, r: student(n, np.eye(10), 5, 2, r),
    "half-cube@mn-sparse-3x3": lambda n, r: on_both(half_cube, normal(n, sparse_cov(3, 3), 3, r)),
    "half-cube@mn-sparse-25x25": lambda n, r: on_both(
        half_cube, normal(n, sparse_cov(25, 25), 25, r)
    ),
    "asinh@student-1x1-dof1": lambda n, r: on_both(np.arcsinh, student(n, np.eye(2), 1, 1, r)),
    "normal-cdf@normal-1x1": lambda n, r: on_both(ndtr, normal(n, BN, 1, r)),
    "normal-cdf@mn-sparse-5x5": lambda n, r: on_both(ndtr, normal(n, sparse_cov(5, 5), 5, r)),
    "normal-cdf@mn-sparse-25x25": lambda n, r: on_both(ndtr, normal(n, sparse_cov(25, 25), 25, r)),
    "wiggly@normal-1x1": lambda n, r: on_both(wiggly, normal(n, BN, 1, r)),
    "wiggly@mn-sparse-3x3": lambda n, r: on_both(wiggly, normal(n, sparse_cov(3, 3), 3, r)),
    "spiral@mn-sparse-3x3": lambda n, r: on_both(spiral, normal(n, sparse_cov(3, 3), 3, r)),
    "spiral@mn-sparse-5x5": lambda n, r: on_both(spiral, normal(n, sparse_cov(5, 5), 5, r)),
    "swiss-roll-2x1": lambda n, r: _swiss(normal(n, BN, 1, r)),
    "bimodal-1x1": lambda n, r: on_both(bimodal, normal(n, BN, 1, r)),
    "additive-noise-0.1": lambda n, r: additive_noise(n, 0.1, r),
    "additive-noise-0.75": lambda n, r: additive_noise(n, 0.75, r),
    "mn-high-2x2-3nats": lambda n, r: normal(n, diag_cov(2, math.sqrt(-math.expm1(-3.0))), 2, r),
    "mn-high-5x5-4nats": lambda n, r: normal(
        n, diag_cov(5, math.sqrt(-math.expm1(-2 * 4.0 / 5))), 5, r
    ),
}


def _swiss(p: Pairs) -> Pairs:
    return Pairs(swiss_roll(p.x), p.y, p.true_mi, p.name)


def make_task(name: str, n: int = 10_000, seed: int = 0) -> Pairs:
    """``n`` pairs of the named task (float64), with its true MI (nats) and its name."""
    p = TASKS[name](n, np.random.default_rng(seed))
    return Pairs(np.asarray(p.x, np.float64), np.asarray(p.y, np.float64), p.true_mi, name)


def task_dims(name: str) -> tuple[int, int]:
    """(x_dim, y_dim) of a task (from a tiny sample)."""
    p = make_task(name, 8, 0)
    return p.x.shape[1], p.y.shape[1]
