"""A validation split carved from the training images (``data.holdout``).

Settings are chosen on images the final test never sees: with ``data.holdout=N`` a seeded random
N of the labelled training images become the validation split (with the evaluation transform),
the rest the training split, and the dataset's own test split is not used at all.  Every consumer
(training, online probes, ``dim-embed split=test``, ``dim-eval``) then reads the held-out images
where it would read the test split.  The draw depends only on ``data.holdout_seed``, so training,
embedding and evaluation agree on it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from dim.data.base import Splits, dataset_len
from dim.errors import DimError


def _take(ds: Any, rows: np.ndarray) -> Any:
    """The rows of a dataset stored as arrays (``.data`` + ``.targets``/``.labels`` or tensors),
    as the same kind of dataset, so the device path can still read its uint8 arrays."""
    if isinstance(ds, TensorDataset):
        index = torch.as_tensor(rows)
        return TensorDataset(*(t[index] for t in ds.tensors))
    label_attr = "targets" if hasattr(ds, "targets") else "labels"
    if getattr(ds, "data", None) is None or getattr(ds, label_attr, None) is None:
        raise DimError(
            "data.holdout needs a dataset stored as arrays (CIFAR, MNIST, Fashion-MNIST, digits, "
            f"STL-10's labelled split); {type(ds).__name__} is not: split its folder on disk"
        )
    out = copy.copy(ds)
    data, labels = ds.data, getattr(ds, label_attr)
    out.data = data[torch.as_tensor(rows)] if isinstance(data, torch.Tensor) else data[rows]
    if isinstance(labels, torch.Tensor):
        setattr(out, label_attr, labels[torch.as_tensor(rows)])
    elif isinstance(labels, np.ndarray):
        setattr(out, label_attr, labels[rows])
    else:  # a list (CIFAR)
        setattr(out, label_attr, [labels[i] for i in rows])
    return out


def carve_holdout(splits: Splits, n: int, seed: int = 0) -> Splits:
    """Splits whose ``val`` is ``n`` random labelled training images and whose ``train`` /
    ``eval_train`` are the others (the test split is dropped)."""
    source: Dataset = splits.eval_train  # type: ignore[assignment]  # set by Splits
    total = dataset_len(source)
    if dataset_len(splits.train) != total:
        raise DimError(
            "data.holdout needs the training split to be the labelled images (it is not for "
            "STL-10's unlabeled images: use data.train_split=train)"
        )
    if not 0 < n < total:
        raise DimError(f"data.holdout must lie in 1..{total - 1} for {total} images, got {n}")
    perm = np.random.default_rng(seed).permutation(total)
    held, kept = np.sort(perm[:n]), np.sort(perm[n:])
    return Splits(
        _take(splits.train, kept),
        _take(source, held),
        channels=splits.channels,
        image_size=splits.image_size,
        num_classes=splits.num_classes,
        eval_train=_take(source, kept),
    )
