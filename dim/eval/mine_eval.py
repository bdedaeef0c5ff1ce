"""MINE estimate of I(X;Y) between images X and their representation Y (paper, Table 3).

Uses :func:`dim.mine.estimate_mi` (the estimator behind ``dim-mine``, with its robust defaults)
on the training split's (image, Y) pairs: every column goes through the Gaussian copula transform
fitted on the critic's training part (MI is unchanged), the critic is fitted on that part with
the MINE bound (DV value, EMA-corrected gradient) and a decaying (cosine) learning rate,
early-stopped on a second part, and the reported value is its DV estimate on a third, held-out
part (std = the standard error across held-out blocks).  Images are flattened; pixels that never
vary are dropped (they carry no information).

As with ``dim-mine``, the value is never negative (a raw estimate below zero is reported as 0,
the raw value kept in the settings), the settings carry the 95% interval, and every failure
signature of :func:`dim.mine.diagnostics.diagnose` (above all: too few pairs for the dimension of
the images and Y, where the estimate is not trustworthy) is printed as one ``warning:`` line on
stderr and kept in the settings' ``warnings`` list.
"""

from __future__ import annotations

import sys
from time import perf_counter
from typing import Any

import torch

from dim.errors import DimError
from dim.eval.context import EvalContext
from dim.eval.features import stack_images
from dim.eval.report import ProtocolResult, Stat


def image_matrix(images: torch.Tensor) -> torch.Tensor:
    """Flattened, z-scored images without their constant pixels, as an (N, D) matrix."""
    x = images.flatten(1).float()
    x = x[:, (x.max(0).values - x.min(0).values) > 0]
    if x.shape[1] == 0:
        raise DimError("eval=mine: every image is identical")
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """MINE estimate of I(X;Y); value ``y`` (nats; std = held-out standard error).

    Args:
        ctx: the evaluation context.
        cfg: the options of ``configs/eval/mine.yaml``:
            ``max_samples`` (pairs used, from the start of the
            training split), ``critic`` (``gauss``, ``concat`` or ``separable``), ``hidden``,
            ``layers`` and ``train`` (optimisation settings passed to
            :func:`dim.mine.estimate_mi`, ``transform`` included; default ``copula``).

    Returns:
        The held-out estimate (0 where it is below zero), with ``raw_mi_nats``, ``ci95_nats``
        and ``warnings`` in the settings.
    """
    from dim.mine import estimate_mi

    start = perf_counter()
    n = min(int(cfg["max_samples"]), len(ctx.features("train")))
    y = ctx.features("train").y[:n]
    x = image_matrix(stack_images(ctx.dataset("train"), limit=n))
    train = {"transform": "copula", **cfg["train"]}
    # A Y column constant over the pairs tells nothing and would stop the estimate: drop it.
    y = y[:, (y.max(0).values - y.min(0).values) > 0]
    if y.shape[1] == 0:
        raise DimError("eval=mine: every coordinate of Y is constant")
    result = estimate_mi(
        x.numpy(),
        y.float().numpy(),
        bound="mine",
        critic=str(cfg["critic"]),
        hidden=None if cfg.get("hidden") is None else int(cfg["hidden"]),
        layers=None if cfg.get("layers") is None else int(cfg["layers"]),
        seed=ctx.seed,
        on_point=lambda p: ctx.curve("eval/mine/heldout_mi", p.heldout_mi or 0.0, p.step),
        **train,
    )
    for line in result.warnings:
        print(f"warning: eval=mine: {line}", file=sys.stderr, flush=True)
    stat = Stat(result.mi_nats, result.stderr_nats, [result.mi_nats])
    settings = {
        **cfg,
        "n_pairs": n,
        "n_eval": result.n_eval,
        "steps": result.steps,
        "raw_mi_nats": result.raw_mi_nats,
        "ci95_nats": list(result.ci_nats),
        "warnings": result.warnings,
        "trustworthy": not result.warnings,
    }
    return ProtocolResult("nats", {"y": stat}, settings, perf_counter() - start)
