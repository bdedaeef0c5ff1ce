"""The dataset registry: a *source* builds the (train, val) datasets of one dataset name.

Every dataset yields ``(image, label)`` with ``label = -1`` when the data is unlabelled.  Sources:
``digits`` and ``synthetic`` here, torchvision's datasets in ``torchvision_sets.py`` (cifar10,
cifar100, stl10, mnist, fashion_mnist, celeba), image folders in ``folders.py`` (folder,
tiny_imagenet); the transforms in ``transforms.py``; ``data.holdout`` in ``holdout.py``.
Nothing here imports Lightning, so the evaluation and embedding commands start quickly; the
training DataModule is in ``images.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from dim.data import folders, torchvision_sets  # noqa: F401 - they register their sources
from dim.data.base import SOURCES, Source, Splits, missing_data_error, register
from dim.data.holdout import carve_holdout
from dim.data.transforms import image_transform, normalisation
from dim.errors import DimError

__all__ = [
    "SOURCES",
    "Source",
    "Splits",
    "build_splits",
    "image_transform",
    "missing_data_error",
    "register",
]


def _normalize(images: torch.Tensor, cfg: dict[str, Any], name: str) -> torch.Tensor:
    """Images in [0, 1] normalised with the dataset config's ``mean`` / ``std``."""
    mean, std = normalisation({**cfg, "channels": images.shape[1]}, name)
    return (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@register("digits")
def digits(cfg: dict[str, Any]) -> Splits:
    """scikit-learn's 1797 8x8 digits (shipped offline), upsampled to ``image_size``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    size = int(cfg.get("image_size", 32))
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = _normalize(images.clamp(0, 1), cfg, "digits")
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
    splits = SOURCES[name](cfg)
    if cfg.get("holdout"):  # validation carved from train: the test split stays unseen
        splits = carve_holdout(splits, int(cfg["holdout"]), int(cfg.get("holdout_seed") or 0))
    return splits
