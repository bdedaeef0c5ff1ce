"""No lost work: atomic checkpoints, graceful stop on SIGTERM / SIGINT, RNG state for resume."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the *same* directory, fsync, then rename over the target.

    A crash or kill while saving leaves the previous checkpoint intact (rename is atomic on POSIX
    within one filesystem; Lightning's default may stage the file in /tmp and copy it over).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


# ---- RNG state, stored as tensors / plain values so checkpoints load with weights_only=True ----
def collect_rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class GracefulStop(pl.Callback):
    """On SIGTERM (also SLURM preemption) or SIGINT: finish the step, save last.ckpt, stop.

    Both signals set Lightning's "received SIGTERM" flag, so Lightning raises ``SIGTERMException``
    after the step (instead of KeyboardInterrupt mid-step); the signal is forwarded to DDP children
    started by Lightning.  All processes agree on the stop (one all-reduce per step).
    """

    def __init__(self, ckpt_dir: Path) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.signum: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        connector = trainer._signal_connector

        def handler(signum, frame):
            if self.signum is None:
                self.signum = signum
                launcher = trainer.strategy.launcher
                if launcher is not None and hasattr(launcher, "kill"):
                    launcher.kill(signum)  # DDP children launched by Lightning stop too
            connector.received_sigterm = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        requested = bool(trainer._signal_connector.received_sigterm)
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested and self.saved is None:
            trainer._signal_connector.received_sigterm = True
            self.signum = self.signum or signal.SIGTERM
            self.saved = self.ckpt_dir / "last.ckpt"
            trainer.save_checkpoint(self.saved)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig, previous in self._previous.items():
            if previous is not None:
                signal.signal(sig, previous)


class FinalCheckpoint(pl.Callback):
    """Save ``last.ckpt`` when training ends after the last periodic save.

    With ``every_n_train_steps`` / ``every_n_minutes`` Lightning's ModelCheckpoint keeps the last
    *periodic* state (e.g. step 6 of a run that ends at step 8); the final steps would be lost to a
    later ``resume``.  (When nothing was saved yet, ModelCheckpoint's own ``save_last`` does it.)
    """

    def __init__(self, ckpt_dir: Path) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self._saved_step: int | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_step is not None and self._saved_step != trainer.global_step:
            trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")
