"""The evaluation protocols by name, without importing them (``dim-eval`` starts fast).

Each protocol is a function ``run(ctx, cfg) -> ProtocolResult`` in ``dim/eval/<module>.py``; its
options and their defaults live only in ``configs/eval/<name>.yaml``.  The order here is the
order of the report table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.resources import files
from typing import Any

# name -> module holding its ``run``
PROTOCOLS: dict[str, str] = {
    "nonlinear": "dim.eval.nonlinear",
    "linear": "dim.eval.linear",
    "knn": "dim.eval.knn",
    "fewshot": "dim.eval.fewshot",
    "mine": "dim.eval.mine_eval",
    "ndm": "dim.eval.ndm",
    "prior": "dim.eval.prior",
    "msssim": "dim.eval.msssim",
}
NEEDS_LABELS = frozenset({"nonlinear", "linear", "knn", "fewshot"})


def protocol(name: str) -> Callable[..., Any]:
    """The ``run`` function of protocol ``name``."""
    return importlib.import_module(PROTOCOLS[name]).run


def with_defaults(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over the protocol's defaults from ``configs/eval/<name>.yaml`` (nested dicts
    merged), for callers that pass only some options (the CLI always passes them all)."""
    from omegaconf import OmegaConf

    text = (files("dim.configs") / "eval" / f"{name}.yaml").read_text()
    defaults = OmegaConf.create(text)
    merged = OmegaConf.merge(defaults, OmegaConf.create(cfg))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
