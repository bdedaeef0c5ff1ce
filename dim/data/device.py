"""Device-resident data: the whole dataset lives on the accelerator, batches are sliced there.

For datasets that fit in device memory (CIFAR, digits, Tiny ImageNet, STL-10 at 64 px) a
DataLoader with workers is the bottleneck of a small encoder on a fast GPU.  This DataModule keeps
the images on the device (uint8 where the source holds uint8, as CIFAR/MNIST do), and per batch
does the augmentation (random crop with padding, horizontal flip) and normalisation on the device.
It has the same interface as :class:`~dim.data.images.ImageDataModule`, including the training
order and exact mid-epoch resume of :mod:`dim.data.sampling`; under DDP each process takes its own
shard of a permutation shared by all processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from dim.data.sampling import epoch_order, shard
from dim.data.views import gather_crop, make_views
from dim.errors import DimError


def _normalize_stats(dataset: Dataset) -> tuple[Tensor, Tensor] | None:
    """Mean/std of the Normalize step in a torchvision dataset's transform, if any."""
    transform = getattr(dataset, "transform", None)
    for t in getattr(transform, "transforms", []):
        if type(t).__name__ == "Normalize":
            return torch.tensor(t.mean).view(1, -1, 1, 1), torch.tensor(t.std).view(1, -1, 1, 1)
    return None


