"""The shared state of one evaluation: encoder, data splits, device, cached features."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from dim.data.base import dataset_len
from dim.errors import DimError
from dim.eval.features import TAPS, Features, extract_features
from dim.eval.source import EncoderSource

if TYPE_CHECKING:
    from dim.data.sources import Splits
    from dim.nets.encoders import Encoder


@dataclass
class EvalContext:
    """Everything a protocol needs; features are extracted once and shared by all protocols.

    ``train`` is the data module's training split, ``test`` its validation split (the official
    test set for CIFAR / STL-10).
    """

    source: EncoderSource
    splits: Splits
    device: torch.device
    seed: int = 0
    batch_size: int = 256
    taps: tuple[str, ...] = TAPS
    max_train: int | None = None
    max_test: int | None = None
    writer: Any = None  # a TensorBoard SummaryWriter, or None
    _cache: dict[str, Features] = field(default_factory=dict)

    @property
    def encoder(self) -> Encoder:
        return self.source.encoder

    def features(self, split: str) -> Features:
        """Frozen features of ``train`` or ``test`` (computed on first use)."""
        if split not in self._cache:
            dataset = self.splits.eval_dataset(split)
            limit = self.max_train if split == "train" else self.max_test
            self._cache[split] = extract_features(
                self.encoder, dataset, self.batch_size, self.device, limit
            )
        return self._cache[split]

    def dataset(self, split: str) -> torch.utils.data.Dataset:
        """The image dataset of ``train`` or ``test``, cut to ``max_train`` / ``max_test``."""
        dataset = self.splits.eval_dataset(split)
        limit = self.max_train if split == "train" else self.max_test
        if limit is not None and limit < dataset_len(dataset):
            dataset = torch.utils.data.Subset(dataset, range(int(limit)))
        return dataset

    def labelled(self, protocol: str) -> tuple[Features, Features, int]:
        """Labelled train and test features and the number of classes (error if unlabelled)."""
        k = self.splits.num_classes
        if not k:
            raise DimError(f"eval={protocol} needs a labelled dataset; this data has no classes")
        train, test = self.features("train").labelled(), self.features("test").labelled()
        for name, feats in (("train", train), ("test", test)):
            if len(feats) == 0:
                raise DimError(f"eval={protocol}: the {name} split has no labelled images")
        return train, test, int(k)

    def curve(self, tag: str, value: float, step: int) -> None:
        """A TensorBoard curve point (e.g. a classifier's test accuracy per epoch)."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)
