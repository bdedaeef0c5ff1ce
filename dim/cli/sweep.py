"""The Hydra callback that ends every ``dim-train -m`` sweep: the sweep's HParams columns.

Registered by ``configs/hydra/callbacks/dim.yaml``.  When the sweep's jobs are done it writes
TensorBoard's experiment record into ``<sweep dir>/tensorboard/``
(:func:`dim.run.hparams.write_sweep_record`): the keys whose values differ between the runs
first, then the runs' final metrics, then the constants.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepHParams(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from dim.methods import known_metrics
        from dim.run.hparams import write_sweep_record

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            written = write_sweep_record(sweep_dir, known_metrics())
        except (OSError, ValueError) as err:  # the runs are done and intact: say it, go on
            print(f"warning: the sweep's HParams columns were not written ({err})", file=sys.stderr)
            return
        if written is not None:
            print(f"HParams columns of the sweep: {written.parent}", file=sys.stderr)
