"""MINE estimate of I(X;Y) between images X and their representation Y (paper, Table 3).

Uses :func:`dim.mine.estimate_mi` (the estimator behind ``dim-mine``) on the training split's
(image, Y) pairs: the critic is fitted on one part of them with the MINE bound (DV value,
EMA-corrected gradient) and a decaying (cosine) learning rate, early-stopped on a second part,
and the reported value is its DV estimate on a third, held-out part (std = the standard error
across held-out blocks).  Images are flattened; pixels that never vary are dropped (they carry
no information) and every column is z-scored, which leaves the mutual information unchanged.
"""

from __future__ import annotations

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
            training split), ``critic`` (``concat`` or ``separable``), ``hidden``, ``layers``
            and ``train`` (optimisation settings passed to :func:`dim.mine.estimate_mi`).

    Returns:
        The held-out estimate.
    """
    from dim.mine import estimate_mi

    start = perf_counter()
    n = min(int(cfg["max_samples"]), len(ctx.features("train")))
    y = ctx.features("train").y[:n]
    y = (y - y.mean(0)) / y.std(0).clamp_min(1e-6)
    x = image_matrix(stack_images(ctx.dataset("train"), limit=n))
    result = estimate_mi(
        x.numpy(),
        y.numpy(),
        bound="mine",
        critic=str(cfg["critic"]),
        hidden=int(cfg["hidden"]),
        layers=int(cfg["layers"]),
        standardize=False,
        seed=ctx.seed,
        on_point=lambda p: ctx.curve("eval/mine/heldout_mi", p.heldout_mi or 0.0, p.step),
        **cfg["train"],
    )
    stat = Stat(result.mi_nats, result.stderr_nats, [result.mi_nats])
    settings = {**cfg, "n_pairs": n, "n_eval": result.n_eval, "steps": result.steps}
    return ProtocolResult("nats", {"y": stat}, settings, perf_counter() - start)
