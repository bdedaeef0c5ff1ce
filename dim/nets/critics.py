"""MI critics of DIM and the prior discriminator (docs/math.md#critics). Bound-agnostic.

Every critic returns a score matrix ``scores[m, c]`` = T(Y_m, candidate c) and the boolean mask of
positive (joint) pairs, the form every function of :mod:`dim.objective.bounds` takes. Local
candidates are (image n, location l) flattened as ``c = n * L + l``; the positives of row m are
image m's own locations, every location of every other image is a negative (the official DIM
negatives).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TypeAlias

import torch
from torch import Tensor, nn

from dim.nets.mlp import mlp


class MIEncoderNet(nn.Module):
    """The official 1x1 "encode" net: linear -> BN -> ReLU -> linear, + linear shortcut, LayerNorm.

    Works on channel-last features of any leading shape (a location is a 1x1 conv = a linear map).
    """

    def __init__(self, in_dim: int, units: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Linear(in_dim, units, bias=False),
            nn.BatchNorm1d(units),
            nn.ReLU(inplace=True),
            nn.Linear(units, units),
        )
        self.shortcut = nn.Linear(in_dim, units)
        self.norm = nn.LayerNorm(units)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = self.norm(self.block(flat) + self.shortcut(flat))
        return out.reshape(*x.shape[:-1], -1)


def local_pos_mask(
    n_rows: int,
    n_images: int,
    n_locations: int,
    row_offset: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Mask (n_rows, n_images * n_locations): row m's positives are image (m + row_offset)'s.

    Built where it is used (for B=256 and 64 locations it is 4 MB: a host-to-device copy of it
    per step cost a third of a millisecond on an H100).
    """
    images = torch.arange(n_images * n_locations, device=device) // n_locations
    return images[None, :] == (torch.arange(n_rows, device=device) + row_offset)[:, None]


def _default_scale(units: int, scale: float | None) -> float:
    # Dot products of two LayerNorm'd vectors grow like sqrt(units); 1/sqrt(units) keeps the
    # initial scores O(1) so bounds do not start saturated (as AMDIM does).
    return 1.0 / math.sqrt(units) if scale is None else float(scale)


class DotLocalCritic(nn.Module):
    """Encode-and-dot-product local critic (official DIM): score = <L_{n,l}, G_m> * scale."""

    def __init__(self, local_channels: int, y_dim: int, units: int = 2048, scale=None) -> None:
        super().__init__()
        self.local_net = MIEncoderNet(local_channels, units)
        self.y_net = MIEncoderNet(y_dim, units)
        self.scale = _default_scale(units, scale)

    def encode_local(self, local: Tensor) -> Tensor:
        """Locations (B, L, C) -> encoded locations (B, L, U)."""
        return self.local_net(local)

    def encode_y(self, y: Tensor) -> Tensor:
        return self.y_net(y)

    def score(self, local_enc: Tensor, y_enc: Tensor) -> Tensor:
        """Encoded locations (N, L, U) x encoded Y (M, U) -> scores (M, N * L)."""
        return y_enc @ local_enc.reshape(-1, local_enc.shape[-1]).T * self.scale


class ConcatLocalCritic(nn.Module):
    """Concat-and-convolve critic (popular ports): tile Y over the map, concat, 1x1 convs -> 1.

    All (Y_m, location (n, l)) pairs are scored, not just one shifted negative: the first layer is
    linear in the concatenation, so W[l; y] = W_l l + W_y y is computed once per location and once
    per Y and broadcast, which costs M * N * L * hidden memory for the hidden layer.
    """

    def __init__(self, local_channels: int, y_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.local_in = nn.Linear(local_channels, hidden)
        self.y_in = nn.Linear(y_dim, hidden, bias=False)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def encode_local(self, local: Tensor) -> Tensor:
        return self.local_in(local)

    def encode_y(self, y: Tensor) -> Tensor:
        return self.y_in(y)

    def score(self, local_enc: Tensor, y_enc: Tensor) -> Tensor:
        flat = local_enc.reshape(-1, local_enc.shape[-1])
        return self.rest(flat[None, :, :] + y_enc[:, None, :]).squeeze(-1)


# The local critics (``model.critic``): ``encode_local``, ``encode_y`` and ``score``.
LocalCritic: TypeAlias = "DotLocalCritic | ConcatLocalCritic"


class GlobalCritic(nn.Module):
    """Official global critic: the local map through its own copy of the remaining encoder
    layers to ``units``; Y through an encode net; score = dot product (all pairs in the batch)."""

    def __init__(self, head: nn.Module, y_dim: int, units: int = 2048, scale=None) -> None:
        super().__init__()
        self.head = head
        self.y_net = MIEncoderNet(y_dim, units)
        self.scale = _default_scale(units, scale)

    def encode_x(self, local_map: Tensor) -> Tensor:
        return self.head(local_map)

    def encode_y(self, y: Tensor) -> Tensor:
        return self.y_net(y)

    def score(self, x_enc: Tensor, y_enc: Tensor) -> Tensor:
        """(N, U) x (M, U) -> scores (M, N); positives on the diagonal."""
        return y_enc @ x_enc.T * self.scale


class PriorDiscriminator(nn.Module):
    """D of the prior-matching game: MLP y_dim -> 1000 -> 200 -> 1, returns logits."""

    def __init__(
        self, y_dim: int = 64, hidden: tuple[int, ...] = (1000, 200), spectral_norm: bool = False
    ) -> None:
        super().__init__()
        self.net = mlp(y_dim, hidden, 1, partial(nn.ReLU, inplace=True))  # keys net.0.weight, ...
        if spectral_norm:  # each linear layer's weight divided by its largest singular value
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    nn.utils.parametrizations.spectral_norm(layer)
        for param in self.net.parameters():
            param.register_hook(_standard_strides)

    def forward(self, v: Tensor) -> Tensor:
        return self.net(v).squeeze(-1)


def _standard_strides(grad: Tensor) -> Tensor:
    """The gradient-penalty's double backward gives the last layer's (1, H) weight a gradient
    with strides (1, 1): valid, but DDP's reducer wants the parameter's own (H, 1) and warns (and
    copies) every step.  Re-laid out here, once per step, on a tensor of H numbers."""
    expected: list[int] = []
    step = 1
    for size in reversed(grad.shape):
        expected.insert(0, step)
        step *= size
    if list(grad.stride()) == expected:
        return grad
    return grad.clone(memory_format=torch.contiguous_format)
