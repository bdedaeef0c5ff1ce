"""What each training run records for the tools that compare runs (``dim-compare``, TensorBoard's
HParams tab): its hyperparameters (:class:`HParamsRecord`) and its training time
(:class:`TrainClock`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from dim.run.hparams import (
    Scalar,
    command_line_keys,
    experiment_summary,
    order_metrics,
    session_records,
    write_experiment,
)

#: the Custom Scalars tab's charts: title -> tag patterns (regular expressions), one line each
DASHBOARD = {
    "MI estimate per term (train, val)": [r"^(train|val)/mi/"],
    "online probe and kNN accuracy per layer": [r"^(train|val)/probe/acc_", r"^val/knn/acc_"],
    "losses": [r"^(train|val)/loss/"],
}
DASHBOARD_CATEGORY = "DIM: MI, accuracy, losses"


def _writer(trainer: pl.Trainer) -> Any:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class HParamsRecord(pl.Callback):
    """The hparams plugin's session start record at the start of training, its end record
    (success) at the end: rank zero, into the run's TensorBoard dir (see
    :mod:`dim.run.hparams`).  At the end, unless the run is a job of a sweep (whose record the
    sweep writes), the experiment record too: the keys of the command line's ``overrides``
    first, then the others; the run's metrics by importance, then ``known_metrics``.  With the
    start record, the Custom Scalars layout (:data:`DASHBOARD`)."""

    def __init__(
        self,
        hparams: dict[str, Scalar],
        overrides: list[str] | None = None,
        sweep_job: bool = False,
        known_metrics: list[str] | None = None,
    ) -> None:
        self.hparams = hparams
        self.start, self.end = session_records(hparams)
        self.first = command_line_keys(overrides or [], hparams)
        self.sweep_job, self.known_metrics = sweep_job, list(known_metrics or [])

    def _write(self, trainer: pl.Trainer, record: Any) -> None:
        writer = _writer(trainer)
        if writer is not None:
            writer.file_writer.add_summary(record, trainer.global_step)
            writer.flush()

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, self.start)
        writer = _writer(trainer)
        if writer is not None:
            charts = {title: ["Multiline", tags] for title, tags in DASHBOARD.items()}
            writer.add_custom_scalars({DASHBOARD_CATEGORY: charts})
            writer.flush()

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, self.end)
        writer = _writer(trainer)
        if writer is None or self.sweep_job:
            return
        own = order_metrics(list(trainer.callback_metrics))
        tags = own + [t for t in order_metrics(self.known_metrics) if t not in set(own)]
        values = {k: [v] for k, v in self.hparams.items()}
        write_experiment(Path(writer.log_dir), experiment_summary(values, self.first, tags))


class TrainClock(pl.Callback):
    """Seconds spent training, summed over a run's resumes: saved in each checkpoint (callback
    state), so an interrupted run's time is known too (``dim-compare`` reads it; a finished
    run's is ``train_seconds`` in metrics.json)."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of the earlier sessions of this run (from the checkpoint)
        self._start: float | None = None

    @property
    def seconds(self) -> float:
        running = time.monotonic() - self._start if self._start is not None else 0.0
        return self.before + running

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.before, self._start = self.seconds, None

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
