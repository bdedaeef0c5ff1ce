"""Image DataModules: one LightningDataModule over a registry of dataset sources.

A *source* builds the (train, val) datasets of one dataset name and says what it holds
(channels, image size, classes).  Every dataset yields ``(image, label)`` with ``label = -1`` when
the data is unlabelled.  Sources live in ``dim/data/``: ``digits`` and ``synthetic`` here,
torchvision's datasets in ``torchvision_sets.py`` (cifar10, cifar100, stl10, mnist, celeba), image
folders in ``folders.py`` (folder, tiny_imagenet); the transforms in ``transforms.py``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dim.data import folders, torchvision_sets  # noqa: F401 - they register their sources
from dim.data.base import SOURCES, Source, Splits, missing_data_error, register
from dim.data.sampling import ResumableSampler, SeededSamples, StreamPosition
from dim.data.transforms import STATS, image_transform
from dim.errors import DimError

__all__ = [
    "SOURCES",
    "STATS",
    "ImageDataModule",
    "Source",
    "Splits",
    "build_splits",
    "image_transform",
    "missing_data_error",
    "register",
]


def _normalize(images: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    return (images - mean) / std


@register("digits")
def digits(cfg: dict[str, Any]) -> Splits:
    """scikit-learn's 1797 8x8 digits (shipped offline), upsampled to ``image_size``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    size = int(cfg.get("image_size", 32))
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = _normalize(images.clamp(0, 1))
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_val = int(cfg.get("val_size", 297))
    val, train = perm[:n_val], perm[n_val:]
    return Splits(
        TensorDataset(images[train], labels[train]),
        TensorDataset(images[val], labels[val]),
        channels=1,
        image_size=size,
        num_classes=10,
    )


@register("synthetic")
def synthetic(cfg: dict[str, Any]) -> Splits:
    """Random images (for speed tests and smoke runs): no signal, but every code path runs."""
    g = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    n, n_val = int(cfg.get("num_samples", 512)), int(cfg.get("val_size", 128))
    c, s, k = int(cfg.get("channels", 3)), int(cfg.get("image_size", 32)), cfg.get("num_classes")
    images = torch.randn(n + n_val, c, s, s, generator=g)
    labels = (
        torch.randint(0, int(k), (n + n_val,), generator=g)
        if k
        else torch.full((n + n_val,), -1, dtype=torch.int64)
    )
    return Splits(
        TensorDataset(images[:n], labels[:n]),
        TensorDataset(images[n:], labels[n:]),
        channels=c,
        image_size=s,
        num_classes=int(k) if k else None,
    )


def build_splits(cfg: dict[str, Any]) -> Splits:
    name = cfg.get("name")
    if name not in SOURCES:
        raise DimError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](cfg)


class ImageDataModule(pl.LightningDataModule):
    """Train/val loaders over any registered source; drops the last incomplete training batch.

    The training order and augmentation depend only on ``(seed, epoch)`` (``dim/data/sampling.py``)
    and the position in the stream is part of the checkpoint, so a resume from any step, even
    mid-epoch, continues with exactly the batches a run that never stopped would have seen.
    """

    def __init__(self, cfg: dict[str, Any], seed: int = 0) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.seed = int(seed)
        self.position = StreamPosition()
        self.splits = build_splits(self.cfg)
        self.batch_size = int(self.cfg.get("batch_size", 64))
        if self.batch_size < 2:
            raise DimError(
                f"data.batch_size must be >= 2 (negatives need other images), got {self.batch_size}"
            )
        if len(self.splits.train) < self.batch_size:
            raise DimError(
                f"the training split has {len(self.splits.train)} images, fewer than one batch of "
                f"{self.batch_size}; lower data.batch_size"
            )

    @property
    def info(self) -> dict[str, Any]:
        s = self.splits
        return {"channels": s.channels, "image_size": s.image_size, "num_classes": s.num_classes}

    def setup(self, stage: str | None = None) -> None:
        self.position.trainer = self.trainer

    def _loader(self, ds: Dataset, sampler: ResumableSampler | None = None) -> DataLoader:
        workers = int(self.cfg.get("num_workers", 0))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=bool(self.cfg.get("pin_memory", False)),
            # worker seeds from here, not from the global RNG (which the checkpoint restores)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = ResumableSampler(
            self.splits.train,
            self.batch_size,
            self.position,
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )
        return self._loader(SeededSamples(self.splits.train), sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val)

    def state_dict(self) -> dict[str, Any]:
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)
