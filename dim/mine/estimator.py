"""``dim.mine.estimate_mi`` (also ``dim.estimate_mi``): I(X;Y) of paired arrays, on held-out pairs.

The data are split once (seeded) into three disjoint parts: *train* (the critic is fitted on
it), *val* (its estimate drives early stopping and picks the critic that is kept) and *eval*
(the reported estimate and its standard error; the critic never saw it and it took no part in
choosing the critic, so the number is not inflated by overfitting or by selection).  Inputs go
through a per-column transform fitted on the training part (:mod:`dim.mine.transforms`; by
default the Gaussian copula transform: MI is invariant under invertible maps of x and of y, so
this changes the optimisation, not the target).  The default critic starts as the Gaussian log
density ratio of the training pairs and learns a correction on top (``critic="gauss"``).

The result is checked for the classic failure signatures (:mod:`dim.mine.diagnostics`); each
one found is a line in ``MIEstimate.warnings``.  A held-out estimate below zero is reported as 0
with its raw value kept alongside.

``bound="ksg"`` is the non-neural Kraskov estimator; it has nothing to fit, so it uses all pairs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from dim.errors import DimError
from dim.mine.critics import CRITIC_DEFAULTS, Critic, GaussianConcatCritic, build_critic
from dim.mine.diagnostics import diagnose
from dim.mine.ksg import ksg_mi
from dim.mine.pairs import MIN_SAMPLES, Staircase, validate_pairs
from dim.mine.result import CurvePoint, MIEstimate
from dim.mine.training import (
    ArraySource,
    TrainConfig,
    heldout_estimate,
    make_bound,
    train_critic,
)
from dim.mine.transforms import TRANSFORMS, fit_transform
from dim.objective.bounds import bound_names

# The estimators, in one place: every bound of dim.objective.bounds (trained on, and reported by,
# the held-out protocol below; jsd reports the DV value of its critic) and the non-neural KSG.
NEURAL_BOUNDS: tuple[str, ...] = bound_names()
ESTIMATORS: tuple[str, ...] = (*NEURAL_BOUNDS, "ksg")
# Without early stopping nothing rescues a diverging critic: the staircase trains more gently
# (at the default 5e-3, MINE and NWJ diverged above ~8 nats in scripts/mine_staircase.py).
STAIRCASE_LR = 1e-3


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (None: leave torch's setting), restoring it afterwards.

    The per-step work of these small critics is a few milliseconds; with more threads, OpenMP
    synchronisation costs more than it saves (measured on a busy 2-core machine: 4x the CPU time
    and 4x the wall time with 2 threads instead of 1).
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda[:N]`` or ``auto`` as a torch device; refuses CUDA this machine lacks."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DimError(f"device must be cpu, cuda, cuda:N or auto; got '{device}'") from None
    if dev.type not in ("cpu", "cuda"):
        raise DimError(f"device must be cpu, cuda, cuda:N or auto; got '{device}'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DimError(f"device={device} but this machine has no CUDA GPU: use device=cpu")
    return dev


def split_indices(
    n: int, eval_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded disjoint (train, val, eval) index sets."""
    if not (0 < eval_fraction < 1 and 0 < val_fraction < 1 and eval_fraction + val_fraction < 1):
        raise DimError(
            "eval_fraction and val_fraction must be in (0, 1) with a sum below 1, got "
            f"{eval_fraction} and {val_fraction}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_eval, n_val = round(n * eval_fraction), round(n * val_fraction)
    if min(n_eval, n_val, n - n_eval - n_val) < 2:
        raise DimError(f"{n} samples are too few to split into train, val and eval parts")
    return perm[n_eval + n_val :], perm[n_eval : n_eval + n_val], perm[:n_eval]


def _train_config(kw: dict[str, Any], bound: str) -> TrainConfig:
    """Optimisation settings; InfoNCE is always scored on blocks of its training K (the batch
    size), so its held-out value is the bound it was trained on and stays below log(batch)."""
    cfg = TrainConfig(**kw)
    if bound == "infonce" or not cfg.eval_block:
        cfg.eval_block = cfg.batch_size
    return cfg


# Factors of the fitted Gaussian term tried on the validation pairs (the first that scores best is
# kept; 0 is the constant critic, DV value exactly 0).  The plug-in Gaussian of d_x·d_y
# cross-covariances fitted on n pairs overfits by about d_x·d_y / (2n) nats: on independent 20-d
# data (10 000 pairs) its held-out DV value was -0.038, below zero beyond its interval.
GAUSS_SHRINK = (1.0, 0.5, 0.25, 0.1, 0.0)


def _shrink_gaussian(
    net: GaussianConcatCritic, bound_fn: Callable, xv: torch.Tensor, yv: torch.Tensor, block: int
) -> float:
    """Scale the Gaussian term by the factor of ``GAUSS_SHRINK`` best on validation; returns it."""
    fitted = copy.deepcopy(net.state_dict())
    best, best_factor = -math.inf, 1.0
    for factor in GAUSS_SHRINK:
        net.load_state_dict(fitted)
        net.scale_gaussian(factor)
        value, _, _ = heldout_estimate(net, bound_fn, xv, yv, block)
        if value > best:
            best, best_factor = value, factor
    net.load_state_dict(fitted)
    net.scale_gaussian(best_factor)
    return best_factor


def _eval_block(cfg: TrainConfig) -> int:
    """The held-out block size of a config from :func:`_train_config` (which always sets it)."""
    assert cfg.eval_block is not None
    return cfg.eval_block


def estimate_mi(
    x: np.ndarray,
    y: np.ndarray,
    bound: str = "mine",
    *,
    critic: str = "gauss",
    hidden: int | None = None,
    layers: int | None = None,
    embed: int = 32,
    activation: str = "silu",
    eval_fraction: float = 0.2,
    val_fraction: float = 0.1,
    transform: str = "copula",
    standardize: bool | None = None,
    drop_nonfinite: bool = False,
    seed: int = 0,
    tau: float = 5.0,
    momentum: float = 0.99,
    k: int = 3,
    true_mi: float | None = None,
    on_point: Callable[[CurvePoint], None] | None = None,
    threads: int | None = 1,
    device: str = "cpu",
    **train: Any,
) -> MIEstimate:
    """Estimate I(X;Y) from paired samples, on held-out pairs.

    Args:
        x: array ``(n, ...)``; trailing axes are flattened into features.
        y: array ``(n, ...)``, row i paired with row i of ``x``.
        bound: ``mine`` (DV, EMA-corrected gradient), ``mine_f``/``nwj``, ``infonce``, ``dv``,
            ``jsd`` (trained with JSD, reported as DV), ``smile`` (``tau``) or ``ksg``.
        critic: ``gauss`` (Gaussian log density ratio of the training pairs plus an MLP on
            ``[x; y]`` that starts at zero), ``concat`` (MLP on ``[x; y]``) or ``separable``
            (``g(x) · h(y)``).
        hidden: critic width (None: 64 for ``gauss``, 256 for the others).
        layers: hidden layers of the critic (per encoder for ``separable``; None: 2 for
            ``gauss`` and ``separable``, 1 for ``concat``).
        embed: embedding size of the separable critic.
        activation: ``silu``, ``relu``, ``elu`` or ``tanh``.
        eval_fraction: share of pairs held out for the reported estimate.
        val_fraction: share of pairs held out for early stopping.
        transform: per-column map fitted on the training part: ``copula`` (empirical CDF then
            normal quantile), ``zscore`` or ``none``.
        standardize: the old switch, kept for callers: True means ``transform="zscore"``,
            False ``transform="none"`` (None: use ``transform``).
        drop_nonfinite: drop rows holding NaN/inf instead of raising.
        seed: seeds the split, the critic's initialisation and the batch order.
        tau: SMILE clipping threshold.
        momentum: weight of the old average in MINE's moving average.
        k: neighbours for KSG.
        true_mi: analytic MI, if known (recorded and logged alongside the curve).
        on_point: called with each point of the training curve (e.g. TensorBoard logging).
        threads: torch CPU threads during the estimate (restored afterwards; None: unchanged).
        device: ``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (CUDA when available) for the critic
            and the pairs; KSG always runs on the CPU.
        **train: optimisation settings of :class:`dim.mine.training.TrainConfig`
            (``batch_size``, ``lr``, ``max_steps``, ``eval_every``, ``patience``, ``negatives``,
            ``eval_block``, ``weight_ema``, ...).

    Returns:
        An :class:`MIEstimate`; ``str()`` of it is the line ``dim-mine`` prints.

    Raises:
        DimError: bad input (unpaired rows, NaN/inf, too few samples, a constant column) or an
            unknown setting.
    """
    if bound not in ESTIMATORS:
        raise DimError(f"unknown bound '{bound}'; choose one of: {', '.join(ESTIMATORS)}")
    unknown = set(train) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise DimError(f"unknown estimate_mi option(s): {', '.join(sorted(unknown))}")
    if critic not in CRITIC_DEFAULTS:
        raise DimError(f"unknown critic '{critic}'; choose one of: {', '.join(CRITIC_DEFAULTS)}")
    hidden = CRITIC_DEFAULTS[critic]["hidden"] if hidden is None else hidden
    layers = CRITIC_DEFAULTS[critic]["layers"] if layers is None else layers
    start = time.perf_counter()
    if standardize is not None:
        transform = "zscore" if standardize else "none"
    if transform not in TRANSFORMS:
        raise DimError(f"transform must be one of {', '.join(TRANSFORMS)}, got '{transform}'")
    x, y, dropped = validate_pairs(x, y, drop_nonfinite=drop_nonfinite, min_samples=MIN_SAMPLES)
    settings: dict[str, Any] = {"bound": bound, "seed": seed, "transform": transform}
    if bound == "ksg":
        # Nothing is fitted, so the transform is fitted on all pairs.
        x, y = fit_transform(transform, x)(x), fit_transform(transform, y)(y)
        with torch_threads(threads):
            mi, se = ksg_mi(x, y, k=k, seed=seed)
        return MIEstimate(
            mi_nats=mi, stderr_nats=se, bound=bound, n_train=0, n_val=0, n_eval=len(x),
            true_mi=true_mi, seconds=time.perf_counter() - start, n_dropped=dropped,
            settings={**settings, "k": k},
            warnings=diagnose(bound, mi, se, len(x), x.shape[1], y.shape[1]),
        )  # fmt: skip
    cfg = _train_config(train, bound)
    dev = resolve_device(device)
    tr, va, ev = split_indices(len(x), eval_fraction, val_fraction, seed)
    x, y = fit_transform(transform, x[tr])(x), fit_transform(transform, y[tr])(y)
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    yt = torch.from_numpy(np.ascontiguousarray(y)).to(dev)
    net_kw = {"hidden": hidden, "layers": layers, "embed": embed, "activation": activation}
    net, bound_fn = _critic_and_bound(
        critic, x.shape[1], y.shape[1], net_kw, bound, tau, momentum, seed
    )
    net.to(dev)
    if isinstance(bound_fn, torch.nn.Module):
        bound_fn.to(dev)
    if isinstance(net, GaussianConcatCritic):
        net.fit(xt[tr], yt[tr])
        with torch_threads(threads):
            shrink = _shrink_gaussian(net, bound_fn, xt[va], yt[va], _eval_block(cfg))
        settings["gauss_shrink"] = shrink
    with torch_threads(threads):
        outcome = train_critic(
            net, bound_fn, ArraySource(xt[tr], yt[tr]), (xt[va], yt[va]), cfg, seed=seed,
            true_mi=(lambda _: true_mi) if true_mi is not None else None, on_point=on_point,
        )  # fmt: skip
        mi, se, _ = heldout_estimate(net, bound_fn, xt[ev], yt[ev], _eval_block(cfg))
        with torch.no_grad():
            net.eval()
            max_score = float(net(xt[ev], yt[ev]).abs().max())
    settings.update(
        device=str(dev), critic=critic, **net_kw, tau=tau, momentum=momentum, **asdict(cfg)
    )
    warnings = diagnose(
        bound, mi, se, len(tr), x.shape[1], y.shape[1], cfg, outcome, max_score, n_eval=len(ev)
    )
    return MIEstimate(
        mi_nats=mi, stderr_nats=se, bound=bound, n_train=len(tr), n_val=len(va), n_eval=len(ev),
        curve=outcome.curve, true_mi=true_mi, best_step=outcome.best_step, steps=outcome.steps,
        seconds=time.perf_counter() - start, n_dropped=dropped, settings=settings,
        warnings=warnings,
    )  # fmt: skip


def _critic_and_bound(
    critic: str,
    x_dim: int,
    y_dim: int,
    net_kw: dict[str, Any],
    bound: str,
    tau: float,
    momentum: float,
    seed: int,
) -> tuple[Critic, Callable]:
    """A seeded critic (without touching the caller's global RNG state) and the bound."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_critic(critic, x_dim, y_dim, **net_kw)
    return net, make_bound(bound, tau=tau, momentum=momentum)


class _StreamSource:
    """Fresh batches of a staircase task (one numpy generator, seeded)."""

    def __init__(self, task: Staircase, seed: int) -> None:
        self.task, self.rng = task, np.random.default_rng(seed)

    def batch(
        self, step: int, size: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.task.sample(step, size, self.rng)
        return torch.from_numpy(x), torch.from_numpy(y)


def estimate_staircase(
    task: Staircase,
    bound: str = "mine",
    *,
    critic: str = "concat",
    hidden: int = 256,
    layers: int = 1,
    embed: int = 32,
    activation: str = "silu",
    n_eval: int = 2000,
    seed: int = 0,
    tau: float = 5.0,
    momentum: float = 0.99,
    on_point: Callable[[CurvePoint], None] | None = None,
    threads: int | None = 1,
    **train: Any,
) -> MIEstimate:
    """Track a staircase task: fresh batches every step while the true MI steps up.

    There is no early stopping (the target moves); ``max_steps`` is the staircase's length and
    ``lr`` defaults to ``STAIRCASE_LR`` (1e-3).
    Validation points use fresh pairs of the current level; the reported estimate is computed on
    ``n_eval`` fresh pairs of the last level.  Arguments as for :func:`estimate_mi`.
    """
    if bound not in NEURAL_BOUNDS:
        raise DimError(f"the staircase needs a neural bound, one of: {', '.join(NEURAL_BOUNDS)}")
    start = time.perf_counter()
    unknown = set(train) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise DimError(f"unknown estimate_staircase option(s): {', '.join(sorted(unknown))}")
    cfg = _train_config({"lr": STAIRCASE_LR, **train, "max_steps": task.total_steps}, bound)
    net_kw = {"hidden": hidden, "layers": layers, "embed": embed, "activation": activation}
    net, bound_fn = _critic_and_bound(
        critic, task.dim, task.dim, net_kw, bound, tau, momentum, seed
    )
    held_rng = np.random.default_rng(seed + 1)
    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def val(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        level = task.level(step)
        if level not in held:
            x, y = task.sample(step, n_eval, held_rng)
            held[level] = (torch.from_numpy(x), torch.from_numpy(y))
        return held[level]

    ex, ey = task.sample(task.total_steps, n_eval, np.random.default_rng(seed + 2))
    with torch_threads(threads):
        outcome = train_critic(
            net, bound_fn, _StreamSource(task, seed), val, cfg, seed=seed, true_mi=task.true_mi,
            on_point=on_point, early_stopping=False,
        )  # fmt: skip
        mi, se, _ = heldout_estimate(
            net, bound_fn, torch.from_numpy(ex), torch.from_numpy(ey), _eval_block(cfg)
        )
    settings = {"bound": bound, "seed": seed, "critic": critic, **net_kw, **asdict(cfg)}
    return MIEstimate(
        mi_nats=mi, stderr_nats=se, bound=bound, n_train=cfg.batch_size * cfg.max_steps,
        n_val=n_eval, n_eval=n_eval, curve=outcome.curve, true_mi=task.true_mi(task.total_steps),
        best_step=outcome.best_step, steps=outcome.steps, seconds=time.perf_counter() - start,
        settings=settings,
    )  # fmt: skip
