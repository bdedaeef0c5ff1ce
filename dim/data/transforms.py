"""Image transforms shared by every PIL-image dataset: geometry, augmentation, normalisation.

The pipeline, in order (keys of the ``data`` config):

1. convert to ``L`` or ``RGB`` to match ``channels``;
2. ``center_crop`` (e.g. CelebA's faces: 140 of 178x218), then ``resize`` (shorter side);
3. to ``image_size``: training takes a random crop when ``augment.random_crop`` (STL-10: random
   64x64 crops of the 96x96 images) or ``augment.crop_padding`` > 0 (the CIFAR recipe); otherwise,
   and always for evaluation, a center crop.  A center crop larger than the image zero-pads it:
   MNIST's 28x28 digits become 32x32 with a 2-pixel black border;
4. ``augment.hflip`` (training only);
5. to a tensor, normalised with ``mean`` / ``std`` (per channel).  The statistics live in the data
   configs only (``configs/data/<name>.yaml``): a config without them (an older run's, or a dict
   built in Python) or with null gets those of the dataset's config file.

So every image tensor is exactly ``channels x image_size x image_size``.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence
from typing import Any

from dim.errors import DimError

Stats = tuple[Sequence[float], Sequence[float]]


def _data_configs():
    return importlib.resources.files("dim.configs") / "data"


@functools.cache
def config_stats(dataset: str) -> Stats:
    """``(mean, std)`` of ``configs/data/<dataset>.yaml``; the folder config's for other names."""
    from omegaconf import DictConfig, OmegaConf

    path = _data_configs() / f"{dataset}.yaml"
    cfg = OmegaConf.load(str(path if path.is_file() else _data_configs() / "folder.yaml"))
    assert isinstance(cfg, DictConfig)  # a data config is a mapping
    if cfg.get("mean") is None:  # digits, synthetic: normalised by their own source
        cfg = OmegaConf.load(str(_data_configs() / "folder.yaml"))
    return tuple(cfg.mean), tuple(cfg.std)


class ToMode:
    """Convert a PIL image to ``L`` (1 channel) or ``RGB`` (3); picklable for worker processes."""

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise DimError(f"data.channels must be 1 or 3, got {channels}")
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, img: Any) -> Any:
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ToMode({self.mode})"


def _per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    vals = tuple(float(v) for v in values)
    if len(vals) == channels:
        return vals
    if len(vals) == 1:
        return vals * channels
    if channels == 1:  # RGB statistics for a greyscale conversion: their mean is close enough
        return (sum(vals) / len(vals),)
    raise DimError(f"data.{what} has {len(vals)} values but the images have {channels} channels")


def normalisation(cfg: dict[str, Any], dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel: ``data.mean`` / ``data.std``, else the dataset config's."""
    channels = int(cfg.get("channels", 3))
    mean, std = config_stats(dataset)
    mean = cfg.get("mean") or mean
    std = cfg.get("std") or std
    std_c = _per_channel(std, channels, "std")
    if min(std_c) <= 0:
        raise DimError(f"data.std must be > 0, got {list(std_c)}")
    return _per_channel(mean, channels, "mean"), std_c


def image_transform(cfg: dict[str, Any], dataset: str, train: bool):
    """The torchvision transform of one split (see the module docstring for the pipeline)."""
    from torchvision import transforms as T

    size = int(cfg["image_size"])
    aug = (cfg.get("augment") or {}) if train else {}
    steps: list[Any] = [ToMode(int(cfg.get("channels", 3)))]
    if cfg.get("center_crop"):
        steps.append(T.CenterCrop(int(cfg["center_crop"])))
    if cfg.get("resize"):
        steps.append(T.Resize(int(cfg["resize"]), antialias=True))
    padding = int(aug.get("crop_padding") or 0)
    if aug.get("random_crop") or padding:
        steps.append(T.RandomCrop(size, padding=padding or None, pad_if_needed=True))
    else:
        steps.append(T.CenterCrop(size))
    if aug.get("hflip"):
        steps.append(T.RandomHorizontalFlip())
    mean, std = normalisation(cfg, dataset)
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def split_transforms(cfg: dict[str, Any], dataset: str):
    """``(train_transform, eval_transform)``."""
    return image_transform(cfg, dataset, True), image_transform(cfg, dataset, False)
