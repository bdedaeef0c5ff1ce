"""k-nearest-neighbour classification with cosine similarity on frozen features.

Votes are weighted by ``exp(similarity / temperature)`` (Wu et al. 2018, the usual SSL monitor);
``temperature: null`` gives one plain vote per neighbour.  Shared by ``dim-eval eval=knn`` and
the kNN monitor that runs during training (:mod:`dim.monitor.visuals`).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dim.errors import DimError
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat


@torch.no_grad()
def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    k: int,
    num_classes: int,
    temperature: float | None = 0.07,
    chunk: int = 1024,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Predicted labels of ``test_x`` by a vote of its ``k`` most cosine-similar training rows.

    Args:
        train_x: (N, D) features of the labelled bank.
        train_y: (N,) labels in [0, num_classes).
        test_x: (M, D) features to classify.
        k: neighbours per query (capped at N).
        num_classes: number of classes.
        temperature: vote weight exp(sim / temperature); None = uniform votes.
        chunk: queries per similarity block (bounds memory at chunk x N).
        device: where to compute.

    Returns:
        (M,) predicted labels (on the CPU).
    """
    if k < 1:
        raise DimError(f"knn: k must be >= 1, got {k}")
    bank = F.normalize(train_x.flatten(1).float(), dim=1).to(device)
    labels = train_y.to(device)
    k = min(k, len(bank))
    preds = []
    for i in range(0, len(test_x), chunk):
        q = F.normalize(test_x[i : i + chunk].flatten(1).float(), dim=1).to(device)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weight = torch.ones_like(sim) if temperature is None else (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=device)
        votes.scatter_add_(1, labels[idx], weight)
        preds.append(votes.argmax(1).cpu())
    return torch.cat(preds)


def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int,
    num_classes: int,
    temperature: float | None = 0.07,
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 accuracy of :func:`knn_predict` on (test_x, test_y)."""
    pred = knn_predict(train_x, train_y, test_x, k, num_classes, temperature, device=device)
    return float((pred == test_y.cpu()).float().mean())


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """kNN accuracy per tap and k; values ``k<k>/<tap>``, e.g. ``k20/y``.

    Args:
        ctx: the evaluation context (the labelled training split is the neighbour bank).
        cfg: ``k`` (an int or a list of ints) and ``temperature``.

    Returns:
        Accuracies (deterministic: no std).
    """
    ks = cfg["k"] if isinstance(cfg["k"], list | tuple) else [cfg["k"]]
    temperature = None if cfg["temperature"] in (None, 0) else float(cfg["temperature"])
    start = perf_counter()
    train, test, num_classes = ctx.labelled("knn")
    values = {}
    for k in ks:
        for tap in ctx.taps:
            acc = knn_accuracy(
                train.flat(tap),
                train.labels,
                test.flat(tap),
                test.labels,
                int(k),
                num_classes,
                temperature,
                ctx.device,
            )
            values[f"k{int(k)}/{tap}"] = Stat.of([acc])
    return ProtocolResult(
        "accuracy", values, {**cfg, "k": [int(k) for k in ks]}, perf_counter() - start
    )
