"""What ``dim-mine`` does with its composed config: load the pairs, estimate, write the outputs.

Outputs in the run directory: ``mi.json`` (the :meth:`MIEstimate.to_dict` record plus ``source``)
and TensorBoard scalars ``mi/train``, ``mi/heldout``, ``mi/true`` (per validation point) and
``mi/estimate`` (the reported value, at the last step) under ``tensorboard/``.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from omegaconf import DictConfig, OmegaConf

from dim.errors import DimError
from dim.mine.critics import CRITIC_DEFAULTS
from dim.mine.estimator import ESTIMATORS, estimate_mi, estimate_staircase, resolve_device
from dim.mine.pairs import Staircase, load_pairs
from dim.mine.result import CurvePoint, MIEstimate
from dim.run.diskio import write_text

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

CONFIG_MODULE = "dim.configs.mine"


def register_bound_configs() -> None:
    """Make ``bound=<name>`` selectable for every estimator in :data:`ESTIMATORS`.

    Only estimators with settings of their own (``mine``: momentum, ``smile``: tau, ``ksg``: k)
    have a file in configs/mine/bound/; the others are the node ``{name: <name>}``, registered
    here from the one list of names, so a new bound of :mod:`dim.objective.bounds` needs no config
    file.
    """
    from hydra.core.config_store import ConfigStore

    folder = resources.files(CONFIG_MODULE) / "bound"
    store = ConfigStore.instance()
    for name in ESTIMATORS:
        if not (folder / f"{name}.yaml").is_file():
            store.store(group="bound", name=name, node={"name": name})


def _to_dict(node: DictConfig) -> dict[str, Any]:
    """A config mapping as a plain resolved dict (its keys are config names: strings)."""
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)  # a DictConfig converts to a dict
    return cast("dict[str, Any]", out)


def critic_settings(model: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """``estimate_mi`` critic arguments from the ``model`` config (nulls: the critic's defaults)."""
    m = dict(_to_dict(model) if isinstance(model, DictConfig) else model)
    name = m.pop("critic")
    if name not in CRITIC_DEFAULTS:
        raise DimError(f"unknown critic '{name}'; choose one of: {', '.join(CRITIC_DEFAULTS)}")
    if name != "separable" and m.get("embed") is not None:
        raise DimError("model.embed is a setting of model.critic=separable only")
    out = {k: v for k, v in m.items() if v is not None}
    return {"critic": name, **CRITIC_DEFAULTS[name], **out}


def estimate_from_config(cfg: DictConfig, on_point: Any = None) -> tuple[str, MIEstimate]:
    """Run the estimate a ``dim-mine`` config describes; returns (data source, estimate)."""
    train = _to_dict(cfg.train)
    split = {k: train.pop(k) for k in ("eval_fraction", "val_fraction", "transform")}
    split["standardize"] = train.pop("standardize", None)  # the old switch (null: transform)
    bound = _to_dict(cfg.bound)
    name = bound.pop("name")
    critic = critic_settings(cfg.model)
    common = {**critic, **bound, "seed": cfg.seed, "threads": cfg.threads, "on_point": on_point}
    resolve_device(cfg.device)  # a device this machine lacks is refused before the data loads
    if cfg.data.name == "staircase" and cfg.device != "cpu":
        raise DimError("the staircase task runs on the CPU only: use device=cpu")
    if cfg.data.name == "staircase":
        d = cfg.data
        task = Staircase(d.dim, list(d.levels), d.steps_per_level, d.cubic)
        train.pop("max_steps")
        if critic["critic"] == "gauss":
            # Fresh batches, no training split to fit the Gaussian part on: the concat critic
            # (with its own defaults) that the staircase was measured with.
            model = {**_to_dict(cfg.model), "critic": "concat"}
            common.update(critic_settings(model))
        result = estimate_staircase(task, name, **common, n_eval=d.n_eval, **train)
        return f"staircase(dim={d.dim}, levels={list(d.levels)})", result
    pairs = load_pairs(cfg.data)
    result = estimate_mi(
        pairs.x, pairs.y, name, **common, **split, device=cfg.device,
        drop_nonfinite=cfg.data.drop_nonfinite, true_mi=pairs.true_mi, **train,
    )  # fmt: skip
    return pairs.name, result


class TensorBoardCurves:
    """Writes curve points as scalars; the writer (and its folder) is created on first use, so a
    run that fails on its input leaves no event file behind."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.folder, self.enabled = folder, enabled
        self.writer: SummaryWriter | None = None

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        """One scalar (skipped when disabled or ``value`` is None)."""
        if not self.enabled or value is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.folder))
        self.writer.add_scalar(tag, value, step)

    def point(self, p: CurvePoint) -> None:
        """The train, held-out and true MI of one curve point."""
        self.scalar("mi/train", p.train_mi, p.step)
        self.scalar("mi/heldout", p.heldout_mi, p.step)
        self.scalar("mi/true", p.true_mi, p.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run(cfg: DictConfig, out_dir: Path) -> tuple[dict[str, Any], MIEstimate]:
    """Estimate; write ``mi.json`` and TensorBoard files into ``out_dir``; (record, estimate)."""
    tb = TensorBoardCurves(out_dir / "tensorboard", cfg.tensorboard)
    try:
        source, result = estimate_from_config(cfg, tb.point)
        final = result.steps or 0
        tb.scalar("mi/estimate", result.mi_nats, final)
        tb.scalar("mi/true", result.true_mi, final)
    finally:
        tb.close()
    record = {"source": source, **result.to_dict()}
    write_text(out_dir / "mi.json", json.dumps(record, indent=2) + "\n")
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return record, result


def summary(result: MIEstimate) -> str:
    """The line ``dim-mine`` prints before the estimate: bound, pair counts, steps, s.e., time."""
    parts = [f"bound={result.bound}", f"held-out pairs={result.n_eval}"]
    if result.n_train:
        parts += [f"train pairs={result.n_train}", f"steps={result.steps}"]
        if result.best_step:
            parts.append(f"kept critic of step {result.best_step}")
        else:  # the gauss critic starts at the fitted Gaussian optimum, often not beaten
            parts.append("kept the starting critic (no step beat it on validation)")
    parts.append(f"s.e.={result.stderr_nats:.3f} nats")
    if result.settings.get("transform"):
        parts.append(f"transform={result.settings['transform']}")
    if result.true_mi is not None:
        parts.append(f"true MI={result.true_mi:.3f} nats")
    parts.append(f"{result.seconds:.1f} s")
    if result.n_dropped:
        parts.append(f"dropped {result.n_dropped} non-finite rows")
    if result.warnings:
        parts.append(f"{len(result.warnings)} warning(s), see stderr and mi.json")
    return "  ".join(parts)
