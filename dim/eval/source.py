"""What an evaluation starts from: an encoder (trained or freshly initialised) and its data.

``run`` may be a training run dir, a Lightning checkpoint or an ``encoder.pt``.  The dataset is
rebuilt from the ``data`` section of the run's ``.hydra/config.yaml`` (found next to the
checkpoint or encoder file, or stored in an exported ``encoder.pt``); a ``data=<name>`` group on
the command line replaces it, and ``data.key=value`` overrides patch it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from dim.errors import DimError
from dim.nets.encoders import Encoder, build_encoder
from dim.run.checkpoints import ENCODER_FORMAT, _safe_load, load_encoder, resolve_path

if TYPE_CHECKING:
    from dim.data.sources import Splits

INITS = ("trained", "random")


@dataclass
class EncoderSource:
    """An encoder ready for evaluation and where it came from."""

    encoder: Encoder
    path: Path  # the resolved file (encoder.pt or .ckpt)
    init: str  # "trained" or "random"
    run_data: dict[str, Any] | None = None  # the training run's data config, if found
    config: dict[str, Any] = field(default_factory=dict)  # encoder config (name, sizes, y_dim)


def _run_config_data(path: Path) -> dict[str, Any] | None:
    """The ``data`` section of the run's resolved config, searched above ``path``."""
    candidates = [path] if path.is_dir() else []
    candidates += [path.parent, path.parent.parent]
    for base in candidates:
        cfg_file = base / ".hydra" / "config.yaml"
        if cfg_file.is_file():
            cfg = OmegaConf.load(cfg_file)
            if "data" in cfg:
                return OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[return-value]
    return None


def _exported_data(path: Path) -> dict[str, Any] | None:
    """The data config that ``dim-export`` stores in an ``encoder.pt`` (``extra.data``)."""
    if path.suffix != ".pt":
        return None
    obj = _safe_load(path)
    if isinstance(obj, dict) and obj.get("format") == ENCODER_FORMAT:
        data = (obj.get("extra") or {}).get("data")
        return dict(data) if isinstance(data, dict) else None
    return None


def load_source(run: str | Path | None, init: str = "trained", seed: int = 0) -> EncoderSource:
    """Load the encoder to evaluate; ``init=random`` builds a fresh one of the same architecture.

    Args:
        run: a run dir, a ``.ckpt`` or an ``encoder.pt``.
        init: ``trained`` (the run's weights) or ``random`` (the untrained baseline).
        seed: seeds the random initialisation.

    Returns:
        The encoder (eval mode, CPU) with its provenance and the run's data config if found.
    """
    if init not in INITS:
        raise DimError(f"init must be one of {', '.join(INITS)}, got '{init}'")
    if run in (None, "", "???"):
        raise DimError("no encoder given: pass run=<run_dir, .ckpt or encoder.pt>")
    given = Path(str(run)).expanduser()
    path = resolve_path(given)
    encoder = load_encoder(path)
    config = dict(encoder.config)
    if init == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_encoder(**config).eval()
    data = _run_config_data(given if given.is_dir() else path) or _exported_data(path)
    return EncoderSource(encoder, path, init, data, config)


def data_config(
    run_data: dict[str, Any] | None,
    group: dict[str, Any] | None,
    overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    """The dataset config of an evaluation.

    Args:
        run_data: the training run's data config (None if not found).
        group: a ``data=<name>`` group chosen on the command line (replaces ``run_data``).
        overrides: ``data.key=value`` patches applied on top.

    Returns:
        A plain dict for :func:`dim.data.sources.build_splits`, with augmentation switched off
        (features must not depend on random crops or flips).
    """
    if group:
        cfg = dict(group)
    elif run_data:
        cfg = dict(run_data)
        unknown = sorted(set(overrides or {}) - set(cfg))
        if unknown:
            raise DimError(
                f"data.{unknown[0]} is not a key of the run's data config "
                f"({', '.join(sorted(cfg))}); choose a whole dataset with data=<name>"
            )
    else:
        raise DimError(
            "cannot tell which dataset to use: the encoder has no run config next to it; "
            "pass data=<name> (e.g. data=digits)"
        )
    cfg.update(overrides or {})
    if isinstance(cfg.get("augment"), dict):
        # Switch off flips and padded crops; leave anything else (e.g. sizes) as configured.
        cfg["augment"] = {
            k: (False if isinstance(v, bool) else 0 if k == "crop_padding" else v)
            for k, v in cfg["augment"].items()
        }
    return cfg


def build_eval_splits(cfg: dict[str, Any], encoder_config: dict[str, Any]) -> Splits:
    """Build the train/val splits and check that the images fit the encoder."""
    from dim.data.sources import build_splits

    splits = build_splits(cfg)
    want = (int(encoder_config["in_channels"]), int(encoder_config["image_size"]))
    got = (splits.channels, splits.image_size)
    if want != got:
        raise DimError(
            f"the encoder expects {want[0]}-channel {want[1]}x{want[1]} images but data "
            f"'{cfg.get('name')}' gives {got[0]}-channel {got[1]}x{got[1]} images"
        )
    return splits
