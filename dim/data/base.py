"""The dataset registry and what every source shares: splits, data paths, missing-data errors.

A *source* is a function ``cfg -> Splits`` registered under a dataset name (``data.name``).  Every
dataset yields ``(image, label)`` items with ``label = -1`` for unlabelled images.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch.utils.data import Dataset

from dim.errors import DimError

OFFLINE = "or train offline with data=digits or data=synthetic"


@dataclass
class Splits:
    """The datasets of one source and what they hold.

    Attributes:
        train: what DIM trains on (with the training augmentations; may hold unlabelled images,
            e.g. STL-10's 100k unlabeled split).
        val: the labelled held-out split (CIFAR / STL-10 test set, Tiny ImageNet val, ...) with the
            deterministic evaluation transform; online probes and evaluations report on it.
        channels, image_size: what one image tensor is after the transforms (checked against the
            encoder at start-up).
        num_classes: None when the data is unlabelled.
        eval_train: the *labelled* training images with the evaluation transform (no
            augmentation): what offline probes train on.  Defaults to ``train``.
    """

    train: Dataset
    val: Dataset
    channels: int
    image_size: int
    num_classes: int | None  # None = unlabelled
    eval_train: Dataset | None = None

    def __post_init__(self) -> None:
        if self.eval_train is None:
            self.eval_train = self.train

    def eval_dataset(self, split: str) -> Dataset:
        """What evaluations encode: ``eval_train`` for ``train``, ``val`` for any other split."""
        if split != "train":
            return self.val
        assert self.eval_train is not None  # set by __post_init__
        return self.eval_train


def dataset_len(dataset: Dataset) -> int:
    """``len`` of a map-style dataset (torch's ``Dataset`` type does not declare ``__len__``)."""
    return len(cast(Sized, dataset))


Source = Callable[[dict[str, Any]], Splits]
SOURCES: dict[str, Source] = {}


def register(name: str) -> Callable[[Source], Source]:
    """Register a ``cfg -> Splits`` builder under ``data.name = name``."""

    def deco(fn: Source) -> Source:
        SOURCES[name] = fn
        return fn

    return deco


def data_root(cfg: dict[str, Any]) -> Path:
    """``data.data_dir`` (from ``paths.data_dir``), with ``~`` expanded."""
    return Path(str(cfg.get("data_dir") or "data")).expanduser()


def with_transform(ds: Any, transform: Callable) -> Any:
    """A shallow copy of a torchvision-style dataset with another transform (shares the data)."""
    other = copy.copy(ds)
    other.transform = transform
    if hasattr(other, "transforms"):  # torchvision's VisionDataset keeps a combined copy too
        from torchvision.datasets.vision import StandardTransform

        other.transforms = StandardTransform(transform, getattr(other, "target_transform", None))
    return other


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def missing_data_error(
    name: str,
    path: Path,
    err: BaseException | None = None,
    *,
    layout: str = "",
    how: str = "",
    download: bool | None = None,
) -> DimError:
    """One-line error for a dataset that is absent, incomplete or could not be downloaded.

    Args:
        name: the dataset's display name.
        path: where it was expected.
        err: the underlying error (its first line is quoted).
        layout: what is expected at ``path`` (file names).
        how: how to obtain it (URL / archive to extract).
        download: whether a download was requested (True: it failed; False: it was not allowed).
    """
    where = f"{name} not found under {path}"
    if layout:
        where += f" (expected {layout})"
    if download is True:
        what = f"and the download failed ({first_line(err)})" if err else "and the download failed"
    elif download is False:
        what = "and data.download=false"
    else:
        what = f"and not downloadable ({first_line(err)})" if err else "and not downloadable"
    fix = how or "put the dataset there (data.data_dir=...)"
    hint = "set data.download=true on a machine with network, or " if download is False else ""
    return DimError(f"{where} {what}; {hint}{fix}, {OFFLINE}")
