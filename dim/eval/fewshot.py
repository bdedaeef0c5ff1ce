"""Few-label probes: logistic regression trained on N labelled images per class.

For each N in ``shots`` and each of ``seeds`` draws, N training images per class are sampled (a
different subset per seed), a logistic-regression probe is fitted full-batch on their frozen
features, and scored on the whole test split.  Features are z-scored with the statistics of the
*whole* training split, which needs no labels.  The standard baseline is the same protocol on a
freshly initialised encoder (``init=random``).
"""

from __future__ import annotations

from functools import partial
from time import perf_counter
from typing import Any

import torch
from torch import Tensor

from dim.eval.classifiers import fit_classifier, seeded, standardize
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat
from dim.nets.probes import linear_classifier


def sample_per_class(labels: Tensor, shots: int, num_classes: int, seed: int) -> Tensor:
    """Indices of ``shots`` random images of every class (all of a class if it has fewer)."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:shots]])
    return torch.cat(picks)


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """Few-shot accuracy per shot count and tap; values ``<shots>shot/<tap>`` (e.g. ``5shot/y``).

    Args:
        ctx: the evaluation context.
        cfg: the options of ``configs/eval/fewshot.yaml``
            (``shots`` a list of ints, ``seeds`` draws per shot
            count, ``steps`` full-batch Adam steps, ``lr``, ``weight_decay``).

    Returns:
        Test accuracy: mean ± std over the seeds.
    """
    shots_list = cfg["shots"] if isinstance(cfg["shots"], list | tuple) else [cfg["shots"]]
    start = perf_counter()
    train, test, k = ctx.labelled("fewshot")
    everything = ctx.features("train")  # z-score statistics need no labels
    values = {}
    for tap in ctx.taps:
        _, x_train, x_test = standardize(everything.flat(tap), train.flat(tap), test.flat(tap))
        for shots in shots_list:
            accs = []
            for s in range(int(cfg["seeds"])):
                seed = ctx.seed + s
                idx = sample_per_class(train.labels, int(shots), k, seed)
                model = seeded(seed, partial(linear_classifier, x_train.shape[1], k))
                history = fit_classifier(
                    model,
                    (x_train[idx], train.labels[idx]),
                    (x_test, test.labels),
                    epochs=int(cfg["steps"]),
                    lr=float(cfg["lr"]),
                    batch_size=len(idx),
                    weight_decay=float(cfg["weight_decay"]),
                    seed=seed,
                    device=ctx.device,
                    score_every=None,
                )
                accs.append(history[-1])
            values[f"{int(shots)}shot/{tap}"] = Stat.of(accs)
    settings = {**cfg, "shots": [int(s) for s in shots_list]}
    return ProtocolResult("accuracy", values, settings, perf_counter() - start)
