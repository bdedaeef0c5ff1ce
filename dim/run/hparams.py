"""TensorBoard HParams: each run's resolved hyperparameters next to its final metrics.

Lightning-free (``dim-eval`` uses :func:`record_eval`); the callback that writes a training
run's records is :class:`dim.monitor.records.HParamsRecord`.

Each run's ``tensorboard/`` dir gets the hparams plugin's *session start* record (the resolved
config, flattened to dotted keys: ``optim.lr``, ``bound.name`` ...) when training starts and an
*end* record (success) when it finishes.  The metrics are the run's own scalars: the HParams tab
shows each scalar tag's last value (``val/probe/acc_y``, ``val/knn/acc_y``, ``val/mi/local``, and
``eval/<protocol>/<key>`` once ``dim-eval`` has evaluated the run, see :func:`record_eval`).

The *experiment* record (:func:`experiment_summary`) is the list of columns: TensorBoard shows
the hyperparameters marked ``differs`` first (then the others, each part by name; the HParams
table displays the first five), then the metrics in the record's order.  A sweep writes one where
it ends, into ``<sweep dir>/tensorboard/`` (``dim.cli.sweep``): the keys whose values differ
between its runs, then the constants; its jobs write none.  A single run writes its own at the
end of training, the keys its command line set marked first.  Metrics: the run's own scalars by
importance (``val/probe/acc_y``, ``val/knn/acc_y``, ``val/mi/*``, ...), then those of the other
methods, so that TensorBoard opened on a folder of several runs (it takes the first experiment
record it finds for all) still shows every run's metrics; ``dim-eval`` adds its ``eval/*``
metrics to the records that cover the run (:func:`add_metrics`).  The record is a file of its
own (``*.hparams-experiment``), replaced when rewritten: TensorBoard reads a rewritten one when
restarted.

A resumed run writes its start record again into the same ``tensorboard/`` dir (one TensorBoard
run): it stays one entry, whose metrics are the last values, i.e. the resumed run's.  TensorBoard
keeps the first start record of a run, so its hyperparameters are those the run was started
with (a resume may change only keys such as ``trainer.max_epochs``; a run made before these
records existed gets its first one from its first resume).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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
        tags = []
        try:
            for name, result in doc.get("results", {}).items():
                for key, stat in result.get("values", {}).items():
                    mean = stat.get("mean")
                    if isinstance(mean, int | float) and math.isfinite(mean):
                        writer.add_scalar(f"eval/{name}/{key}", mean, step)
                        tags.append(f"eval/{name}/{key}")
        finally:
            writer.close()
        for logdir in (tb, run.parent / "tensorboard"):  # the run's record, its sweep's
            if logdir.is_dir():
                add_metrics(logdir, tags)
    return target


# ---- the experiment record: the HParams table's columns --------------------------------------
EXPERIMENT_SUFFIX = ".hparams-experiment"
#: metric tag prefixes in the order the HParams table shows them (then the rest, by name)
METRIC_ORDER = (
    "val/probe/acc_y", "val/knn/acc_y", "val/mi/", "val/probe/acc_", "val/knn/acc_", "eval/",
    "val/loss/", "val/", "train/mi/", "train/probe/", "train/loss/", "train/",
)  # fmt: skip


def order_metrics(tags: Sequence[str] | set[str]) -> list[str]:
    """Metric tags by importance (:data:`METRIC_ORDER`), each group by name; ``epoch`` and the
    learning rates (``lr/*``) are not final metrics and are left out."""

    def rank(tag: str) -> tuple[int, str]:
        for i, prefix in enumerate(METRIC_ORDER):
            if tag.startswith(prefix):
                return i, tag
        return len(METRIC_ORDER), tag

    return sorted((t for t in set(tags) if t != "epoch" and not t.startswith("lr/")), key=rank)


def _hparam_info(name: str, values: list[Scalar], differs: bool) -> Any:
    from tensorboard.plugins.hparams import api_pb2

    info = api_pb2.HParamInfo(name=name, differs=differs)
    if all(isinstance(v, bool) for v in values):
        info.type = api_pb2.DATA_TYPE_BOOL
        info.domain_discrete.extend(sorted(set(values)))
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value = float(min(values))  # type: ignore[type-var]
        info.domain_interval.max_value = float(max(values))  # type: ignore[type-var]
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.extend(sorted({str(v) for v in values}))
    return info


def experiment_summary(
    values: dict[str, list[Scalar]], first: list[str], metrics: list[str]
) -> Any:
    """The hparams plugin's experiment record (a ``Summary``): ``values`` (key -> every run's
    value) as columns, the keys of ``first`` marked ``differs`` (TensorBoard shows those first),
    then ``metrics`` in this order."""
    from tensorboard.plugins.hparams import api_pb2

    lead = [k for k in dict.fromkeys(first) if k in values]
    rest = sorted(k for k in values if k not in set(lead))
    experiment = api_pb2.Experiment(
        hparam_infos=[_hparam_info(k, values[k], True) for k in lead]
        + [_hparam_info(k, values[k], False) for k in rest],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics],
    )
    return _summary(experiment)


def _summary(experiment: Any) -> Any:
    """An ``api_pb2.Experiment`` as the hparams plugin's experiment ``Summary``."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(
        experiment=experiment, version=metadata.PLUGIN_DATA_VERSION
    ).SerializeToString()
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content)
    )
    return Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=meta)])


def write_experiment(logdir: Path, summary: Any) -> Path:
    """Write ``summary`` as the experiment record of ``logdir``, replacing an earlier one."""
    from torch.utils.tensorboard.writer import FileWriter

    logdir.mkdir(parents=True, exist_ok=True)
    old = sorted(logdir.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"))
    writer = FileWriter(str(logdir), filename_suffix=EXPERIMENT_SUFFIX)
    try:
        writer.add_summary(summary)
    finally:
        writer.close()
    (new,) = set(logdir.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}")) - set(old)
    for path in old:
        path.unlink(missing_ok=True)
    return new


def read_experiment(logdir: Path) -> Any | None:
    """The experiment record of ``logdir`` (an ``api_pb2.Experiment``), or None."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    for path in sorted(logdir.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"), reverse=True):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == metadata.EXPERIMENT_TAG:
                    content = value.metadata.plugin_data.content
                    return metadata.parse_experiment_plugin_data(content)
    return None


def add_metrics(logdir: Path, tags: list[str]) -> bool:
    """Add metric ``tags`` to the experiment record of ``logdir`` (after its own metrics of the
    same importance); False when ``logdir`` has no record."""
    from tensorboard.plugins.hparams import api_pb2

    experiment = read_experiment(logdir)
    if experiment is None:
        return False
    known = [m.name.tag for m in experiment.metric_infos]
    if set(tags) <= set(known):
        return True
    ordered = order_metrics(set(known) | set(tags))
    rest = [t for t in known if t not in ordered]
    del experiment.metric_infos[:]
    experiment.metric_infos.extend(
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in ordered + rest
    )
    write_experiment(logdir, _summary(experiment))
    return True


def command_line_keys(overrides: list[str], hparams: dict[str, Scalar]) -> list[str]:
    """The hyperparameter keys a command line's overrides set: ``optim.lr=1e-3`` -> ``optim.lr``;
    a mapping, ``method.views={translate: 2}`` -> every key under it; a config group,
    ``bound=jsd`` -> ``bound.name`` (a group without a ``name`` key, ``trainer=cpu``, adds none:
    which of its keys the choice changed is not known here); ``experiment=...`` ->
    ``task_name``."""
    keys: list[str] = []
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key.split(".")[0] in NOT_HPARAMS:
            continue
        if key in hparams:
            keys.append(key)
        elif value.lstrip().startswith("{"):
            keys += sorted(k for k in hparams if k.startswith(f"{key}."))
        elif f"{key}.name" in hparams:
            keys.append(f"{key}.name")
        elif key == "experiment" and "task_name" in hparams:
            keys.append("task_name")
    return list(dict.fromkeys(keys))


def session_hparams(logdir: Path) -> dict[str, Scalar] | None:
    """The hyperparameters of the first session start record in ``logdir``'s event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(
                        value.metadata.plugin_data.content
                    )
                    return {k: _scalar(v) for k, v in info.hparams.items()}
    return None


def _scalar(value: Any) -> Scalar:
    kind = value.WhichOneof("kind")
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "number_value":
        return float(value.number_value)
    return str(value.string_value)


def write_sweep_record(sweep_dir: Path, known_metrics: Sequence[str] = ()) -> Path | None:
    """The experiment record of a finished sweep, in ``<sweep_dir>/tensorboard/``: the keys its
    command lines varied first (without those, every key whose value differs), then the rest;
    the runs' final metrics (their ``metrics.json``) by importance, then ``known_metrics``.
    None when no run recorded hparams."""
    runs: list[dict[str, Scalar]] = []
    overrides: list[dict[str, str]] = []
    metrics: set[str] = set()
    for job in sorted(p for p in sweep_dir.iterdir() if (p / "tensorboard").is_dir()):
        if job.name == "tensorboard":
            continue
        hparams = session_hparams(job / "tensorboard")
        if hparams is None:
            continue
        runs.append(hparams)
        given, _ = launch_of(job)
        overrides.append(dict(o.partition("=")[::2] for o in given))
        try:
            metrics |= set(json.loads((job / "metrics.json").read_text())["metrics"])
        except (OSError, ValueError, KeyError):
            pass  # a failed or interrupted job: its hparams still count
    if not runs:
        return None
    keys = sorted({k for run in runs for k in run})
    values = {k: [run[k] for run in runs if k in run] for k in keys}
    differ = [
        k for k in keys if len({repr(v) for v in values[k]}) > 1 or len(values[k]) < len(runs)
    ]
    # the keys the sweep varied on its command line lead; keys that follow from them (optim.d_lr
    # from optim.lr) go with the constants, which TensorBoard lists by name after them
    varied = sorted({k for o in overrides for k in o if len({x.get(k) for x in overrides}) > 1})
    given = [f"{k}={overrides[0].get(k, '')}" for k in varied]
    swept = [k for k in command_line_keys(given, dict.fromkeys(keys, 0)) if k in differ]
    own = order_metrics(metrics)
    tags = own + [t for t in order_metrics(known_metrics) if t not in set(own)]
    summary = experiment_summary(values, swept or differ, tags)
    return write_experiment(sweep_dir / "tensorboard", summary)


def launch_of(run_dir: Path) -> tuple[list[str], bool]:
    """(the overrides of the command line that started ``run_dir``, whether it is a job of a
    sweep), from the files Hydra wrote there; ``([], False)`` without them."""
    hydra_dir = run_dir / ".hydra"
    try:
        overrides = OmegaConf.load(hydra_dir / "overrides.yaml")
        mode = OmegaConf.select(OmegaConf.load(hydra_dir / "hydra.yaml"), "hydra.mode")
    except (OSError, ValueError):
        return [], False
    return [str(o) for o in overrides], str(mode) == "MULTIRUN"
