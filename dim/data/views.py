"""Two augmented views of every training image, for methods that contrast views (AMDIM).

One horizontal flip is shared by both views (AMDIM's choice; ``flip: each`` flips each view on
its own, as SimCLR does); then each view gets its own crop (a translation with reflection
padding, or a random resized crop), colour jitter, random greyscale and, if asked, random erasing
(docs/methods.md#amdim).
The functions work on *batches* of normalised image tensors with per-image random parameters, on
any device: the CPU loader applies them to each sample (inside
:class:`~dim.data.sampling.SeededSamples`, whose per-sample seed makes them exact on resume), the
device-resident path to whole batches on the accelerator.  torchvision's transforms draw one set
of parameters per call, so a batch would share one jitter; hence our own batched versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from dim.data.base import dataset_len
from dim.errors import DimError

#: luminance weights of RGB -> greyscale (ITU-R 601-2, as torchvision and PIL use)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewOptions:
    """How each view is augmented (``method.views`` of the training config)."""

    crop: str = "translate"  # translate (CIFAR) | resized (STL-10, ImageNet)
    translate: int = 4  # largest shift in pixels, each axis (reflection padding)
    p_translate: float = 0.8
    scale: tuple[float, float] = (0.3, 1.0)  # resized crop: range of the area fraction
    ratio: tuple[float, float] = (0.7, 1.4)  # resized crop: range of the aspect ratio
    rotate: float = 0.0  # largest rotation in degrees, either way (not in the paper: digits)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)  # bright, contr, sat, hue
    p_jitter: float = 0.8
    p_gray: float = 0.25
    flip: str = "shared"  # shared: one flip (p 0.5) for both views | each: one per view | none
    p_erase: float = 0.0  # random erasing (Zhong et al. 2020): probability per view
    erase_scale: tuple[float, float] = (0.02, 0.33)  # range of the erased area fraction

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> ViewOptions | None:
        """The options of a ``views`` mapping; None (single view) for a missing or null one."""
        if not cfg:
            return None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise DimError(f"method.views has no key '{unknown[0]}'; keys: {', '.join(known)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list | tuple) else v for k, v in cfg.items()
        }
        if isinstance(values.get("flip"), bool):  # the older spelling: true = shared
            values["flip"] = "shared" if values["flip"] else "none"
        opts = cls(**values)
        if opts.flip not in ("shared", "each", "none"):
            raise DimError(f"method.views.flip must be shared, each or none, got '{opts.flip}'")
        if opts.crop not in ("translate", "resized"):
            raise DimError(f"method.views.crop must be translate or resized, got '{opts.crop}'")
        for name in ("p_translate", "p_jitter", "p_gray", "p_erase"):
            if not 0 <= getattr(opts, name) <= 1:
                raise DimError(f"method.views.{name} must be in [0, 1], got {getattr(opts, name)}")
        low, high = opts.erase_scale
        if not 0 < low <= high <= 1:
            raise DimError(
                f"method.views.erase_scale must be [low, high] with 0 < low <= high <= 1, "
                f"got {list(opts.erase_scale)}"
            )
        return opts


def gather_crop(padded: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Per-image ``h x w`` windows of a batch starting at (``top``, ``left``): one gather."""
    n, c = padded.shape[:2]
    dev = padded.device
    rows = (top[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chans = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _uniform(n: int, low: float, high: float, like: Tensor, generator) -> Tensor:
    u = torch.rand(n, device=like.device, generator=generator, dtype=like.dtype)
    return low + (high - low) * u


def _chance(n: int, p: float, like: Tensor, generator) -> Tensor:
    return torch.rand(n, device=like.device, generator=generator) < p


def translate(x: Tensor, shift: int, p: float, generator=None) -> Tensor:
    """Shift each image by up to ``shift`` px per axis (probability ``p``), reflection padded."""
    n, _, h, w = x.shape
    if shift <= 0:
        return x
    padded = F.pad(x, (shift,) * 4, mode="reflect")
    move = _chance(n, p, x, generator)
    top = torch.randint(0, 2 * shift + 1, (n,), device=x.device, generator=generator)
    left = torch.randint(0, 2 * shift + 1, (n,), device=x.device, generator=generator)
    centre = torch.full_like(top, shift)
    top, left = torch.where(move, top, centre), torch.where(move, left, centre)
    return gather_crop(padded, top, left, h, w)


def _box_sides(
    n: int, scale: tuple[float, float], ratio: tuple[float, float], like: Tensor, generator
) -> tuple[Tensor, Tensor]:
    """Width and height of ``n`` random boxes, as fractions of the image's sides (for a square
    image): area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``."""
    area = _uniform(n, scale[0], scale[1], like, generator)
    r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), like, generator).exp()
    return torch.sqrt(area * r), torch.sqrt(area / r)


