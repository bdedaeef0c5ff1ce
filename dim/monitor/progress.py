"""Progress of ``dim-train``: the rich bar in a terminal, plain lines in a log file.

A bar redrawn in place is unreadable once stdout is a file (nohup, SLURM, ``| tee``): the file
holds its last frame only.  When stdout is not a terminal, :class:`LineProgress` prints one
plain line every ``every_n_seconds`` seconds (or ``every_n_steps`` steps) and one at the end of
each epoch::

    epoch 2/10  step 120/400 (30%)  512 img/s  ETA 0:01:05  loss/encoder_total 1.234  ...

Both are Lightning ``ProgressBar`` callbacks, so Lightning adds no bar of its own; both leave out
Lightning's ``v_num`` (the logger's version, a fixed ``tensorboard`` here: it says nothing).
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar

#: metric name prefixes shown on a line (after the training losses), in this order
SHOWN = ("train/loss/", "train/mi/", "train/probe/acc_y")
EPOCH_SHOWN = ("val/probe/acc_y", "val/knn/acc_y", "val/mi/")


class QuietRichProgressBar(RichProgressBar):
    """Lightning's rich bar without ``v_num``."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(timedelta(seconds=int(round(seconds))))


def _number(value: Any) -> str | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return f"{v:.4g}" if math.isfinite(v) else "nan"


class LineProgress(ProgressBar):
    """Plain progress lines for log files (see the module docstring).

    Args:
        every_n_seconds: a line at most this often (0 = only ``every_n_steps`` and epoch ends).
        every_n_steps: a line every N optimiser steps as well (0 = off).
        stream: where the lines go (default: the stdout of the moment).
    """

    def __init__(
        self, every_n_seconds: float = 15.0, every_n_steps: int = 0, stream: TextIO | None = None
    ) -> None:
        super().__init__()
        self.every_n_seconds = float(every_n_seconds or 0)
        self.every_n_steps = int(every_n_steps or 0)
        self._stream = stream
        self._enabled = True
        self._start = 0.0
        self._start_step = 0
        self._images = 0
        self._last_line = 0.0

    # ---- ProgressBar's interface --------------------------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        self._write(sep.join(map(str, args)))

    # ---- hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last_line = time.monotonic()
        self._start_step = trainer.global_step  # a resumed run counts its own speed
        self._images = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        self._images += int(getattr(x, "shape", [0])[0]) * trainer.world_size
        if not (self._enabled and trainer.is_global_zero):
            return
        now = time.monotonic()
        due_time = self.every_n_seconds > 0 and now - self._last_line >= self.every_n_seconds
        due_step = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if due_time or due_step:
            self._write(self.line(trainer, SHOWN))
            self._last_line = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            self._write(self.line(trainer, SHOWN + EPOCH_SHOWN, epoch_end=True))
            self._last_line = time.monotonic()

    # ---- the line -----------------------------------------------------------------------------
    def line(self, trainer: pl.Trainer, shown: tuple[str, ...], epoch_end: bool = False) -> str:
        """``epoch e/E  step s/S (p%)  N img/s  ETA h:mm:ss  metric value ...``."""
        step, total = trainer.global_step, self.total_steps(trainer)
        elapsed = max(time.monotonic() - self._start, 1e-9)
        done = step - self._start_step
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        parts = [
            f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs else "")
            + (" done" if epoch_end else ""),
            f"step {step}/{total} ({100 * step / total:.0f}%)" if total else f"step {step}",
            f"{self._images / elapsed:.0f} img/s",
        ]  # fmt: skip
        if total and done > 0:
            parts.append(f"ETA {_format_eta((total - step) * elapsed / done)}")
        metrics = trainer.callback_metrics
        for prefix in shown:
            for key in sorted(k for k in metrics if k.startswith(prefix)):
                value = _number(metrics[key])
                if value is not None:
                    name = key.removeprefix("train/")  # val/ stays: the same names exist in both
                    parts.append(f"{name} {value}")
        return "  ".join(parts)

    @staticmethod
    def total_steps(trainer: pl.Trainer) -> int | None:
        """The step the run ends at: ``max_steps``, else epochs x batches per epoch."""
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        batches = trainer.num_training_batches
        if trainer.max_epochs and trainer.max_epochs > 0 and math.isfinite(batches):
            return int(trainer.max_epochs * batches)
        return None

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stdout
        print(text, file=stream, flush=True)


def progress_callback(settings: dict[str, Any] | None, stream: TextIO | None = None) -> ProgressBar:
    """The rich bar when stdout is a terminal, else :class:`LineProgress` with ``settings``
    (``every_n_seconds``, ``every_n_steps``; ``callbacks.progress`` of the config)."""
    out = stream or sys.stdout
    if out.isatty():
        return QuietRichProgressBar()
    settings = settings or {}
    return LineProgress(
        float(settings.get("every_n_seconds", 15.0)), int(settings.get("every_n_steps", 0)), stream
    )
