"""No lost work: atomic checkpoints, graceful stop on SIGTERM / SIGINT, RNG state for resume."""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Checkpoint, Timer

from dim.errors import DimError
from dim.run.checkpoints import _safe_load
from dim.run.diskio import PARTIAL, atomic_write

if TYPE_CHECKING:
    from pytorch_lightning.loops.progress import _ProcessedTracker


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the *same* directory, fsync, then rename over the target.

    A crash or kill while saving leaves the previous checkpoint intact (rename is atomic on POSIX
    within one filesystem; Lightning's default may stage the file in /tmp and copy it over).  A
    full disk or an I/O error is a :class:`~dim.run.diskio.WriteError` naming the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


def resume_checkpoint(last: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a ``resume`` continues from: ``last`` (``checkpoints/last.ckpt``) or, when
    it is missing or unreadable, the newest readable ``*.ckpt`` beside it, with a ``warning:``
    line naming both.  Never silently from scratch: no readable checkpoint is a one-line error."""
    try:
        return last, _safe_load(last)
    except DimError as err:
        problem = str(err)
    folder = last.parent
    others = [p for p in folder.glob("*.ckpt") if p != last and not p.name.startswith(".")]
    for path in sorted(others, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            ckpt = _safe_load(path)
        except DimError:
            continue
        print(
            f"warning: {problem}; resuming from {path} (step {ckpt.get('global_step', '?')}), "
            "the newest readable checkpoint of the run",
            file=sys.stderr,
            flush=True,
        )
        return path, ckpt
    raise DimError(f"{problem}; and no other readable checkpoint in {folder}: cannot resume")


class LockWatch(pl.Callback):
    """Stops a run whose run-dir lock another process has taken over (its heartbeat was held up
    past the lease, e.g. a suspended job), before it writes another checkpoint: two writers would
    interleave their files.  ``lock`` is :class:`dim.run.directory.RunLock` (None: nothing to
    watch)."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def _check(self) -> None:
        if self.lock is not None and self.lock.lost is not None:
            raise DimError(
                f"run dir {self.lock.run_dir} was taken over by {self.lock.lost}; this process "
                "stops without writing more (one writer per run dir)"
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._check()
        if self.lock is not None:
            self.lock.trained = True  # its curves are results now (dim.cli.common.leave_nothing)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._check()  # called before the file is written: raising here writes nothing


# ---- RNG state, stored as tensors / plain values so checkpoints load with weights_only=True ----
def collect_rng_states() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=True)  # numpy's stubs type the no-argument call as a dict
    assert isinstance(np_state, tuple)  # the legacy global generator (MT19937) gives a tuple
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


class StopRequest:
    """The signal handler of a training run: SIGTERM (also SLURM preemption) or SIGINT only *ask*
    for a stop; :class:`GracefulStop` honours it at the next point where the state can be saved.

    Installed by :func:`dim.training.train` before anything else happens and restored when it
    returns, so a signal during start-up, a checkpoint write or the final export never kills the
    process half-way.  Lightning's own SIGTERM flag is not used: Lightning acts on it in places
    where the state cannot be saved (the middle of validation), which lost work silently.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forward: Any = None  # set by GracefulStop: forwards the signal to DDP children
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            if self.forward is not None:
                self.forward(signum)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig not in self._previous:
                self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def _epochs_processed(trainer: pl.Trainer) -> int:
    """Epochs the fit loop has processed (its epoch tracker is a ``_ProcessedTracker``, which
    Lightning's ``_Progress.current`` annotation does not say)."""
    return cast("_ProcessedTracker", trainer.fit_loop.epoch_progress.current).processed


def epoch_cut_short(trainer: Any) -> bool:
    """Whether the fit loop has ended the epoch in progress before its last batch (``max_steps``
    reached, ``max_time``, a callback's ``should_stop``).  Lightning then counts the epoch as
    processed and runs its epoch-end hooks, though batches of it are left: what a checkpoint,
    the data position and the epoch schedule must not take as a finished epoch."""
    loop = trainer.fit_loop
    epochs, batches = loop.epoch_progress.current, loop.epoch_loop.batch_progress
    done = batches.current.processed
    return (
        epochs.started == epochs.processed
        and 0 < done < trainer.num_training_batches
        and not batches.is_last_batch
    )


def rewind_cut_epoch(checkpoint: dict[str, Any]) -> None:
    """Record an epoch that :func:`epoch_cut_short` ended as the middle of that epoch, in
    ``checkpoint`` (being saved): the loop state a save right after the last step has (the one a
    signal stop writes), which Lightning resumes by training the rest of the epoch.  As saved, the
    epoch would count as done and a resume with a larger ``max_steps`` would skip its rest."""
    fit = checkpoint["loops"]["fit_loop"]
    for tracker in fit["epoch_progress"].values():  # total, current: the epoch is not processed
        tracker["processed"] = tracker["completed"] = tracker["started"] - 1
    batches = fit["epoch_loop.batch_progress"]
    for tracker in (batches["total"], batches["current"]):  # the last batch's hooks not complete
        tracker["completed"] = tracker["processed"] - 1
    # Lightning adds the last batch back when it resumes from such a state
    fit["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1
    checkpoint["epoch"] = fit["epoch_progress"]["current"]["completed"]


def training_done(trainer: pl.Trainer) -> bool:
    """Whether the fit loop ends at this point anyway (``max_steps`` / ``max_epochs`` reached)."""
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return True
    epochs_done = _epochs_processed(trainer)
    return max_epochs is not None and max_epochs >= 0 and epochs_done >= max_epochs


def trained_so_far(ckpt: dict[str, Any]) -> tuple[int, int]:
    """(steps, epochs) a Lightning checkpoint has trained."""
    epochs = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    return int(ckpt.get("global_step", 0)), int(epochs.get("current", {}).get("processed", 0))


def configured_end(cfg: DictConfig) -> tuple[int, int]:
    steps, epochs = cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs", -1)
    return (-1 if steps is None else int(steps)), (-1 if epochs is None else int(epochs))


def nothing_left(cfg: DictConfig, ckpt: dict[str, Any]) -> str | None:
    """Why a run resumed from ``ckpt`` would not train a step, or None."""
    (steps, epochs), (max_steps, max_epochs) = trained_so_far(ckpt), configured_end(cfg)
    if 0 <= max_steps <= steps:
        return f"already at step {steps} of {max_steps} (trainer.max_steps)"
    if 0 <= max_epochs <= epochs:
        return f"already at epoch {epochs} of {max_epochs} (trainer.max_epochs), step {steps}"
    return None


def stopped_early(trainer: pl.Trainer, cfg: DictConfig) -> str | None:
    """Why a fit that returned normally ended before ``max_steps`` / ``max_epochs``, or None."""
    if training_done(trainer):
        return None
    max_steps, max_epochs = configured_end(cfg)
    end = f"step {max_steps}" if max_steps >= 0 else f"epoch {max_epochs}"
    # Trainer.callbacks is set by Lightning's callback connector; the class does not declare it
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]  # type: ignore[attr-defined]
    why = (
        "trainer.max_time was reached"
        if any((left := t.time_remaining()) is not None and left <= 0 for t in timers)
        else "a callback set trainer.should_stop"
    )
    return f"stopped early at step {trainer.global_step} (configured end: {end}): {why}"


class GracefulStop(Checkpoint):
    """Owns ``checkpoints/last.ckpt`` at the moments ModelCheckpoint does not: on a stop request,
    and when training ends after the last periodic save.

    A stop request (:class:`StopRequest`) is honoured where the state resumes exactly:

    - after a training step in the middle of an epoch;
    - at the end of the epoch (after validation, the kNN monitor and the epoch's checkpoint) when
      it arrives during an epoch's last step, validation, the monitor or a checkpoint write.

    It is a :class:`~pytorch_lightning.callbacks.Checkpoint`, listed after ModelCheckpoint, so
    Lightning calls it after ModelCheckpoint in every hook: it sees whether this point was saved
    already.  All DDP processes agree on the stop (one all-reduce of a flag per step).  The stop
    itself is Lightning's ``SIGTERMException``, raised by the fit loop once the step or the epoch
    is complete; :func:`dim.training.train` turns it into the "Continue with" message.
    """

    def __init__(self, ckpt_dir: Path, request: StopRequest) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.request = request
        self.saved: Path | None = None  # where the stop's state is
        self._saved_at: tuple[int, int] | None = None
        self._log_step: int | None = None  # the logger step of the next step's metrics
        self._restored_log_step: int | None = None

    @staticmethod
    def _point(trainer: pl.Trainer) -> tuple[int, int]:
        # (step, epochs processed): an epoch's last step and its end are different points
        return trainer.global_step, _epochs_processed(trainer)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.ckpt_dir.is_dir():  # left by a kill during a write
            for partial in self.ckpt_dir.glob(f".*{PARTIAL}*"):
                partial.unlink(missing_ok=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        launcher = trainer.strategy.launcher
        if launcher is not None and hasattr(launcher, "kill"):
            self.request.forward = launcher.kill  # DDP children launched by Lightning stop too
        self.request.install()  # again: Lightning registered its own handler at fit start

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._saved_at = self._point(trainer)
        if epoch_cut_short(trainer):  # every save at or after that end: ModelCheckpoint's too
            rewind_cut_epoch(checkpoint)

    # The logger step (x-axis of TensorBoard curves) is Lightning's private batch counter, which
    # its restore sets one too high for a checkpoint taken at the end of an epoch of a run bounded
    # by max_steps: every later point of a resumed run would shift by one.  The checkpoint carries
    # the right value, set again once Lightning's loops have been reset (at the first batch).
    def state_dict(self) -> dict[str, Any]:
        return {} if self._log_step is None else {"log_step": self._log_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_log_step = state_dict.get("log_step")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        loop = trainer.fit_loop.epoch_loop
        if self._restored_log_step is not None:
            loop._batches_that_stepped, self._restored_log_step = self._restored_log_step, None
        self._log_step = loop._batches_that_stepped + 1  # once this step has run

    def _stop_here(self, trainer: pl.Trainer) -> None:
        requested = self.request.signum is not None
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested or training_done(trainer):
            return  # a run that ends here anyway just finishes
        if self.request.signum is None:  # another process got the signal
            self.request.signum = signal.SIGTERM
        if self._saved_at != self._point(trainer):
            trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")
        self.saved = self.ckpt_dir / "last.ckpt"
        trainer._signal_connector.received_sigterm = True  # the fit loop raises after this hook

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 < trainer.num_training_batches:  # the last step waits for the epoch end
            self._stop_here(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_here(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # With every_n_train_steps / every_n_minutes, ModelCheckpoint keeps the last *periodic*
        # state (e.g. step 6 of a run that ends at step 8): save the final one.
        if self._saved_at is not None and self._saved_at[0] != trainer.global_step:
            trainer.save_checkpoint(self.ckpt_dir / "last.ckpt")
