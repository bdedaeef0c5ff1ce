"""The paper's non-linear classifier on frozen features (Hjelm et al. 2019, §4.1).

One hidden layer of 200 units with batch norm, dropout 0.1 and ReLU, trained separately on the
conv, fc and Y taps with Adam (lr 1e-4), the LR multiplied by 0.1 at epochs 50 and 100.  The
reported accuracy is the mean test accuracy of the last ``last_epochs`` epochs (std across them).
"""

from __future__ import annotations

from functools import partial
from time import perf_counter
from typing import Any

from dim.eval.classifiers import check_labels, fit_protocol, seeded
from dim.eval.context import EvalContext
from dim.eval.report import ProtocolResult, Stat
from dim.nets.probes import mlp_classifier


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """Train one MLP classifier per feature tap; values ``conv``, ``fc``, ``y`` (accuracy).

    Args:
        ctx: the evaluation context (frozen features, device, seed).
        cfg: the protocol's options (``configs/eval/nonlinear.yaml``).

    Returns:
        The accuracies (fractions) per tap.
    """
    start = perf_counter()
    train, test, k = ctx.labelled("nonlinear")
    check_labels(train.labels, k, "eval=nonlinear")
    values = {}
    for tap in ctx.taps:
        x_train, x_test = train.flat(tap), test.flat(tap)
        model = seeded(
            ctx.seed, partial(mlp_classifier, x_train.shape[1], k, cfg["hidden"], cfg["dropout"])
        )
        history = fit_protocol(
            cfg,
            model,
            (x_train, train.labels),
            (x_test, test.labels),
            milestones=[int(m) for m in cfg["milestones"]],
            gamma=float(cfg["gamma"]),
            seed=ctx.seed,
            device=ctx.device,
            on_epoch=partial(_log_epoch, ctx, tap),
        )
        values[tap] = Stat.of(history[-max(1, min(int(cfg["last_epochs"]), len(history))) :])
    return ProtocolResult("accuracy", values, cfg, perf_counter() - start)


def _log_epoch(ctx: EvalContext, tap: str, epoch: int, loss: float, acc: float) -> None:
    ctx.curve(f"eval/nonlinear/{tap}/train_loss", loss, epoch)
    ctx.curve(f"eval/nonlinear/{tap}/test_acc", acc, epoch)
