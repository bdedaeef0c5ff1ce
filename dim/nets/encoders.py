"""DIM encoders (docs/math.md#architectures). Each maps images to {"local", "conv", "fc", "y"}.

An encoder is three stages: ``to_local`` (images -> local feature map used by the local MI term),
``to_conv`` (local map -> last conv map, the "conv" classifier tap) and ``to_fc`` (flatten -> fully
connected layers, the "fc" tap), then a linear layer to Y.  The global critic of the official code
re-uses the *architecture* of ``to_conv`` + ``to_fc`` with fresh weights: see
:meth:`Encoder.make_global_head`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dim.errors import DimError
from dim.nets.amdim import amdim_stages, amdim_tail


def conv_bn_relu(cin: int, cout: int, k: int, s: int, p: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, p, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 reduce -> 3x3 (stride) -> 1x1 expand, projection shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _res_stage(cin: int, mid: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(cin, mid, cout, stride)]
    layers += [Bottleneck(cout, mid, cout, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Arch:
    """How to build one encoder family: conv stages, fc widths and the image sizes it accepts."""

    stages: Callable[..., tuple[nn.Module, nn.Module]]  # (in_channels, image_size, **options)
    fc: tuple[int, ...]
    sizes: tuple[int, ...]
    #: the architecture's own options and their defaults (``model.<key>``, e.g. AMDIM's ndf)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: ``(conv_shape, y_dim, **options) -> (to_fc, fc_dim, to_y)``; None = the ``fc`` stack of
    #: fully connected layers and a linear layer to Y
    tail: Callable[..., tuple[nn.Module, int, nn.Module]] | None = None

    def build_tail(
        self, conv_shape: tuple[int, ...], y_dim: int, options: Mapping[str, Any]
    ) -> tuple[nn.Module, int, nn.Module]:
        if self.tail is not None:
            return self.tail(conv_shape, y_dim, **options)
        to_fc = _fc_stack(int(torch.tensor(conv_shape).prod()), self.fc)
        return to_fc, self.fc[-1], nn.Linear(self.fc[-1], y_dim)


def _basic32(cin: int, size: int) -> tuple[nn.Module, nn.Module]:
    to_local = nn.Sequential(conv_bn_relu(cin, 64, 4, 2, 1), conv_bn_relu(64, 128, 4, 2, 1))
    return to_local, conv_bn_relu(128, 256, 4, 2, 1)


def _basic64(cin: int, size: int) -> tuple[nn.Module, nn.Module]:
    to_local = nn.Sequential(
        conv_bn_relu(cin, 64, 4, 2, 1),
        conv_bn_relu(64, 128, 4, 2, 1),
        conv_bn_relu(128, 256, 4, 2, 1),
    )
    return to_local, conv_bn_relu(256, 512, 4, 2, 1)


def _alex64(cin: int, size: int) -> tuple[nn.Module, nn.Module]:
    to_local = nn.Sequential(
        conv_bn_relu(cin, 96, 3, 1, 1, pool=True),
        conv_bn_relu(96, 192, 3, 1, 1, pool=True),
        conv_bn_relu(192, 384, 3, 1, 1),
    )
    to_conv = nn.Sequential(
        conv_bn_relu(384, 384, 3, 1, 1), conv_bn_relu(384, 192, 3, 1, 1, pool=True)
    )
    return to_local, to_conv


def _resnet(cin: int, size: int) -> tuple[nn.Module, nn.Module]:
    # 64x64 inputs get a strided stem so both sizes reach an 8x8 local map and a 4x4 conv map.
    stem = conv_bn_relu(cin, 64, 3, 2 if size == 64 else 1, 1)
    to_local = nn.Sequential(stem, _res_stage(64, 64, 256, 2, 2), _res_stage(256, 128, 512, 2, 2))
    return to_local, _res_stage(512, 256, 1024, 2, 2)


ARCHS: dict[str, Arch] = {
    "basic32": Arch(_basic32, fc=(1024,), sizes=(32,)),
    "basic64": Arch(_basic64, fc=(1024,), sizes=(64,)),
    "alex64": Arch(_alex64, fc=(4096, 4096), sizes=(64,)),
    "resnet": Arch(_resnet, fc=(1024,), sizes=(32, 64)),
    "amdim": Arch(
        amdim_stages,
        fc=(),
        sizes=(32, 64),
        options={"ndf": 128, "n_depth": 3, "use_bn": False},
        tail=amdim_tail,
    ),
}


def _fc_stack(in_dim: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for w in widths:
        layers += [nn.Linear(in_dim, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
        in_dim = w
    return nn.Sequential(*layers)


def check_image_shape(name: str, in_channels: int, image_size: int) -> None:
    """Raise a :class:`DimError` naming a matching encoder when the data does not fit ``name``."""
    if name not in ARCHS:
        raise DimError(f"unknown encoder '{name}'; choose one of: {', '.join(ARCHS)}")
    if in_channels < 1:
        raise DimError(f"in_channels must be >= 1, got {in_channels}")
    sizes = ARCHS[name].sizes
    if image_size not in sizes:
        fits = [n for n, a in ARCHS.items() if image_size in a.sizes]
        hint = f"use model={' or model='.join(fits)}" if fits else "resize the data to 32 or 64"
        raise DimError(
            f"encoder '{name}' expects {' or '.join(f'{s}x{s}' for s in sizes)} images but the "
            f"data gives {image_size}x{image_size}; {hint}"
        )


class Encoder(nn.Module):
    """A DIM encoder; ``forward`` returns {"local", "conv", "fc", "y"} (maps stay maps)."""

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        image_size: int = 32,
        y_dim: int = 64,
        **options: Any,
    ) -> None:
        super().__init__()
        check_image_shape(name, in_channels, image_size)
        arch = ARCHS[name]
        unknown = sorted(set(options) - set(arch.options))
        if unknown:
            known = ", ".join(arch.options) or "none"
            raise DimError(f"encoder '{name}' has no option {unknown[0]} (its options: {known})")
        opts = {**arch.options, **options}
        self.config: dict[str, Any] = {
            "name": name,
            "in_channels": in_channels,
            "image_size": image_size,
            "y_dim": y_dim,
            **opts,
        }
        self.to_local, self.to_conv = arch.stages(in_channels, image_size, **opts)
        with torch.no_grad():
            probe = torch.zeros(2, in_channels, image_size, image_size)
            local = self.to_local(probe)
            conv = self.to_conv(local)
        self.local_shape = tuple(local.shape[1:])
        self.conv_shape = tuple(conv.shape[1:])
        self.to_fc, self.fc_dim, self.to_y = arch.build_tail(self.conv_shape, y_dim, opts)
        self.y_dim = y_dim

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        local = self.to_local(x)
        conv = self.to_conv(local)
        fc = self.to_fc(conv)
        return {"local": local, "conv": conv, "fc": fc, "y": self.to_y(fc)}

    def make_global_head(self, out_dim: int) -> nn.Sequential:
        """Fresh copy of the layers after the local map, ending in a linear to ``out_dim``.

        The official global critic encodes the local map with its own copy of the remaining
        encoder layers; its score is then a dot product with the encoded Y.
        """
        cfg = self.config
        arch = ARCHS[cfg["name"]]
        opts = {k: cfg[k] for k in arch.options}
        _, to_conv = arch.stages(cfg["in_channels"], cfg["image_size"], **opts)
        to_fc, fc_dim, _ = arch.build_tail(self.conv_shape, 1, opts)
        if arch.tail is not None:  # its fc tap is a map (the fc stack flattens by itself)
            to_fc = nn.Sequential(to_fc, nn.Flatten())
        return nn.Sequential(to_conv, to_fc, nn.Linear(fc_dim, out_dim))


def encoder_config(model: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The :func:`build_encoder` arguments of a run: ``model.encoder``, ``model.y_dim`` and the
    architecture's own options from ``model``, the image geometry from ``data``."""
    name = model["encoder"]
    arch = ARCHS.get(name)
    defaults = arch.options if arch else {}
    options = {k: default if model.get(k) is None else model[k] for k, default in defaults.items()}
    return {
        "name": name,
        "in_channels": int(data["channels"]),
        "image_size": int(data["image_size"]),
        "y_dim": int(model.get("y_dim", 64)),
        **options,
    }


def build_encoder(
    name: str, in_channels: int = 3, image_size: int = 32, y_dim: int = 64, **options: Any
) -> Encoder:
    """Build an encoder by name (``basic32``, ``basic64``, ``alex64``, ``resnet``, ``amdim``).

    Args:
        name: architecture name.
        in_channels: image channels (3 for RGB, 1 for greyscale).
        image_size: height = width of the input images.
        y_dim: size of the representation Y (AMDIM's ``n_rkhs``).
        **options: the architecture's own options (``amdim``: ``ndf``, ``n_depth``, ``use_bn``).

    Returns:
        An :class:`Encoder` whose forward maps images to {"local", "conv", "fc", "y"}.
    """
    return Encoder(name, in_channels, image_size, y_dim, **options)
