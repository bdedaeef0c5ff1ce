"""How a method's step is logged: which training steps write metrics, the names they are
written under, and the online probes' accuracy over the window since the last write.

A mixin of :class:`dim.methods.base.MethodModule` (it uses the module's ``METRICS``,
``PROGRESS``, ``optimizer_names``, ``_optimizers()`` and ``_probe_window``); kept apart from the
step itself so the step's module holds the step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class StepLogging:
    """Logging of :class:`~dim.methods.base.MethodModule`'s training and validation steps."""

    METRICS: dict[str, str]
    PROGRESS: tuple[str, ...]
    optimizer_names: list[str]
    _probe_window: dict[str, Tensor]
    trainer: Any
    global_step: int
    log: Any
    _optimizers: Any

    def _logged_step(self, batch_idx: int) -> bool:
        """Whether this training step's metrics are logged: on the steps Lightning writes to the
        loggers (every ``log_every_n_steps``), at the end of each epoch and of training (for the
        final metrics and the progress bar).  ``self.log`` costs about 0.1 ms per metric on the
        host, which on a GPU step of a few milliseconds is a third of the step when done always.
        """
        trainer = self.trainer
        last = trainer.max_steps > 0 and self.global_step >= trainer.max_steps
        # Lightning's own test, "to be checked before a step" (a connector without a public alias)
        return (
            trainer._logger_connector.should_update_logs
            or batch_idx + 1 >= trainer.num_training_batches
            or last
        )

    def _log_step(self, out: dict[str, Tensor], stage: str) -> None:
        on_step = stage == "train"
        names = {
            **self.METRICS,
            **{f"probe_acc_{t}": f"probe/acc_{t}" for t in ("conv", "fc", "y")},
        }
        if on_step:  # the probes' accuracy over the labelled images since the last log
            out = {k: v for k, v in out.items() if not k.startswith("probe_acc_")}
            out.update(self._probe_window_accuracy())
        elif "probe_acc_y" in out and bool(torch.isnan(out["probe_acc_y"])):  # no labels here
            out = {k: v for k, v in out.items() if not k.startswith("probe_acc_")}
        metrics = {f"{stage}/{names[k]}": v.detach() for k, v in out.items() if k in names}
        metrics.update({f"{stage}/{k}": v for k, v in self.extra_metrics(out).items()})
        if on_step:
            for name, opt in zip(self.optimizer_names, self._optimizers(), strict=True):
                lr = opt.param_groups[0]["lr"]
                metrics[f"lr/{name}"] = lr.detach().clone() if torch.is_tensor(lr) else lr
        prog = {f"{stage}/{k}" for k in self.PROGRESS}
        for key, value in metrics.items():
            self.log(
                key,
                value,
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=key in prog,
                sync_dist=not on_step,
                batch_size=1,
            )

    def _accumulate_probe_hits(self, out: dict[str, Tensor]) -> None:
        """Add this step's probe hits and labelled count to the window since the last log (on
        the device).  Logged per window, a batch without labels needs no host test: only a
        window without any labelled image gives no accuracy (NaN, not logged as a number)."""
        if "probe_labelled" not in out:
            return
        step = {k: v.detach() for k, v in out.items() if k.startswith("probe_hits_")}
        step["probe_labelled"] = out["probe_labelled"].detach()
        for key, value in step.items():
            if key in self._probe_window:
                if self._probe_window[key].device != value.device:  # restored from a checkpoint
                    self._probe_window[key] = self._probe_window[key].to(value.device)
                self._probe_window[key].add_(value)
            else:
                self._probe_window[key] = value.clone().float()

    def _probe_window_accuracy(self) -> dict[str, Tensor]:
        window, self._probe_window = self._probe_window, {}
        if "probe_labelled" not in window:
            return {}
        n = window.pop("probe_labelled")
        return {k.replace("hits", "acc"): v / n for k, v in window.items()}

    def extra_metrics(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Metrics derived from the losses (logged under the stage prefix)."""
        return {}
