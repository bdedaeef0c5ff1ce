"""Linear probe: logistic regression on standardised frozen features, mean ± std over seeds."""

from __future__ import annotations

from functools import partial
from time import perf_counter
from typing import Any

from dim.eval.classifiers import fit_protocol, seeded, standardize
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat
from dim.nets.probes import linear_classifier


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """One logistic-regression probe per tap and seed; values ``conv``, ``fc``, ``y``.

    Features are z-scored with the training split's statistics.  Seeds ``seed .. seed+seeds-1``
    change the probe's initialisation and the minibatch order.

    Args:
        ctx: the evaluation context.
        cfg: the protocol's options (``configs/eval/linear.yaml``).

    Returns:
        Final test accuracy per tap: mean ± std over seeds.
    """
    start = perf_counter()
    train, test, k = ctx.labelled("linear")
    values = {}
    for tap in ctx.taps:
        x_train, x_test = standardize(train.flat(tap), test.flat(tap))
        accs = []
        for s in range(int(cfg["seeds"])):
            seed = ctx.seed + s
            model = seeded(seed, partial(linear_classifier, x_train.shape[1], k))
            history = fit_protocol(
                cfg,
                model,
                (x_train, train.labels),
                (x_test, test.labels),
                seed=seed,
                device=ctx.device,
                score_every=None,
            )
            accs.append(history[-1])
        values[tap] = Stat.of(accs)
    return ProtocolResult("accuracy", values, cfg, perf_counter() - start)
