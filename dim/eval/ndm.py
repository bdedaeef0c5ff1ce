"""Neural dependency measure (NDM, Hjelm et al. 2019, §4.1): how far Y is from factorised.

A discriminator T learns to tell Y from a copy whose every coordinate is shuffled independently
across the batch (a sample of the product of Y's marginals).  The Donsker-Varadhan value
E_Y[T] - log E_shuffled[e^T] of the trained T, on the held-out split, estimates the KL divergence
between Y and its factorised version (the total correlation): 0 when the coordinates of Y are
independent.  The paper reports it on sigmoid(Y) (the space of the uniform prior) and on raw Y.
"""

from __future__ import annotations

from functools import partial
from time import perf_counter
from typing import Any

import torch
from torch import Tensor, nn

from dim.bounds import dv_value, get_bound
from dim.errors import DimError
from dim.eval.classifiers import seeded
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat
from dim.nets.mlp import mlp

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
def ndm_value(disc: nn.Module, y: Tensor, seed: int = 0, shuffles: int = 10) -> float:
    """The DV value of a trained discriminator on ``y``, averaged over ``shuffles`` shuffles."""
    disc.eval()
    gen = torch.Generator().manual_seed(seed)
    return float(sum(dv_value(*_scores(disc, y, gen)) for _ in range(shuffles)) / shuffles)


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
        One value per variant.
    """
    c = cfg
    if c["bound"] not in TRAIN_BOUNDS:
        raise DimError(f"eval.ndm.bound must be one of {', '.join(TRAIN_BOUNDS)}, got {c['bound']}")
    unknown = set(c["variants"]) - set(VARIANTS)
    if unknown:
        raise DimError(f"eval.ndm.variants: unknown {sorted(unknown)}; use {list(VARIANTS)}")
    start = perf_counter()
    y_train, y_test = ctx.features("train").y, ctx.features("test").y
    values = {}
    for variant in c["variants"]:
        transform = torch.sigmoid if variant == "sigmoid" else (lambda t: t)
        disc = train_ndm(transform(y_train), c, ctx.seed, ctx.device)
        value = ndm_value(disc, transform(y_test).to(ctx.device), ctx.seed, int(c["eval_shuffles"]))
        values[f"{variant}/y"] = Stat.of([value])
    return ProtocolResult("nats", values, c, perf_counter() - start)
