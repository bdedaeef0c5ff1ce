"""Representation-learning methods: one LightningModule per method over a shared base.

``method.name`` of the training config picks one of :data:`METHODS`; every method takes the same
config groups (``model``, ``bound``, ``objective``, ``optim``) and the data's geometry.
"""

from __future__ import annotations

from typing import Any

from dim.errors import DimError
from dim.methods.amdim import AMDIMModule
from dim.methods.base import MethodModule
from dim.methods.dim import DIMModule

METHODS: dict[str, type[MethodModule]] = {"dim": DIMModule, "amdim": AMDIMModule}


def build_method(name: str, **groups: dict[str, Any]) -> MethodModule:
    """The module of method ``name`` built from the config groups (model, bound, objective,
    optim) and ``data`` (the DataModule's ``info``)."""
    if name not in METHODS:
        raise DimError(f"unknown method '{name}'; choose method={' or method='.join(METHODS)}")
    return METHODS[name](**groups)


def known_metrics() -> list[str]:
    """The scalar tags any method logs during training and validation (the HParams columns a
    run without them shows empty, so that runs of every method can share one table)."""
    names = {name for cls in METHODS.values() for name in cls.METRICS.values()}
    names |= {f"probe/acc_{tap}" for tap in ("conv", "fc", "y")}
    tags = {f"{stage}/{name}" for stage in ("train", "val") for name in names}
    return sorted(tags | {f"val/knn/acc_{tap}" for tap in ("conv", "fc", "y")})
