"""What ``dim-compare`` reads from a training run dir: settings, status, steps, time, results.

A run dir is a folder with ``.hydra/config.yaml`` whose config has ``trainer`` and ``model``
(``dim-eval``'s run dirs have neither).  From it:

- the overrides it was started with (``.hydra/overrides.yaml``), each shown as the value the run
  used: a group's choice (``.hydra/hydra.yaml``, ``runtime.choices``), a key's value (the resolved
  ``config.yaml``);
- its status, from ``metrics.json`` (written when training ends) and ``checkpoints/last.ckpt``
  (the latest state): ``finished``, ``stopped early at step N`` (ended before its configured end:
  ``trainer.max_time`` or a callback), ``interrupted at step N`` (a checkpoint newer than any
  final metrics: killed, preempted or crashed after its first checkpoint; ``dim-train
  resume=<dir>`` continues it), ``failed`` (no checkpoint: it stopped before its first one);
- steps and training time (``train_seconds``, summed over resumes; from the checkpoint for an
  unfinished run), the final metrics, and the results of ``dim-eval`` runs of it (the copies in
  ``evals/``, and any ``eval.json`` whose ``run`` names it among the paths given).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dim.errors import DimError
from dim.run.hparams import EVALS_DIR, training_run_of

#: columns of every row, before the overrides and metrics
FIXED = ("run", "status", "steps", "train_time")
#: final metrics shown by default (prefixes of the keys of metrics.json's ``metrics``)
DEFAULT_METRICS = ("val/probe/acc_", "val/knn/acc_", "val/mi/")


@dataclass
class Run:
    """One training run dir as ``dim-compare`` shows it."""

    path: Path
    overrides: dict[str, Any]
    status: str
    steps: int | None
    train_seconds: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    evals: dict[str, float | None] = field(default_factory=dict)  # eval/<protocol>/<key>


def _yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    if not path.is_file():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # a torn or foreign file: this folder is not read as a run
        return None


def is_training_run(path: Path) -> bool:
    cfg = _yaml(path / ".hydra" / "config.yaml")
    return isinstance(cfg, dict) and "trainer" in cfg and "model" in cfg


#: what training leaves in a run dir besides its config
TRAINING_OUTPUTS = ("checkpoints", "metrics.json", "encoder.pt")


def torn_config(path: Path) -> str | None:
    """Why the ``.hydra/config.yaml`` of a run dir cannot be read as dim-train's (cut off by a
    full disk or a copy, edited by hand), or None when it can or the dir is no training run (a
    dim-eval run dir holds no ``trainer``)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"))
    except Exception as err:
        return f"it does not parse: {' '.join(str(err).split())[:120]}"
    trained = any((path / name).exists() for name in TRAINING_OUTPUTS)
    if not isinstance(cfg, dict):
        return "it holds no settings" if trained or cfg is not None else "it is empty"
    if "trainer" not in cfg and not trained:
        return None
    for key, inner in (("model", "encoder"), ("trainer", "max_epochs"), ("trainer", "max_steps")):
        node = cfg.get(key)
        if not isinstance(node, dict) or inner not in node:
            return f"it ends before {key}.{inner}"
    return None