def materialize(dataset: Dataset) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """(images, labels, stats): uint8 NCHW as stored + the normalisation stats of the dataset's
    transform when the source keeps uint8 arrays (``.data`` + ``.targets`` / ``.labels``, as
    torchvision's CIFAR, MNIST and STL-10 do); a TensorDataset's own tensors and ``stats=None``."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1].long(), None
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    stats = _normalize_stats(dataset)
    if data is None or targets is None or stats is None or np.asarray(data).dtype != np.uint8:
        hint = " or data.cache=true" if type(dataset).__name__ == "ImageList" else ""
        raise DimError(
            f"data_on_device=true needs a dataset stored as uint8 arrays (CIFAR, MNIST, STL-10, "
            f"digits, synthetic, a cached folder); {type(dataset).__name__} is not: use "
            f"data_on_device=false{hint}"
        )
    images = torch.as_tensor(np.asarray(data))
    if images.dim() == 3:  # N, H, W greyscale
        images = images.unsqueeze(1)
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):  # NHWC -> NCHW
        images = images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(np.asarray(targets)).long(), stats


def check_reproducible(
    cfg: dict[str, Any], images: Tensor, info: dict[str, Any], resized: bool = False
) -> None:
    """Refuse what the device path cannot do exactly like the torchvision transform does
    (``resized``: the stored images are already center-cropped and resized, as a folder's
    decode cache holds them)."""
    name = cfg.get("name")
    if (cfg.get("center_crop") or cfg.get("resize")) and not resized:
        raise DimError(
            f"data_on_device=true does not resize or center-crop, which {name} does; "
            "use data_on_device=false"
        )
    if images.dtype == torch.uint8 and images.shape[1] != info["channels"]:
        raise DimError(
            f"data_on_device=true keeps the stored {images.shape[1]} channel(s) but {name} is "
            f"configured with channels={info['channels']}: use data_on_device=false"
        )


class DeviceBatches:
    """An iterable of (images, labels) batches sliced from device tensors.

    Training batches follow :mod:`dim.data.sampling`: the epoch's order comes from ``(seed,
    epoch)``, this process takes its shard, a resumed epoch skips the batches already trained, and
    each batch's augmentation draws from a generator seeded per batch, so resume is exact.
    """

    def __init__(self, owner: DeviceDataModule, train: bool) -> None:
        self.owner, self.train = owner, train

    def __len__(self) -> int:
        o = self.owner
        n = o.tensors["train" if self.train else "val"][0].shape[0]
        if self.train:
            return (n // o.world_size) // o.batch_size
        return -(-n // o.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        o = self.owner
        x_all, y_all = o.tensors["train" if self.train else "val"]
        if not self.train:
            for b in range(len(self)):
                sel = slice(b * o.batch_size, (b + 1) * o.batch_size)
                yield o.prepare(x_all[sel], False), y_all[sel]
            return
        epoch, skip = o.position.start_epoch()
        perm, seeds = epoch_order(x_all.shape[0], o.seed, epoch)
        mine = shard(perm, o.rank, o.world_size)
        on_device = mine.to(x_all.device)  # one copy per epoch
        batch_seeds = seeds[mine[:: o.batch_size]].tolist()  # a batch's: its first sample's
        g = torch.Generator(device=x_all.device)  # one per epoch, re-seeded per batch
        for b in range(skip, len(self)):
            rows = on_device[b * o.batch_size : (b + 1) * o.batch_size]
            yield o.prepare(x_all[rows], True, g.manual_seed(batch_seeds[b])), y_all[rows]


class DeviceDataModule(pl.LightningDataModule):
    """Wraps an ImageDataModule's splits; same ``info`` and loaders, data on the device."""

    def __init__(self, base: Any) -> None:
        super().__init__()
        self.base = base
        self.batch_size = base.batch_size
        self.augment = dict(base.cfg.get("augment") or {})
        self.seed, self.position = base.seed, base.position
        self.rank, self.world_size = 0, 1
        self.tensors: dict[str, tuple[Tensor, Tensor]] = {}
        self.stats: tuple[Tensor, Tensor] | None = None
        self.view_stats: tuple[Tensor, Tensor] | None = None  # (mean, std) the views undo

    @property
    def info(self) -> dict[str, Any]:
        return self.base.info

    def setup(self, stage: str | None = None) -> None:
        device = torch.device("cpu")
        self.position.trainer = self.trainer
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        for name, ds in (("train", self.base.splits.train), ("val", self.base.splits.val)):
            x, y, stats = materialize(ds)
            check_reproducible(self.base.cfg, x, self.info, getattr(ds, "resized", False))
            self.tensors[name] = (x.to(device), y.to(device))
            if stats is not None:
                self.stats = (stats[0].to(device), stats[1].to(device))
        if self.base.views is not None:
            mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in self.base.view_stats)
            self.view_stats = (mean.to(device), std.to(device))

    def prepare(self, x: Tensor, train: bool, generator: torch.Generator | None = None) -> Tensor:
        """uint8 -> [0, 1] -> crop (random when training) -> flip -> normalise, on the device.

        Mirrors the torchvision pipeline of :mod:`dim.data.transforms`: RandomCrop(size,
        padding, pad_if_needed) when ``augment.random_crop`` or ``crop_padding`` is set for
        training, else CenterCrop(size) (which zero-pads smaller images, e.g. MNIST 28 -> 32).
        """
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        size = int(self.info["image_size"])
        pad = int(self.augment.get("crop_padding") or 0)
        if train and (pad or self.augment.get("random_crop")):
            x = random_crop(x, pad, size, generator)
        elif x.shape[-1] != size or x.shape[-2] != size:
            x = center_crop(x, size)
        if train:
            if self.augment.get("hflip"):
                flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.stats is not None:
            x = (x - self.stats[0]) / self.stats[1]
        if train and self.view_stats is not None:  # (N, 2, C, H, W), as the CPU loader gives
            x = make_views(x, *self.view_stats, self.base.views, generator)
        return x

    def train_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self, train=True)

    def val_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self, train=False)

    def state_dict(self) -> dict[str, Any]:
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)


def center_crop(x: Tensor, size: int) -> Tensor:
    """torchvision's CenterCrop on a batch: zero-pads images smaller than ``size`` first."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def random_crop(
    x: Tensor, pad: int, size: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Per-image random ``size`` crop of a zero-padded batch (one gather, no Python loop)."""
    n, _, h, w = x.shape
    size = size or h
    padded = F.pad(x, (pad, pad, pad, pad))
    if padded.shape[-1] < size or padded.shape[-2] < size:  # pad_if_needed
        padded = center_crop(padded, max(size, padded.shape[-1], padded.shape[-2]))
    ph, pw = padded.shape[-2:]
    dy = torch.randint(0, ph - size + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, pw - size + 1, (n,), device=x.device, generator=generator)
    return gather_crop(padded, dy, dx, size, size)
