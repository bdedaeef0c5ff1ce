"""Classifier heads on frozen features: the online linear probes, the linear probe and the paper's
200-unit MLP (shared by training and the evaluation protocols)."""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dim.nets.encoders import Encoder

TAPS = ("conv", "fc", "y")  # the encoder outputs that classifiers read


def mlp_classifier(in_dim: int, num_classes: int, hidden: int = 200, dropout: float = 0.1):
    """The paper's non-linear classifier: Linear -> BN -> Dropout -> ReLU -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class OnlineProbes(nn.Module):
    """One linear classifier per feature tap (conv / fc / y), trained on *detached* features.

    Detaching keeps the probes from shaping the representation: they only monitor it.
    """

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({k: nn.Linear(d, num_classes) for k, d in dims.items()})

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: head(feats[k].detach().flatten(1)) for k, head in self.heads.items()}

    def loss_and_accuracy(
        self, feats: dict[str, Tensor], labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], Tensor]:
        """Cross-entropy and accuracy over the *labelled* samples (label >= 0) of the batch, plus
        the hits per tap and the number of labelled samples (for accuracies over several steps).

        A batch without labels gives a zero loss that still touches every probe parameter (so
        DDP sees the same parameters used on every process) and NaN accuracies (not logged).
        """
        logits = self(feats)
        mask = labels >= 0
        n = mask.sum()
        safe = labels.clamp(min=0)
        per_head = [
            (F.cross_entropy(v, safe, reduction="none") * mask).sum() / n.clamp(min=1)
            for v in logits.values()
        ]
        loss = functools.reduce(operator.add, per_head)
        # No boolean indexing or bool(): each would wait for the GPU on every step.
        hits = {k: ((v.argmax(1) == labels) & mask).sum() for k, v in logits.items()}
        acc = {k: h / n for k, h in hits.items()}  # 0/0 = NaN for a batch without labels
        return loss, acc, hits, n


def feature_dims(encoder: Encoder) -> dict[str, int]:
    conv = int(torch.tensor(encoder.conv_shape).prod())
    return {"conv": conv, "fc": encoder.fc_dim, "y": encoder.y_dim}


def linear_classifier(in_dim: int, num_classes: int) -> nn.Sequential:
    """A logistic-regression probe: Flatten -> Linear (softmax lives in the cross-entropy loss).

    Args:
        in_dim: feature size (a conv map is flattened first).
        num_classes: number of classes.

    Returns:
        The probe module, mapping features to logits.
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(in_dim, num_classes))
