"""The AMDIM encoder (Bachman, Hjelm & Buchwalter 2019) and its 1x1 embedding nets.

No convolution is padded, so every location of a feature map sees a controlled window of the
image: on 32x32 inputs the maps are 7x7 (``local``), 5x5 (``conv``), 3x3 (``fc``) and finally the
1x1 global feature (``y``, ``n_rkhs`` units, batch-normalised).  64x64 inputs get one more strided
stage and twice the width (up to ``8 * ndf``).  docs/methods.md#amdim lists the layers.

The encoder fits :class:`~dim.nets.encoders.Encoder`'s four taps, so probes, evaluation, export and
``dim.load_encoder`` treat it like any other encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _maybe_bn(channels: int, use_bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if use_bn else nn.Identity()


def whole_window_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, as one matrix product when the kernel covers the whole unpadded input (a 1x1
    output: the last unit of the encoder, 3x3 -> 1x1, and the 1x1 convolutions after it).

    The same sums in another order; on a CPU oneDNN's convolution of that shape ran ~10x slower
    per FLOP than the product (forward + backward of the 3x3 -> 1x1 unit at 128 images: 900 ms
    against 118 ms on one core), a sixth of an AMDIM step.  Flattened in the input's memory
    order (H, W, C for channels-last), so input and weight are read in place."""
    size = tuple(x.shape[-2:])
    if (
        size != tuple(conv.weight.shape[-2:])
        or conv.padding != (0, 0)
        or conv.dilation != (1, 1)
        or conv.groups != 1
    ):
        return conv(x)
    n, out = x.shape[0], conv.out_channels
    if size != (1, 1) and x.is_contiguous(memory_format=torch.channels_last):
        flat = x.permute(0, 2, 3, 1).reshape(n, -1)
        weight = conv.weight.permute(0, 2, 3, 1).reshape(out, -1)
    else:
        flat, weight = x.reshape(n, -1), conv.weight.reshape(out, -1)
    return F.linear(flat, weight, conv.bias).view(n, out, 1, 1)


class ResUnit(nn.Module):
    """AMDIM's residual unit: conv(k, stride) -> [BN] -> ReLU -> 1x1 conv -> [BN], plus a
    shortcut over the same window: average pooling (channels zero-padded when growing), or a
    strided convolution when the unit shrinks the channels."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, use_bn: bool) -> None:
        super().__init__()
        self.k, self.stride, self.grow = k, stride, cout - cin
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, k, stride, bias=False),
            _maybe_bn(cout, use_bn),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 1, bias=False),
            _maybe_bn(cout, use_bn),
        )
        self.shrink = nn.Conv2d(cin, cout, k, stride) if cout < cin else None

    def forward(self, x: Tensor) -> Tensor:
        if self.shrink is not None:
            shortcut = self.shrink(x)
        else:
            # a 1x1 average is x itself: no pooling copy forward nor its backward (most of the
            # encoder's units are 1x1; the copies were ~5 % of a CPU step)
            one = self.k == 1 and self.stride == 1
            shortcut = x if one else F.avg_pool2d(x, self.k, self.stride)
            if self.grow > 0:
                shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.grow))
        h = x
        for layer in self.body:
            h = whole_window_conv(layer, h) if isinstance(layer, nn.Conv2d) else layer(h)
        return h + shortcut


def res_block(cin: int, cout: int, k: int, stride: int, depth: int, use_bn: bool) -> nn.Sequential:
    """One k x k unit that changes size and width, then ``depth - 1`` 1x1 units."""
    units = [ResUnit(cin, cout, k, stride, use_bn)]
    units += [ResUnit(cout, cout, 1, 1, use_bn) for _ in range(depth - 1)]
    return nn.Sequential(*units)


def amdim_stages(
    cin: int, size: int, ndf: int = 128, n_depth: int = 3, use_bn: bool = False
) -> tuple[nn.Module, nn.Module]:
    """``(to_local, to_conv)``: images -> the 7x7 map -> the 5x5 map."""
    stem = nn.Sequential(nn.Conv2d(cin, ndf, 3), nn.ReLU(inplace=True))
    if size == 32:  # 32 -> 30 -> 14 -> 7
        width = 4 * ndf
        layers = [
            stem,
            ResUnit(ndf, ndf, 1, 1, use_bn),
            res_block(ndf, 2 * ndf, 4, 2, n_depth, use_bn),
            res_block(2 * ndf, width, 2, 2, n_depth, use_bn),
        ]
    else:  # 64 -> 62 -> 30 -> 14 -> 7
        width = 8 * ndf
        layers = [
            stem,
            res_block(ndf, 2 * ndf, 4, 2, n_depth, use_bn),
            res_block(2 * ndf, 4 * ndf, 4, 2, n_depth, use_bn),
            res_block(4 * ndf, width, 2, 2, n_depth, use_bn),
        ]
    to_local = nn.Sequential(*layers, _maybe_bn(width, use_bn))
    return to_local, res_block(width, width, 3, 1, n_depth, use_bn)


def amdim_tail(
    conv_shape: tuple[int, ...],
    y_dim: int,
    ndf: int = 128,
    n_depth: int = 3,
    use_bn: bool = False,
) -> tuple[nn.Module, int, nn.Module]:
    """``(to_fc, fc_dim, to_y)``: the 5x5 map -> the 3x3 map (``fc``) -> the 1x1 global feature.

    ``y`` is the batch-normalised output of one 3x3 unit to ``y_dim`` (= AMDIM's ``n_rkhs``).
    """
    width = conv_shape[0]
    to_fc = res_block(width, width, 3, 1, n_depth, use_bn)
    to_y = nn.Sequential(ResUnit(width, y_dim, 3, 1, use_bn), nn.BatchNorm2d(y_dim), nn.Flatten())
    return to_fc, width * 9, to_y


class EmbeddingNet(nn.Module):
    """AMDIM's 1x1 embedding of a feature map into the score space (its "fake RKHS" net):
    conv1x1 -> BN -> ReLU -> conv1x1, plus a 1x1 shortcut started near the identity, then BN."""

    def __init__(self, cin: int, units: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, units, 1, bias=False),
            nn.BatchNorm2d(units),
            nn.ReLU(inplace=True),
            nn.Conv2d(units, units, 1, bias=False),
        )
        self.shortcut = nn.Conv2d(cin, units, 1)
        if units >= cin:  # identity on the first cin channels, small noise elsewhere
            with torch.no_grad():
                self.shortcut.weight.uniform_(-0.01, 0.01)
                idx = torch.arange(cin)
                self.shortcut.weight[idx, idx, 0, 0] = 1.0
        self.norm = nn.BatchNorm2d(units)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.body(x) + self.shortcut(x))
