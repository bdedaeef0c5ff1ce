"""MINE estimate of I(X;Y) between images X and their representation Y (paper, Table 3).

A separable critic T(x, y) = <g(x), h(y)> / sqrt(d) (g a small conv net on the image, h an MLP on
Y) scores every (x_i, y_j) pair of a batch, the B diagonal pairs being the joint samples and the
B(B-1) others samples of the product of marginals.  It is trained with the MINE bound (DV value,
EMA-corrected gradient, :class:`dim.bounds.MineBound`) and a decaying learning rate (cosine to
``lr * final_lr_ratio``); the reported number is the DV value on the held-out split, averaged over
blocks of ``batch_size`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from time import perf_counter
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dim.bounds import dv_value, get_bound
from dim.errors import DimError
from dim.eval.classifiers import seeded
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat

DEFAULTS: dict[str, Any] = {
    "steps": 2000,
    "batch_size": 128,
    "lr": 1e-4,
    "final_lr_ratio": 0.1,
    "embed": 128,
    "momentum": 0.99,
}


class Indexed(Dataset):
    """Yields ``(image, index)`` so that batches can be matched with cached features."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.dataset[i][0], i


def endless(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """Cycle over a DataLoader forever (a new shuffle each pass)."""
    while True:
        yield from loader


class ImageYCritic(nn.Module):
    """T(x, y) = <g(x), h(y)> / sqrt(embed): conv net g on images, MLP h on Y."""

    def __init__(self, channels: int, image_size: int, y_dim: int, embed: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = channels, image_size
        for cout in (32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True)]
            cin, size = cout, size // 2
        self.g = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * size * size, embed))
        self.h = nn.Sequential(
            nn.Linear(y_dim, 256), nn.LeakyReLU(0.1, inplace=True), nn.Linear(256, embed)
        )
        self.scale = 1.0 / math.sqrt(embed)

    def pair_scores(self, x: Tensor, y: Tensor) -> Tensor:
        """``S[i, j] = T(x_i, y_j)`` for every pair."""
        return self.g(x) @ self.h(y).T * self.scale


@torch.no_grad()
def heldout_mi(
    critic: ImageYCritic, dataset: Dataset, y: Tensor, block: int, device: torch.device | str
) -> list[float]:
    """DV value on each block of ``block`` held-out pairs (all pairs of the block scored)."""
    critic.eval()
    values = []
    loader = DataLoader(Indexed(dataset), batch_size=block, shuffle=False, drop_last=len(y) > block)
    for images, idx in loader:
        if len(idx) < 2:
            continue
        scores = critic.pair_scores(images.to(device).float(), y[idx].to(device))
        values.append(float(dv_value(scores, torch.eye(len(idx), dtype=torch.bool, device=device))))
    critic.train()
    return values


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """MINE estimate of I(X;Y); value ``y`` (nats), std across held-out blocks.

    Args:
        ctx: the evaluation context (critic trained on the train split, scored on the test split).
        cfg: overrides of :data:`DEFAULTS`.

    Returns:
        The held-out estimate.
    """
    c = {**DEFAULTS, **cfg}
    start = perf_counter()
    y_train, y_test = ctx.features("train").y, ctx.features("test").y
    train_set, test_set = ctx.dataset("train"), ctx.dataset("test")
    batch = min(int(c["batch_size"]), len(y_train))
    if batch < 2:
        raise DimError("eval=mine needs at least 2 training images")
    shape = ctx.splits.channels, ctx.splits.image_size, y_train.shape[1]
    critic = seeded(ctx.seed, partial(ImageYCritic, *shape, int(c["embed"]))).to(ctx.device)
    bound = get_bound("mine", momentum=float(c["momentum"])).to(ctx.device)  # type: ignore[union-attr]
    steps = int(c["steps"])
    opt = torch.optim.Adam(critic.parameters(), lr=float(c["lr"]))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=max(1, steps), eta_min=float(c["lr"]) * float(c["final_lr_ratio"])
    )
    gen = torch.Generator().manual_seed(ctx.seed)
    loader = DataLoader(
        Indexed(train_set), batch_size=batch, shuffle=True, drop_last=True, generator=gen
    )
    eye = torch.eye(batch, dtype=torch.bool, device=ctx.device)
    batches = endless(loader)
    for step in range(steps):
        images, idx = next(batches)
        scores = critic.pair_scores(images.to(ctx.device).float(), y_train[idx].to(ctx.device))
        out = bound(scores, eye)
        if not torch.isfinite(out.loss):
            raise DimError("eval=mine diverged (non-finite loss); lower eval.mine.lr")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            ctx.curve("eval/mine/train_mi", float(out.mi), step)
    blocks = heldout_mi(critic, test_set, y_test, batch, ctx.device)
    if not blocks:
        raise DimError("eval=mine: the test split is too small to score (need >= 2 images)")
    return ProtocolResult("nats", {"y": Stat.of(blocks)}, c, perf_counter() - start)