def _lookup(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def read_overrides(run: Path) -> dict[str, Any]:
    """Override key -> the value this run used (see the module docstring)."""
    given = _yaml(run / ".hydra" / "overrides.yaml") or []
    cfg = _yaml(run / ".hydra" / "config.yaml") or {}
    choices = _lookup(_yaml(run / ".hydra" / "hydra.yaml") or {}, "hydra.runtime.choices") or {}
    out: dict[str, Any] = {}
    for item in given:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("hydra"):
            continue
        if key in choices:
            out[key] = _text(choices[key])
        else:
            found = _lookup(cfg, key)
            if isinstance(found, bool | int | float | str):
                out[key] = found  # numbers stay numbers in --json / --csv and for --sort
            else:
                out[key] = _text(found) if found is not None or "." in key else value
    return out


def _checkpoint_state(path: Path) -> dict[str, Any] | None:
    """global_step, whether the configured end was reached, and the training clock of a
    Lightning checkpoint (memory-mapped: the weights are not read)."""
    if not path.is_file():
        return None
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a torn or foreign file: the run cannot be resumed from it either
        return None
    clock = next(
        (v for k, v in (ckpt.get("callbacks") or {}).items() if "TrainClock" in str(k)), None
    )
    return {
        "step": int(ckpt.get("global_step", 0)),
        "ckpt": ckpt,
        "seconds": float(clock["seconds"]) if isinstance(clock, dict) else None,
    }


def _at_end(cfg: dict[str, Any], ckpt: dict[str, Any]) -> bool:
    from omegaconf import OmegaConf

    from dim.run.reliability import nothing_left

    return nothing_left(OmegaConf.create(cfg), ckpt) is not None


def read_run(path: Path) -> Run:
    """One run's row (see the module docstring)."""
    cfg = _yaml(path / ".hydra" / "config.yaml") or {}
    summary: dict[str, Any] = {}
    if (path / "metrics.json").is_file():
        try:
            summary = json.loads((path / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            summary = {}
    state = _checkpoint_state(path / "checkpoints" / "last.ckpt")
    done_step = summary.get("global_step")
    steps: int | None = done_step
    seconds = summary.get("train_seconds")
    if state is not None and (done_step is None or state["step"] > int(done_step)):
        status, steps, seconds = f"interrupted at step {state['step']}", state["step"], None
        seconds = state["seconds"]
    elif summary:
        at_end = state is None or _at_end(cfg, state["ckpt"])
        status = "finished" if at_end else f"stopped early at step {done_step}"
    else:
        status = "failed"
    metrics = {k: v for k, v in (summary.get("metrics") or {}).items()}
    return Run(path, read_overrides(path), status, steps, seconds, metrics, read_evals(path))


def eval_values(doc: dict[str, Any]) -> dict[str, float | None]:
    """``eval/<protocol>/<key>`` -> mean, of an eval.json document."""
    out: dict[str, float | None] = {}
    for name, result in (doc.get("results") or {}).items():
        for key, stat in (result.get("values") or {}).items():
            mean = stat.get("mean") if isinstance(stat, dict) else None
            out[f"eval/{name}/{key}"] = mean if isinstance(mean, int | float) else None
    return out


def _eval_docs(paths: list[Path]) -> list[dict[str, Any]]:
    docs = []
    for p in paths:
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("results"), dict):
            docs.append(doc)
    return sorted(docs, key=lambda d: str(d.get("created", "")))  # the latest wins per key


def read_evals(run: Path) -> dict[str, float | None]:
    """The eval results recorded in the run dir (``evals/*.json``, ``eval.json``), latest last."""
    files = sorted((run / EVALS_DIR).glob("*.json")) + [run / "eval.json"]
    out: dict[str, float | None] = {}
    for doc in _eval_docs([f for f in files if f.is_file()]):
        if doc.get("init", "trained") == "trained":
            out.update(eval_values(doc))
    return out


def find_runs(paths: list[Path]) -> tuple[list[Path], list[Path], dict[Path, str]]:
    """(training run dirs, eval.json files, run dirs whose config is torn -> why) at or below
    ``paths`` (hidden folders skipped)."""
    runs: dict[Path, None] = {}
    evals: dict[Path, None] = {}
    torn: dict[Path, str] = {}
    for top in paths:
        stack = [top]
        while stack:
            here = stack.pop()
            if (here / ".hydra" / "config.yaml").is_file():
                why = torn_config(here)
                if why is not None:
                    torn[here.resolve()] = why
                elif is_training_run(here):
                    runs[here.resolve()] = None
                elif (here / "eval.json").is_file():
                    evals[(here / "eval.json").resolve()] = None
            try:
                children = sorted(p for p in here.iterdir() if p.is_dir())
            except OSError:
                continue
            stack.extend(
                c for c in reversed(children) if not c.name.startswith(".") and c.name != EVALS_DIR
            )
    return list(runs), list(evals), torn


def attach_evals(runs: list[Run], eval_files: list[Path]) -> None:
    """Add the results of the ``dim-eval`` runs found among the paths to the runs they name."""
    by_path = {r.path: r for r in runs}
    for doc in _eval_docs(eval_files):
        if doc.get("init", "trained") != "trained" or not doc.get("run"):
            continue
        trained = training_run_of(Path(str(doc["run"])))
        if trained is not None and trained in by_path:
            by_path[trained].evals.update(eval_values(doc))


def differing(runs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (all of them for a single run)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def table(runs: list[Run], metric_prefixes: tuple[str, ...] = DEFAULT_METRICS) -> list[dict]:
    """One dict per run: run, status, steps, train_time, the differing overrides, the metrics
    (keys of metrics.json starting with ``metric_prefixes``) and every eval result."""
    keys = differing(runs)
    metric_keys = sorted(
        {k for r in runs for k in r.metrics if k.startswith(metric_prefixes)},
        key=lambda k: (next(i for i, p in enumerate(metric_prefixes) if k.startswith(p)), k),
    )
    eval_keys = sorted({k for r in runs for k in r.evals})
    common = _common_parent([r.path for r in runs])
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "run": str(r.path.relative_to(common)) if common and r.path != common else str(r.path),
            "status": r.status,
            "steps": r.steps,
            "train_time": r.train_seconds,
        }
        row.update({k: r.overrides.get(k) for k in keys})
        row.update({k: r.metrics.get(k) for k in metric_keys})
        row.update({k: r.evals.get(k) for k in eval_keys})
        rows.append(row)
    return rows


def _common_parent(paths: list[Path]) -> Path | None:
    if len(paths) < 2:
        return None
    parts = [p.parts for p in paths]
    shared = []
    for items in zip(*parts):
        if len(set(items)) != 1:
            break
        shared.append(items[0])
    return Path(*shared) if len(shared) > 1 else None


def sort_rows(rows: list[dict], key: str, descending: bool) -> list[dict]:
    """Rows ordered by column ``key``; rows without a value go last.  An unknown column is a
    :class:`DimError` naming the columns there are."""
    if not rows:
        return rows
    columns = list(rows[0])
    if key not in columns:
        matches = [c for c in columns if c.endswith(key) or key in c]
        hint = f" (did you mean {matches[0]}?)" if len(matches) == 1 else ""
        raise DimError(f"--sort {key}: no such column{hint}; columns: {', '.join(columns)}")

    def missing(row: dict) -> bool:
        v = row[key]
        return v is None or (isinstance(v, float) and math.isnan(v))

    present = [r for r in rows if not missing(r)]
    numeric = all(isinstance(r[key], int | float) for r in present)
    present.sort(key=lambda r: r[key] if numeric else str(r[key]), reverse=descending)
    return present + [r for r in rows if missing(r)]
