"""Image DataModules: one LightningDataModule over a registry of dataset sources.

A *source* builds the (train, val) datasets of one dataset name and says what it holds
(channels, image size, classes).  Every dataset yields ``(image, label)`` with ``label = -1`` when
the data is unlabelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from dim.errors import DimError


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    channels: int
    image_size: int
    num_classes: int | None  # None = unlabelled


Source = Callable[[dict[str, Any]], Splits]
SOURCES: dict[str, Source] = {}


def register(name: str) -> Callable[[Source], Source]:
    def deco(fn: Source) -> Source:
        SOURCES[name] = fn
        return fn

    return deco


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


CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _transforms(cfg: dict[str, Any], mean, std, train: bool):
    from torchvision import transforms as T

    steps: list[Any] = []
    aug = cfg.get("augment") or {}
    if train and aug.get("crop_padding"):
        steps.append(T.RandomCrop(int(cfg["image_size"]), padding=int(aug["crop_padding"])))
    if train and aug.get("hflip"):
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def missing_data_error(name: str, path: Path, err: Exception) -> DimError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DimError(
        f"{name} not found under {path} and not downloadable ({reason}); put the dataset there "
        "(data.data_dir=..., data.download=true on a machine with network) or train offline "
        "with data=digits or data=synthetic"
    )


def _torchvision_cifar(cfg: dict[str, Any], name: str) -> Splits:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = Path(cfg.get("data_dir", "data")).expanduser()
    mean, std = CIFAR_STATS[name]
    download = bool(cfg.get("download", True))
    try:
        train = cls(
            root, train=True, download=download, transform=_transforms(cfg, mean, std, True)
        )
        val = cls(
            root, train=False, download=download, transform=_transforms(cfg, mean, std, False)
        )
    except (RuntimeError, OSError) as err:  # URLError is an OSError; not found is RuntimeError
        raise missing_data_error(name.upper(), root / cls.base_folder, err) from None
    classes = 10 if name == "cifar10" else 100
    return Splits(train, val, channels=3, image_size=32, num_classes=classes)


@register("cifar10")
def cifar10(cfg: dict[str, Any]) -> Splits:
    return _torchvision_cifar(cfg, "cifar10")


@register("cifar100")
def cifar100(cfg: dict[str, Any]) -> Splits:
    return _torchvision_cifar(cfg, "cifar100")


def build_splits(cfg: dict[str, Any]) -> Splits:
    name = cfg.get("name")
    if name not in SOURCES:
        raise DimError(f"unknown dataset '{name}'; choose one of: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](cfg)


class ImageDataModule(pl.LightningDataModule):
    """Train/val loaders over any registered source; drops the last incomplete training batch."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
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

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        workers = int(self.cfg.get("num_workers", 0))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=bool(self.cfg.get("pin_memory", False)),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.train, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, False)
