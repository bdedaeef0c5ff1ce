"""MS-SSIM of images reconstructed from Y by an L2-trained decoder (paper §4.1, Table 3).

Decoder (docs/math.md): Linear(Y -> 256*4*4) -> BN -> ReLU, then transposed convolutions
(k4 s2 p1, each with BN + ReLU) 256 -> 256 -> 128 -> 64 doubling the size up to the image size,
then a 3x3 conv to the image channels and tanh.  Images are min-max mapped to [-1, 1] with the
training split's range for the decoder, and to [0, 1] for MS-SSIM (torchmetrics).

MS-SSIM needs images large enough for its scales: torchmetrics requires
``size // (scales - 1)**2 > kernel_size - 1`` and ``size >= 2**scales``.  The standard setting
(5 scales, 11x11 Gaussian) needs 160x160 images; for 32x32 and 64x64 images we keep a 7x7
Gaussian (sigma 1.5) and use the largest number of scales that fits (3 at 32x32, 4 at 64x64),
with the first betas of the standard five renormalised to sum to 1.  Numbers from different
settings are not comparable.
"""

from __future__ import annotations

import math
from functools import partial
from time import perf_counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dim.data.base import dataset_len
from dim.errors import DimError
from dim.eval.classifiers import seeded
from dim.eval.context import EvalContext
from dim.eval.features import Indexed
from dim.eval.report import ProtocolResult, Stat

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def msssim_settings(
    image_size: int, kernel_size: int = 7, scales: int | None = None
) -> tuple[int, tuple[float, ...]]:
    """(kernel_size, betas) valid for ``image_size`` (see the module docstring)."""

    def fits(n: int) -> bool:
        return image_size >= 2**n and image_size // max(1, n - 1) ** 2 > kernel_size - 1

    if scales is None:
        scales = next((n for n in range(5, 0, -1) if fits(n)), 0)
    if scales < 1 or scales > 5 or not fits(scales):
        raise DimError(
            f"eval.msssim: {scales} scales with kernel {kernel_size} do not fit {image_size}x"
            f"{image_size} images; lower eval.msssim.kernel_size or eval.msssim.scales"
        )
    betas = STANDARD_BETAS[:scales]
    return kernel_size, tuple(b / sum(betas) for b in betas)


class Decoder(nn.Module):
    """The paper's decoder from Y to an image in [-1, 1] (tanh output)."""

    def __init__(self, y_dim: int, channels: int, image_size: int) -> None:
        super().__init__()
        ups = int(round(math.log2(image_size / 4)))
        if 4 * 2**ups != image_size:
            raise DimError(
                f"eval=msssim: the decoder needs a power-of-two image size, got {image_size}"
            )
        widths = [256, 256, 128, 64]
        widths += [64] * max(0, ups + 1 - len(widths))
        self.fc = nn.Sequential(
            nn.Linear(y_dim, 256 * 4 * 4), nn.BatchNorm1d(256 * 4 * 4), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:ups], widths[1 : ups + 1]):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.Conv2d(widths[ups], channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, y: Tensor) -> Tensor:
        return self.body(self.fc(y).view(len(y), 256, 4, 4))


def run(ctx: EvalContext, cfg: dict[str, Any]) -> ProtocolResult:
    """Train the decoder on the train split, score the test split.

    Values: ``y`` = mean MS-SSIM over test images (std across images), ``mse/y`` = mean squared
    error on the [0, 1] scale.

    Args:
        ctx: the evaluation context.
        cfg: the options of ``configs/eval/msssim.yaml``.

    Returns:
        MS-SSIM and MSE of the reconstructions.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    start = perf_counter()
    size, channels = ctx.splits.image_size, ctx.splits.channels
    kernel, betas = msssim_settings(size, int(cfg["kernel_size"]), cfg["scales"])
    y_train, y_test = ctx.features("train").y, ctx.features("test").y
    train_set, test_set = ctx.dataset("train"), ctx.dataset("test")
    lo, hi = _range(train_set)

    def to_unit(x: Tensor) -> Tensor:
        return ((x - lo) / (hi - lo)).clamp(0, 1)

    decoder = seeded(ctx.seed, partial(Decoder, y_train.shape[1], channels, size)).to(ctx.device)
    opt = torch.optim.Adam(decoder.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(ctx.seed)
    loader = DataLoader(
        Indexed(train_set),
        batch_size=int(cfg["batch_size"]),
        shuffle=True,
        drop_last=True,
        generator=gen,
    )
    if len(loader) == 0:
        raise DimError("eval=msssim: the train split is smaller than one batch")
    decoder.train()
    for epoch in range(int(cfg["epochs"])):
        total = 0.0
        for images, idx in loader:
            target = to_unit(images.to(ctx.device).float()) * 2 - 1
            loss = F.mse_loss(decoder(y_train[idx].to(ctx.device)), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        ctx.curve("eval/msssim/train_mse", total / len(loader) / 4, epoch)  # on the [0, 1] scale
    decoder.eval()
    scores, errors = [], []
    with torch.no_grad():
        for images, idx in DataLoader(Indexed(test_set), batch_size=256, shuffle=False):
            target = to_unit(images.to(ctx.device).float())
            recon = (decoder(y_test[idx].to(ctx.device)) + 1) / 2
            scores.append(
                multiscale_structural_similarity_index_measure(
                    recon,
                    target,
                    kernel_size=kernel,
                    sigma=float(cfg["sigma"]),
                    betas=betas,
                    data_range=1.0,
                    reduction="none",
                    normalize="relu",
                ).cpu()
            )
            errors.append(((recon - target) ** 2).flatten(1).mean(1).cpu())
    ms, mse = torch.cat(scores), torch.cat(errors)
    settings = {**cfg, "kernel_size": kernel, "betas": list(betas)}
    values = {
        "y": Stat(float(ms.mean()), float(ms.std()) if len(ms) > 1 else None),
        "mse/y": Stat(float(mse.mean()), float(mse.std()) if len(mse) > 1 else None),
    }
    return ProtocolResult("ms-ssim", values, settings, perf_counter() - start, {"mse": "mse"})


@torch.no_grad()
def _range(dataset: torch.utils.data.Dataset, limit: int = 2048) -> tuple[float, float]:
    """Min and max pixel value over the first ``limit`` training images."""
    head = torch.utils.data.Subset(dataset, range(min(limit, dataset_len(dataset))))
    lo, hi = math.inf, -math.inf
    for images, _ in DataLoader(head, batch_size=512):
        lo, hi = min(lo, float(images.min())), max(hi, float(images.max()))
    if not hi > lo:
        raise DimError("eval=msssim: the training images are constant")
    return lo, hi
