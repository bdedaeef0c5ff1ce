"""dim: Deep InfoMax representation learning and MINE mutual-information estimation."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_encoder", "load_encoder", "estimate_mi", "DimError", "__version__"]

from dim.errors import DimError

# Heavy imports (torch, lightning) happen on first use, so `import dim` stays cheap.
_LAZY = {
    "build_encoder": "dim.nets.encoders",
    "load_encoder": "dim.run.checkpoints",
    "estimate_mi": "dim.mine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dim' has no attribute {name!r}")
