"""MNIST-format (IDX) datasets read from the raw folder either unpacked or gzipped as shipped.

torchvision's MNIST and FashionMNIST read only the unpacked IDX files, and would unpack the
``.gz`` files only through their downloader, which checks the archives' md5 sums: repackaged
archives (the Debian package ``dataset-fashion-mnist`` recompresses the originals, so their md5
differs while the images are identical) would then be rejected and a download attempted.  These
subclasses accept either form and never write into the data folder, which may be read-only.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

# IDX type codes (third byte of the magic number) this reader accepts: MNIST-style files are uint8.
_UINT8 = 0x08


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file (``.gz`` or not) as a uint8 tensor of its declared shape.

    Written here rather than calling torchvision's reader because that one opens plain files only.
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UINT8:
        raise RuntimeError(f"{path} is not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise RuntimeError(f"{path} is truncated: {len(raw) - header} of {count} bytes")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy())


class _GzipAware:
    """Mixin over torchvision's MNIST family: find and load ``<stem>`` or ``<stem>.gz``."""

    folder: str  # torchvision's folder name (it would otherwise take the subclass's name)
    root: str
    resources: list[tuple[str, str]]
    train: bool

    @property
    def raw_folder(self) -> str:
        return str(Path(self.root) / self.folder / "raw")

    @property
    def processed_folder(self) -> str:
        return str(Path(self.root) / self.folder / "processed")

    def _file(self, stem: str) -> Path | None:
        folder = Path(self.raw_folder)
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def _stems(self) -> list[str]:
        return [Path(url).stem for url, _ in self.resources]  # "train-images-idx3-ubyte", ...

    def _check_exists(self) -> bool:
        return all(self._file(stem) is not None for stem in self._stems())

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if self.train else "t10k"
        images = self._file(f"{prefix}-images-idx3-ubyte")
        labels = self._file(f"{prefix}-labels-idx1-ubyte")
        assert images is not None and labels is not None  # _check_exists ran first
        data, targets = read_idx(images), read_idx(labels).long()
        if data.dim() != 3 or targets.dim() != 1 or len(data) != len(targets):
            raise RuntimeError(
                f"{images.name} / {labels.name}: {tuple(data.shape)} images for "
                f"{tuple(targets.shape)} labels"
            )
        return data, targets


class MNISTFiles(_GzipAware, datasets.MNIST):
    """torchvision's MNIST (``<root>/MNIST/raw``), reading its raw files gzipped or not."""

    folder = "MNIST"


class FashionMNISTFiles(_GzipAware, datasets.FashionMNIST):
    """torchvision's FashionMNIST (``<root>/FashionMNIST/raw``), gzipped or not."""

    folder = "FashionMNIST"