def resized_crop(x: Tensor, scale: tuple[float, float], ratio: tuple[float, float], generator=None):
    """A random crop of area fraction in ``scale`` and aspect ratio in ``ratio`` per image,
    resized (bilinear) to the input size.  A box that would leave the image is shrunk to fit
    (torchvision retries instead; the distributions differ only at the extremes)."""
    n = x.shape[0]
    width, height = _box_sides(n, scale, ratio, x, generator)
    width, height = width.clamp(max=1.0), height.clamp(max=1.0)
    cx = (2 * _uniform(n, 0, 1, x, generator) - 1) * (1 - width)
    cy = (2 * _uniform(n, 0, 1, x, generator) - 1) * (1 - height)
    zero = torch.zeros_like(width)
    theta = torch.stack([torch.stack([width, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rotate(x: Tensor, degrees: float, generator=None) -> Tensor:
    """Rotate each image by an angle uniform in [-degrees, degrees] (bilinear, reflection)."""
    n = x.shape[0]
    angle = torch.deg2rad(_uniform(n, -degrees, degrees, x, generator))
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grey(x: Tensor) -> Tensor:
    """Luminance (N, 1, H, W) of RGB images; greyscale images as they are."""
    if x.shape[1] != 3:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def shift_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of RGB images in [0, 1] by ``shift`` (fractions of a turn, per image)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    sat = delta / maxc.clamp_min(1e-8)
    d = delta.clamp_min(1e-8)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    sector = torch.floor(hue * 6.0)
    f = hue * 6.0 - sector
    v = maxc
    p, q, t = v * (1 - sat), v * (1 - sat * f), v * (1 - sat * (1 - f))
    idx = sector.long().remainder(6).unsqueeze(0)
    pick = lambda *c: torch.stack(c).gather(0, idx).squeeze(0)  # noqa: E731
    return torch.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], 1)


def colour_jitter(x: Tensor, strength: tuple[float, ...], p: float, generator=None) -> Tensor:
    """Brightness, contrast, saturation and hue jitter (in that order) of images in [0, 1], each
    image with probability ``p``; factors uniform in [1 - s, 1 + s], the hue shift in [-s, s]."""
    n = x.shape[0]
    on = _chance(n, p, x, generator).to(x.dtype)

    def factor(s: float) -> Tensor:
        return (1 + on * _uniform(n, -s, s, x, generator)).view(-1, 1, 1, 1)

    bright, contrast, saturation, hue = strength
    x = (x * factor(bright)).clamp(0, 1)
    mean = grey(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * factor(contrast) + mean).clamp(0, 1)
    if x.shape[1] == 3:
        g = grey(x)
        x = ((x - g) * factor(saturation) + g).clamp(0, 1)
        if hue > 0:
            x = shift_hue(x, on * _uniform(n, -hue, hue, x, generator))
    return x


def erase(
    x: Tensor, p: float, scale: tuple[float, float], ratio: tuple[float, float], generator=None
) -> Tensor:
    """Random erasing: with probability ``p`` a box of area fraction in ``scale`` and aspect
    ratio in ``ratio`` (log-uniform) set to 0, the dataset mean of normalised images.  Boxes
    that would leave the image are shrunk to fit (torchvision retries instead)."""
    n, _, h, w = x.shape
    on = _chance(n, p, x, generator)
    width, height = _box_sides(n, scale, ratio, x, generator)
    side = math.sqrt(h * w)  # sides in pixels: the box's area is a fraction of h * w
    bh = (height * side).round().clamp(1, h).long()
    bw = (width * side).round().clamp(1, w).long()
    top = (_uniform(n, 0, 1, x, generator) * (h - bh + 1)).long()  # in [0, h - bh]
    left = (_uniform(n, 0, 1, x, generator) * (w - bw + 1)).long()
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])  # (N, W)
    box = (in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None])[:, None]
    return x.masked_fill(box, 0.0)


def _flip(x: Tensor, generator) -> Tensor:
    """Each image mirrored left-right with probability 0.5."""
    flip = _chance(x.shape[0], 0.5, x, generator).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def make_views(x: Tensor, mean: Tensor, std: Tensor, opts: ViewOptions, generator=None) -> Tensor:
    """Two views ``(N, 2, C, H, W)`` of a batch of normalised images ``(N, C, H, W)``.

    ``mean`` and ``std`` (broadcastable to the batch) are the normalisation of ``x``: jitter and
    greyscale act on the [0, 1] pixels, and the views come back normalised the same way.
    """
    n = x.shape[0]
    if opts.flip == "shared":
        x = _flip(x, generator)
    views = []
    for _ in range(2):
        v = _flip(x, generator) if opts.flip == "each" else x
        if opts.crop == "translate":
            v = translate(v, opts.translate, opts.p_translate, generator)
        else:
            v = resized_crop(v, opts.scale, opts.ratio, generator)
        if opts.rotate > 0:
            v = rotate(v, opts.rotate, generator)
        v = colour_jitter((v * std + mean).clamp(0, 1), opts.jitter, opts.p_jitter, generator)
        if v.shape[1] == 3 and opts.p_gray > 0:
            to_grey = _chance(n, opts.p_gray, v, generator).view(-1, 1, 1, 1)
            v = torch.where(to_grey, grey(v).expand_as(v), v)
        v = (v - mean) / std
        if opts.p_erase > 0:
            v = erase(v, opts.p_erase, opts.erase_scale, (0.3, 3.3), generator)
        views.append(v)
    return torch.stack(views, 1)


class TwoViews(Dataset):
    """A dataset whose items are ``(views (2, C, H, W), label)`` of another's ``(image, label)``.

    The random draws use the CPU torch RNG, which :class:`~dim.data.sampling.SeededSamples`
    seeds per sample: the views of a sample depend only on ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Dataset, opts: ViewOptions, stats: tuple[Any, Any]) -> None:
        self.dataset, self.opts = dataset, opts
        self.mean = torch.tensor(stats[0], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(stats[1], dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return dataset_len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Any]:
        image, label = self.dataset[index]
        return make_views(image[None], self.mean, self.std, self.opts)[0], label
