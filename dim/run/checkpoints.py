"""Encoder export and loading: run dirs, Lightning checkpoints and ``encoder.pt`` files.

``encoder.pt`` holds only tensors and plain values ({"format", "config", "state_dict"}), and
Lightning checkpoints written by dim hold plain-dict hyper-parameters, so both load with
``torch.load(weights_only=True)``: no arbitrary unpickling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dim.errors import DimError
from dim.nets.encoders import Encoder, build_encoder, encoder_config
from dim.run.diskio import atomic_write

ENCODER_FORMAT = "dim-encoder/1"


def save_encoder(encoder: Encoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the encoder's weights and the config needed to rebuild it (atomically; a full disk
    is a :class:`~dim.run.diskio.WriteError` naming the file)."""
    path = Path(path)
    payload = {
        "format": ENCODER_FORMAT,
        "config": dict(encoder.config),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "extra": extra or {},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def _safe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DimError(f"no such file: {path}") from None
    except Exception as err:  # truncated, not a torch file, or needs full unpickling
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DimError(f"cannot read {path} as a dim checkpoint or encoder.pt: {first}") from None


def resolve_path(path: str | Path) -> Path:
    """A run dir resolves to its encoder.pt, else its checkpoints/last.ckpt."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "encoder.pt", p / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise DimError(f"{p} holds neither encoder.pt nor checkpoints/last.ckpt: not a dim run dir")
    if not p.exists():
        raise DimError(f"no such file or directory: {p}")
    return p


def encoder_config_from_checkpoint(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    hp = ckpt.get("hyper_parameters") or {}
    model, data = hp.get("model"), hp.get("data")
    if not model or not data:
        raise DimError(f"{path} is not a dim training checkpoint (no model/data hyper-parameters)")
    return encoder_config(model, data)


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu") -> Encoder:
    """Load a trained encoder from a run dir, a Lightning checkpoint or an ``encoder.pt``.

    Returns the encoder in eval mode; its forward maps images to {"local", "conv", "fc", "y"}.
    """
    p = resolve_path(path)
    obj = _safe_load(p)
    if not isinstance(obj, dict):
        raise DimError(f"{p} is not a dim checkpoint or encoder.pt")
    if obj.get("format") == ENCODER_FORMAT:
        config, state = obj["config"], obj["state_dict"]
    elif "state_dict" in obj:
        config = encoder_config_from_checkpoint(obj, p)
        prefix = "encoder."
        state = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
    else:
        raise DimError(f"{p} is not a dim checkpoint or encoder.pt")
    encoder = build_encoder(**config)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        raise DimError(f"{p} does not match encoder {config}: {str(err).splitlines()[0]}") from None
    return encoder.to(map_location).eval()
