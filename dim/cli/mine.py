"""``dim-mine``: estimate I(X;Y) between two paired arrays (config: ``configs/mine/mine.yaml``).

Writes ``mi.json`` and TensorBoard event files (train and held-out estimate curves, the true MI
for synthetic tasks) into the run directory, and prints the estimate on the last line:
``I(X;Y) ≈ 1.234 nats (1.780 bits)``.  Bad input stops with a one-line error, exit code 2 and
no run directory left behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dim.cli.common import launch, run_dir, user_errors
from dim.data.pairs import Pairs, Staircase, gaussian_pairs, load_csv, load_npy, load_npz
from dim.errors import DimError

FILE_HINT = (
    "give data.path=<file.npz> (arrays x, y), data.x_path=<x.npy> data.y_path=<y.npy>, "
    "data.path=<file.csv> data.x_cols=[...] data.y_cols=[...], or a synthetic task such as "
    "data=gaussian data.dim=20 data.mi=4"
)


def _file_format(d: DictConfig) -> str:
    if d.format != "auto":
        if d.format not in ("npz", "npy", "csv"):
            raise DimError(f"data.format must be auto, npz, npy or csv, got '{d.format}'")
        return d.format
    if d.x_path or d.y_path:
        return "npy"
    if not d.path:
        raise DimError(f"no data given; {FILE_HINT}")
    suffix = Path(d.path).suffix.lower()
    if suffix in (".npz", ".csv"):
        return suffix[1:]
    if suffix == ".tsv":
        return "csv"
    raise DimError(
        f"cannot tell the format of '{d.path}' from its suffix; use .npz or .csv, or set "
        "data.format=npz|csv"
    )


def load_pairs(d: DictConfig) -> Pairs:
    """The (x, y) pairs a ``data`` config describes (files or a synthetic task)."""
    if d.name in ("gaussian", "cubic"):
        rho = d.rho
        return gaussian_pairs(d.n, d.dim, None if rho is not None else d.mi, rho, d.seed, d.cubic)
    fmt = _file_format(d)
    if fmt == "npz":
        if not d.path:
            raise DimError(f"data.path is not set; {FILE_HINT}")
        x, y = load_npz(d.path, d.x_key, d.y_key)
        return Pairs(x, y, None, str(d.path))
    if fmt == "npy":
        x, y = load_npy(d.x_path, d.y_path)
        return Pairs(x, y, None, f"{d.x_path}, {d.y_path}")
    if not d.path:
        raise DimError(f"data.path is not set; {FILE_HINT}")
    delimiter = "\t" if str(d.path).lower().endswith(".tsv") else d.delimiter
    x, y = load_csv(d.path, list(d.x_cols), list(d.y_cols), delimiter)
    return Pairs(x, y, None, str(d.path))


class _TensorBoard:
    """Writes curve points as scalars; the writer (and its folder) is created on first use, so a
    run that fails on its input leaves no event file behind."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.writer = enabled, None

    def scalar(self, tag: str, value: float | None, step: int) -> None:
        if not self.enabled or value is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir() / "tensorboard"))
        self.writer.add_scalar(tag, value, step)

    def point(self, p: Any) -> None:
        self.scalar("mi/train", p.train_mi, p.step)
        self.scalar("mi/heldout", p.heldout_mi, p.step)
        self.scalar("mi/true", p.true_mi, p.step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load the data, estimate, write ``mi.json`` and TensorBoard files; return the record."""
    from dim.estimate import estimate_mi, estimate_staircase

    train = OmegaConf.to_container(cfg.train, resolve=True)
    split = {k: train.pop(k) for k in ("eval_fraction", "val_fraction", "standardize")}
    bound = dict(OmegaConf.to_container(cfg.bound, resolve=True))
    name = bound.pop("name")
    critic = dict(OmegaConf.to_container(cfg.critic, resolve=True))
    critic["critic"] = critic.pop("type")
    tb = _TensorBoard(cfg.tensorboard)
    try:
        if cfg.data.name == "staircase":
            d = cfg.data
            task = Staircase(d.dim, list(d.levels), d.steps_per_level, d.cubic)
            train.pop("max_steps")
            result = estimate_staircase(
                task,
                name,
                **critic,
                **bound,
                n_eval=d.n_eval,
                seed=cfg.seed,
                threads=cfg.threads,
                on_point=tb.point,
                **train,
            )
            source = f"staircase(dim={d.dim}, levels={list(d.levels)})"
        else:
            pairs = load_pairs(cfg.data)
            result = estimate_mi(
                pairs.x,
                pairs.y,
                name,
                **critic,
                **bound,
                **split,
                seed=cfg.seed,
                drop_nonfinite=cfg.data.drop_nonfinite,
                true_mi=pairs.true_mi,
                threads=cfg.threads,
                on_point=tb.point,
                **train,
            )
            source = pairs.name
        final = result.steps or 0
        tb.scalar("mi/estimate", result.mi_nats, final)
        tb.scalar("mi/true", result.true_mi, final)
    finally:
        tb.close()
    record = {"source": source, **result.to_dict()}
    (run_dir() / "mi.json").write_text(json.dumps(record, indent=2) + "\n")
    _report(result)
    return record


def _report(result: Any) -> None:
    parts = [f"bound={result.bound}", f"held-out pairs={result.n_eval}"]
    if result.n_train:
        parts += [f"train pairs={result.n_train}", f"steps={result.steps}"]
        parts.append(f"kept critic of step {result.best_step}")
    parts.append(f"s.e.={result.stderr_nats:.3f} nats")
    if result.true_mi is not None:
        parts.append(f"true MI={result.true_mi:.3f} nats")
    parts.append(f"{result.seconds:.1f} s")
    if result.n_dropped:
        parts.append(f"dropped {result.n_dropped} non-finite rows")
    print("  ".join(parts))
    print(result, flush=True)


@hydra.main(version_base="1.3", config_path="pkg://dim.configs.mine", config_name="mine")
@user_errors
def _task(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console script ``dim-mine``."""
    launch(_task, "dim.configs.mine", "mine")


if __name__ == "__main__":
    sys.exit(main())
