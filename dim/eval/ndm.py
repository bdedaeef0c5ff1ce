"""Neural dependency measure (NDM, Hjelm et al. 2019, §4.1): how far Y is from factorised.

A discriminator T learns to tell Y from a copy whose every coordinate is shuffled independently
across the batch (a sample of the product of Y's marginals).  The Donsker-Varadhan value
E_Y[T] - log E_shuffled[e^T] of the trained T, on the held-out split, estimates the KL divergence
between Y and its factorised version (the total correlation): 0 when the coordinates of Y are
independent.  The paper reports it on sigmoid(Y) (the space of the uniform prior) and on raw Y.

The total correlation is invariant under an invertible map of each coordinate, so before training
every coordinate goes through the Gaussian copula transform fitted on the training split
(:mod:`dim.mine.transforms`): heavy-tailed or saturated coordinates can no longer blow up the
DV value, and sigmoid(Y) and raw Y, which have the same total correlation, get the same estimate
(the paper's two numbers differ only through the estimator).  As for ``dim-mine``: the reported
value is never below zero (the raw value is kept in the settings), the settings carry a 95%
interval (spread over the evaluation shuffles) and the failure signatures found (too few test
samples for the dimension of Y, held-out value far below the training value, a value beyond what
the sample can certify) are printed as ``warning:`` lines on stderr and kept in the settings.
"""

from __future__ import annotations

import math
import sys
from functools import partial
from time import perf_counter
from typing import Any

import torch
from torch import Tensor, nn

from dim.errors import DimError
from dim.eval.classifiers import seeded
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat
from dim.mine.diagnostics import MIN_PAIRS_PER_DIM
from dim.mine.result import Z95
from dim.mine.transforms import fit_transform
from dim.nets.mlp import mlp
from dim.objective.bounds import dv_value, get_bound

VARIANTS = ("sigmoid", "raw")
TRAIN_BOUNDS = ("mine", "dv", "nwj", "jsd", "smile")  # all report the DV value of the critic


def shuffle_coordinates(y: Tensor, gen: torch.Generator) -> Tensor:
    """Permute every column of ``y`` independently across rows (keeps each marginal exactly)."""
    order = torch.argsort(torch.rand(y.shape, generator=gen), dim=0)
    return torch.gather(y, 0, order.to(y.device))


def discriminator(in_dim: int, hidden: list[int]) -> nn.Sequential:
    """An MLP scoring one vector: in_dim -> hidden... -> 1 (ReLU in between)."""
    return mlp(in_dim, hidden, 1, partial(nn.ReLU, inplace=True))


