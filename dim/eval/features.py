"""Frozen features of a dataset split: the taps conv / fc / y of an encoder, plus labels.

Every evaluation protocol works on features extracted once with the encoder in eval mode (batch
norm uses its running statistics, no gradient), so the encoder is frozen by construction and
the protocols themselves are cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dim.data.base import dataset_len
from dim.errors import DimError
from dim.nets.probes import TAPS


@dataclass
class Features:
    """Features of ``N`` images. ``conv`` keeps its map shape (N, C, H, W); labels are int64.

    A label of -1 marks an unlabelled image.
    """

    conv: Tensor
    fc: Tensor
    y: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def flat(self, tap: str) -> Tensor:
        """The features of ``tap`` as an (N, D) matrix (the conv map is flattened)."""
        if tap not in TAPS:
            raise DimError(f"unknown feature '{tap}'; choose among {', '.join(TAPS)}")
        return getattr(self, tap).flatten(1)

    def subset(self, index: Tensor) -> Features:
        """The rows ``index`` of every array."""
        return Features(self.conv[index], self.fc[index], self.y[index], self.labels[index])

    def labelled(self) -> Features:
        """Only the images whose label is >= 0."""
        return self.subset(torch.nonzero(self.labels >= 0).flatten())


class Indexed(Dataset):
    """Yields ``(image, index)``, so that shuffled batches can be matched with cached features."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return dataset_len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.dataset[i][0], i


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; any other value is passed to torch."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DimError(f"device={name}: {str(err).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DimError(f"device={name} but CUDA is not available; use device=cpu")
    return device


def _head(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= dataset_len(dataset):
        return dataset
    return torch.utils.data.Subset(dataset, range(int(limit)))


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    num_workers: int = 0,
) -> Features:
    """Encode a dataset of ``(image, label)`` pairs in order, with the encoder frozen.

    Args:
        encoder: a DIM encoder (forward returns {"local", "conv", "fc", "y"}).
        dataset: yields ``(image, label)``; label -1 = unlabelled.
        batch_size: images per forward pass.
        device: where the encoder runs; features come back as float32 on the CPU.
        limit: encode only the first ``limit`` images (None = all).
        num_workers: DataLoader workers.

    Returns:
        :class:`Features` in dataset order.
    """
    dataset = _head(dataset, limit)
    if dataset_len(dataset) == 0:
        raise DimError("the dataset split is empty: nothing to encode")
    was_training = encoder.training
    encoder.eval().to(device)
    # Its own generator: iterating a DataLoader draws a seed from the global RNG otherwise, and
    # evaluation during or after training must not move the training RNG (exact resume).
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    parts: dict[str, list[Tensor]] = {"conv": [], "fc": [], "y": [], "labels": []}
    try:
        for images, labels in loader:
            out = encoder(images.to(device).float())
            for tap in TAPS:
                parts[tap].append(out[tap].float().cpu())
            parts["labels"].append(torch.as_tensor(labels).long().cpu())
    finally:
        encoder.train(was_training)
    return Features(**{k: torch.cat(v) for k, v in parts.items()})


@torch.no_grad()
def stack_images(dataset: Dataset, limit: int | None = None, batch_size: int = 512) -> Tensor:
    """The first ``limit`` images of a dataset as one float32 tensor (N, C, H, W)."""
    loader = DataLoader(
        _head(dataset, limit), batch_size=batch_size, shuffle=False, generator=torch.Generator()
    )
    return torch.cat([images.float() for images, _ in loader])
