"""TensorBoard HParams: each run's resolved hyperparameters next to its final metrics.

Lightning-free (``dim-eval`` uses :func:`record_eval`); the callback that writes a training
run's records is :class:`dim.monitor.records.HParamsRecord`.

Each run's ``tensorboard/`` dir gets the hparams plugin's *session start* record (the resolved
config, flattened to dotted keys: ``optim.lr``, ``bound.name`` ...) when training starts and an
*end* record (success) when it finishes.  The metrics are the run's own scalars: the HParams tab
shows each scalar tag's last value (``val/probe/acc_y``, ``val/knn/acc_y``, ``val/mi/local``, and
``eval/<protocol>/<key>`` once ``dim-eval`` has evaluated the run, see :func:`record_eval`).

No *experiment* record is written: TensorBoard takes the first one it finds as the whole sweep's
list of columns, so runs with other keys (AMDIM next to DIM, runs evaluated and not) would lose
theirs.  Without it TensorBoard builds the columns from every run's hparams and scalars.

A resumed run writes its start record again into the same ``tensorboard/`` dir (one TensorBoard
run): it stays one entry, whose metrics are the last values, i.e. the resumed run's.  TensorBoard
keeps the first start record of a run, so its hyperparameters are those the run was started
with (a resume may change only keys such as ``trainer.max_epochs``; a run made before these
records existed gets its first one from its first resume).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: top-level keys that are not hyperparameters (where files live, how this process was started)
NOT_HPARAMS = ("paths", "resume", "hydra")
#: the folder of a training run where ``dim-eval`` leaves a copy of each eval.json of the run
EVALS_DIR = "evals"

Scalar = bool | int | float | str


def flatten(node: Any, prefix: str = "") -> dict[str, Scalar]:
    """``{"optim": {"lr": 1e-3}, "model": {"prior_hidden": [32, 16]}}`` ->
    ``{"optim.lr": 0.001, "model.prior_hidden": "[32, 16]"}``: dotted keys, scalar values (the
    hparams plugin holds numbers, strings and booleans; lists become their text, None "null")."""
    if isinstance(node, dict):
        out: dict[str, Scalar] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    key = prefix.rstrip(".")
    if node is None:
        return {key: "null"}
    if isinstance(node, bool | int | str):
        return {key: node}
    if isinstance(node, float):
        return {key: node if math.isfinite(node) else str(node)}
    return {key: json.dumps(node) if isinstance(node, list | tuple) else str(node)}


def run_hparams(cfg: DictConfig | dict[str, Any]) -> dict[str, Scalar]:
    """The flattened, resolved hyperparameters of a training config (without paths)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    assert isinstance(plain, dict)
    return flatten({k: v for k, v in plain.items() if k not in NOT_HPARAMS})


def session_records(hparams: dict[str, Scalar]) -> tuple[Any, Any]:
    """The hparams plugin's session start and end (success) records (``Summary`` protobufs),
    built by torch's TensorBoard writer helpers (TensorBoard's own need TensorFlow)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    _, start, end = hparams_summaries(hparams, {})  # the experiment record: not written
    return start, end


def training_run_of(path: Path) -> Path | None:
    """The training run dir that ``path`` (a run dir, its checkpoint or its encoder.pt) belongs
    to, or None (an exported encoder elsewhere)."""
    path = path.expanduser().resolve()
    for base in ([path] if path.is_dir() else []) + [path.parent, path.parent.parent]:
        if (base / ".hydra" / "config.yaml").is_file() and (base / "checkpoints").is_dir():
            return base
    return None


def record_eval(run: Path, doc: dict[str, Any], eval_dir: Path) -> Path:
    """Attach a ``dim-eval`` result to the training run it evaluated: a copy of its eval.json in
    ``<run>/evals/<eval dir name>.json`` (read by ``dim-compare``) and its numbers as scalars
    ``eval/<protocol>/<key>`` in the run's TensorBoard dir, at the run's last step, so the HParams
    tab shows them as metrics of that run.  Returns the copy's path.  Nothing is overwritten: a
    name already taken gets a numeric suffix."""
    folder = run / EVALS_DIR
    folder.mkdir(exist_ok=True)
    target = folder / f"{eval_dir.name}.json"
    n = 1
    while target.exists():
        target = folder / f"{eval_dir.name}-{n}.json"
        n += 1
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(target)
    tb = run / "tensorboard"
    if tb.is_dir():
        from torch.utils.tensorboard import SummaryWriter

        step = 0
        summary = run / "metrics.json"
        if summary.is_file():
            step = int(json.loads(summary.read_text()).get("global_step", 0))
        writer = SummaryWriter(str(tb), filename_suffix=".dim-eval")
        try:
            for name, result in doc.get("results", {}).items():
                for key, stat in result.get("values", {}).items():
                    mean = stat.get("mean")
                    if isinstance(mean, int | float) and math.isfinite(mean):
                        writer.add_scalar(f"eval/{name}/{key}", mean, step)
        finally:
            writer.close()
    return target