def _scores(disc: nn.Module, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    both = torch.cat([y, shuffle_coordinates(y, gen)])
    mask = torch.zeros(len(both), dtype=torch.bool, device=y.device)
    mask[: len(y)] = True
    return disc(both).squeeze(-1), mask


@torch.no_grad()
def ndm_values(disc: nn.Module, y: Tensor, seed: int = 0, shuffles: int = 10) -> list[float]:
    """The DV value of a trained discriminator on ``y``, once per shuffle."""
    disc.eval()
    gen = torch.Generator().manual_seed(seed)
    return [float(dv_value(*_scores(disc, y, gen))) for _ in range(shuffles)]


def ndm_value(disc: nn.Module, y: Tensor, seed: int = 0, shuffles: int = 10) -> float:
    """The DV value of a trained discriminator on ``y``, averaged over ``shuffles`` shuffles."""
    return sum(ndm_values(disc, y, seed, shuffles)) / shuffles


def copula(y_train: Tensor, y_test: Tensor) -> tuple[Tensor, Tensor]:
    """Both splits through the per-coordinate Gaussian copula transform fitted on ``y_train``."""
    f = fit_transform("copula", y_train.double().cpu().numpy())
    return (
        torch.from_numpy(f(y_train.double().cpu().numpy())).float(),
        torch.from_numpy(f(y_test.double().cpu().numpy())).float(),
    )


def ndm_warnings(train_value: float, test_value: float, n_test: int, dim: int) -> list[str]:
    """The failure signatures of one NDM estimate (one line each)."""
    out = []
    if n_test < MIN_PAIRS_PER_DIM * dim:
        out.append(
            f"only {n_test} test samples for {dim} dimensions of Y (fewer than "
            f"{MIN_PAIRS_PER_DIM} per dimension): not trustworthy at this sample size"
        )
    if train_value - test_value > max(0.15, 0.25 * abs(test_value)):
        out.append(
            f"held-out value {test_value:.3f} is far below the training value "
            f"{train_value:.3f}: the discriminator overfits"
        )
    if test_value > math.log(n_test):
        out.append(
            f"value {test_value:.3f} exceeds log(test samples) = {math.log(n_test):.3f}, more "
            "than this sample can certify: not trustworthy"
        )
    if not math.isfinite(test_value):
        out.append("the discriminator's scores blew up (non-finite value)")
    return out


def train_ndm(
    y: Tensor, c: dict[str, Any], seed: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """Train the discriminator on ``y`` (rows = samples) with the configured bound."""
    hidden = [int(h) for h in c["hidden"]]
    disc = seeded(seed, partial(discriminator, y.shape[1], hidden)).to(device)
    bound = get_bound(str(c["bound"]))
    if isinstance(bound, nn.Module):
        bound.to(device).train()
    opt = torch.optim.Adam(disc.parameters(), lr=float(c["lr"]))
    gen = torch.Generator().manual_seed(seed)
    batch = min(int(c["batch_size"]), len(y))
    y = y.to(device)
    disc.train()
    for _ in range(int(c["steps"])):
        rows = torch.randperm(len(y), generator=gen)[:batch].to(device)
        out = bound(*_scores(disc, y[rows], gen))
        if not torch.isfinite(out.loss):
            raise DimError("eval=ndm diverged (non-finite loss); lower eval.ndm.lr")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return disc


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """NDM of Y; values ``sigmoid/y`` and ``raw/y`` (nats, held-out DV value).

    Args:
        ctx: the evaluation context (trained on the train split's Y, scored on the test split's).
        cfg: the protocol's options (``configs/eval/ndm.yaml``).

    Returns:
        One value per variant (0 where the held-out value is below zero); the settings hold
        ``raw``, ``ci95_nats``, ``warnings`` and ``trustworthy`` per variant.
    """
    c = cfg
    if c["bound"] not in TRAIN_BOUNDS:
        raise DimError(f"eval.ndm.bound must be one of {', '.join(TRAIN_BOUNDS)}, got {c['bound']}")
    unknown = set(c["variants"]) - set(VARIANTS)
    if unknown:
        raise DimError(f"eval.ndm.variants: unknown {sorted(unknown)}; use {list(VARIANTS)}")
    start = perf_counter()
    y_train, y_test = ctx.features("train").y, ctx.features("test").y
    values, report = {}, {}
    shuffles = int(c["eval_shuffles"])
    for variant in c["variants"]:
        transform = torch.sigmoid if variant == "sigmoid" else (lambda t: t)
        tr, te = copula(transform(y_train), transform(y_test))
        disc = train_ndm(tr, c, ctx.seed, ctx.device)
        test = ndm_values(disc, te.to(ctx.device), ctx.seed, shuffles)
        raw = sum(test) / len(test)
        train_value = ndm_value(disc, tr[: len(te)].to(ctx.device), ctx.seed, shuffles)
        se = Stat.of(test).std or 0.0
        se = se / math.sqrt(len(test))
        warnings = ndm_warnings(train_value, raw, len(te), te.shape[1])
        for line in warnings:
            print(f"warning: eval=ndm {variant}: {line}", file=sys.stderr, flush=True)
        shown = max(0.0, raw)
        values[f"{variant}/y"] = Stat(shown, None, [shown])
        report[variant] = {
            "raw": raw,
            "train_value": train_value,
            "ci95_nats": [max(0.0, raw - Z95 * se), max(0.0, raw + Z95 * se)],
            "warnings": warnings,
            "trustworthy": not warnings,
        }
    settings = {**c, "transform": "copula", "estimates": report}
    return ProtocolResult("nats", values, settings, perf_counter() - start)
