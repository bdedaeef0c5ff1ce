"""Training classifiers on frozen features held in memory (shared by the classifier protocols)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dim.errors import DimError


def standardize(train: Tensor, *others: Tensor, eps: float = 1e-6) -> list[Tensor]:
    """Z-score every column with the statistics of ``train`` (applied to all given tensors)."""
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(eps)
    return [(t - mean) / std for t in (train, *others)]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy of ``model`` on (x, y) (model in eval mode; restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def check_labels(y: Tensor, num_classes: int, what: str) -> None:
    """Raise a one-line error when a split has no labels or labels out of range."""
    if len(y) == 0:
        raise DimError(f"{what}: the split has no labelled images (labels are all -1)")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DimError(f"{what}: labels must lie in [0, {num_classes}), got {int(y.max())}")


def fit_classifier(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    score_every: int | None = 1,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> list[float]:
    """Train ``model`` with Adam and cross-entropy; return test accuracies along the way.

    Args:
        model: maps a batch of features to logits.
        train: (features, labels) to fit.
        test: (features, labels) to score after every epoch.
        epochs: passes over ``train``.
        lr: Adam learning rate.
        batch_size: minibatch size (the full set if larger).
        weight_decay: Adam's L2 weight decay.
        milestones: epochs at which the LR is multiplied by ``gamma``.
        gamma: LR decay factor.
        seed: seeds the shuffling (initialise the model under the same seed for full control).
        device: where to train.
        score_every: score the test split every this many epochs (and after the last one);
            None = only after the last epoch.
        on_epoch: called with (epoch, train loss, test accuracy) after every scored epoch.

    Returns:
        The test accuracies of the scored epochs (the last one is the final model's).
    """
    if epochs < 1:
        raise DimError(f"epochs must be >= 1, got {epochs}")
    x, y = train
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma=gamma)
    gen = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(x))
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total, steps = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2 and steps:  # a batch of one breaks BatchNorm; skip the remainder
                continue
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        sched.step()
        last = epoch == epochs - 1
        if not last and (score_every is None or (epoch + 1) % score_every):
            continue
        acc = accuracy(model, *test)
        history.append(acc)
        if on_epoch is not None:
            on_epoch(epoch, total / max(1, steps), acc)
    return history


def fit_protocol(
    cfg: Mapping[str, Any],
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    **kw: Any,
) -> list[float]:
    """:func:`fit_classifier` with the optimiser settings of a protocol's config (``epochs``,
    ``lr``, ``batch_size``, ``weight_decay``); ``kw`` adds or overrides the other arguments."""
    settings: dict[str, Any] = {
        "epochs": int(cfg["epochs"]),
        "lr": float(cfg["lr"]),
        "batch_size": int(cfg["batch_size"]),
        "weight_decay": float(cfg["weight_decay"]),
    }
    return fit_classifier(model, train, test, **{**settings, **kw})


def seeded(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a module under a fixed seed without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()
