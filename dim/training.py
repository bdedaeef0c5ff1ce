"""Training orchestration behind ``dim-train``: build data, module, trainer; fit; write outputs.

Run dir layout (docs/training.md): ``.hydra/config.yaml`` (resolved), ``checkpoints/last.ckpt``,
``tensorboard/`` (event files), ``metrics.json``, ``encoder.pt``.
"""

from __future__ import annotations

import json
import math
import re
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from dim.data.device import DeviceDataModule
from dim.data.images import ImageDataModule
from dim.errors import DimError
from dim.methods import build_method, known_metrics
from dim.methods.base import MethodModule
from dim.methods.graphed import check_cuda_graph
from dim.monitor.progress import progress_callback
from dim.monitor.records import HParamsRecord, TrainClock
from dim.monitor.visuals import EmbeddingProjector, KNNMonitor, PriorMonitor, TensorBoardVisuals
from dim.run.checkpoints import (
    _safe_load,
    encoder_config_from_checkpoint,
    load_encoder,
    save_encoder,
)
from dim.run.directory import check_writable_dir, held
from dim.run.diskio import WriteError, disk_error_in, write_failure, write_text
from dim.run.hparams import launch_of, run_hparams
from dim.run.precision import resolve_precision
from dim.run.reliability import (
    AtomicCheckpointIO,
    GracefulStop,
    LockWatch,
    StopRequest,
    nothing_left,
    resume_checkpoint,
    stopped_early,
    trained_so_far,
)

TB_DIR = "tensorboard"


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    kind = cfg.logger.name
    if kind == "tensorboard":
        # Fixed version dir: a resumed run appends to the same TensorBoard curves.
        return [TensorBoardLogger(str(run_dir), name="", version=TB_DIR, default_hp_metric=False)]
    if kind == "csv":
        return [CSVLogger(str(run_dir), name="", version="csv")]
    raise DimError(f"logger.name must be tensorboard or csv, got '{kind}'")


def build_callbacks(
    cfg: DictConfig, run_dir: Path, request: StopRequest | None = None
) -> list[pl.Callback]:
    ck = cfg.callbacks.checkpoint
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="epoch{epoch:04d}-step{step}",
        auto_insert_metric_name=False,
        save_last=True,
        save_top_k=1,
        monitor=ck.monitor,
        mode=ck.mode,
        every_n_epochs=None if ck.every_n_train_steps or ck.every_n_minutes else ck.every_n_epochs,
        every_n_train_steps=ck.every_n_train_steps,
        train_time_interval=timedelta(minutes=ck.every_n_minutes) if ck.every_n_minutes else None,
        # last.ckpt is always *the* state to resume from: a resumed run overwrites it, even when
        # this callback did not write it (a stop saved by GracefulStop) instead of adding last-v1
        enable_version_counter=False,
    )
    ckpt_dir = run_dir / "checkpoints"
    stop = GracefulStop(ckpt_dir, request or StopRequest())
    # in this order: the lock watch (rank 0 holds the lock) first; stop sees checkpoint's saves;
    # the clock's seconds go into each checkpoint
    callbacks: list[pl.Callback] = [LockWatch(held(run_dir)), checkpoint, stop, TrainClock()]
    if cfg.logger.name == "tensorboard":
        callbacks.append(
            TensorBoardVisuals(cfg.logger.histogram_every_n_steps, cfg.logger.image_grid)
        )
    knn = cfg.callbacks.get("knn")  # absent in the configs of runs made before it existed
    if knn and knn.every_n_epochs:
        callbacks.append(
            KNNMonitor(knn.every_n_epochs, knn.k, knn.temperature, knn.max_train, knn.max_val)
        )
        callbacks.append(PriorMonitor(knn.every_n_epochs, knn.max_val))
    projector = cfg.callbacks.get("projector")
    if projector and projector.num_images and cfg.logger.name == "tensorboard":
        callbacks.append(EmbeddingProjector(projector.num_images))
    if cfg.logger.name == "tensorboard":  # the run's hyperparameters for the HParams tab
        overrides, sweep_job = launch_of(run_dir)
        callbacks.append(HParamsRecord(run_hparams(cfg), overrides, sweep_job, known_metrics()))
    if cfg.trainer.get("enable_progress_bar", True):  # rich bar in a terminal, else plain lines
        progress = cfg.callbacks.get("progress")  # absent in the configs of older runs
        callbacks.append(progress_callback(_plain(progress) if progress else None))
    return callbacks


def check_checkpoint(
    path: Path, module: MethodModule, ckpt: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fail early, in one line, on a missing, corrupt or other-architecture checkpoint; returns
    the checkpoint (``ckpt``: already loaded from ``path``)."""
    if ckpt is None:
        if not path.is_file():
            raise DimError(f"checkpoint not found: {path}")
        ckpt = _safe_load(path)
    theirs = encoder_config_from_checkpoint(ckpt, path)
    ours = dict(module.encoder.config)
    if theirs != ours:
        raise DimError(
            f"checkpoint {path} was trained with encoder {theirs}, this run builds {ours}"
        )
    ours_state, theirs_state = module.state_dict(), ckpt["state_dict"]
    missing = sorted(set(ours_state) - set(theirs_state))
    if missing:
        raise DimError(
            f"checkpoint {path} lacks {len(missing)} weights of this model (e.g. {missing[0]}); "
            "it was trained with another objective or critic"
        )
    extra = sorted(set(theirs_state) - set(ours_state))
    if extra:
        raise DimError(
            f"checkpoint {path} holds {len(extra)} weights this run does not build (e.g. "
            f"{extra[0]}); it was trained with another objective or critic"
        )
    for key, value in ours_state.items():
        if tuple(value.shape) != tuple(theirs_state[key].shape):
            raise DimError(
                f"checkpoint {path} holds {key} of shape {list(theirs_state[key].shape)}, this "
                f"run builds {list(value.shape)}: an override changed the model (e.g. "
                "model.mi_units or model.prior_hidden); keep the checkpoint's settings"
            )
    return ckpt


TRAINER_CHOICES = "trainer=cpu, gpu, ddp (GPUs), ddp_cpu (CPU processes) or multinode"


def check_devices(cfg: DictConfig) -> None:
    """Refuse, in one line and before any data is loaded, devices this machine does not have."""
    settings = _plain(cfg.trainer)
    accelerator = str(settings.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DimError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and this machine has none; "
            "use trainer=cpu (one process) or trainer=ddp_cpu (CPU processes)"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if settings.get("sync_batchnorm") and on_cpu:
        raise DimError(
            "trainer.sync_batchnorm=true needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
            "add trainer.sync_batchnorm=false to train on CPU processes"
        )
    if cfg.model.get("cuda_graph"):
        settings["precision"] = resolve_precision(str(settings.get("precision", "32-true")), on_cpu)
        check_cuda_graph(_plain(cfg.model), _plain(cfg.optim), settings, torch.cuda.is_available())


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer``; settings Lightning refuses (an unknown strategy
    or precision, a device count it cannot give) are a one-line :class:`DimError` instead of its
    traceback (see also :func:`check_devices`)."""
    settings = _plain(cfg.trainer)
    accelerator = str(settings.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    settings["precision"] = resolve_precision(str(settings.get("precision", "32-true")), on_cpu)
    try:
        return pl.Trainer(
            **settings,
            default_root_dir=str(run_dir),
            logger=build_loggers(cfg, run_dir),
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError, ImportError, TypeError) as err:
        raise DimError(trainer_error(settings, err)) from None


def trainer_error(settings: dict[str, Any], err: BaseException) -> str:
    """One line naming the trainer setting Lightning refused and what to choose instead."""
    text = str(err).strip().split("\n")[0].split(". ")[0].rstrip(".")
    if "Precision" in text:
        return (
            f"trainer.precision={settings.get('precision')!r} is not a precision Lightning "
            "knows; choose auto, 32-true, bf16-mixed, 16-mixed or 64-true"
        )
    if "strategy" in text:
        return (
            f"trainer.strategy={settings.get('strategy')!r} is not a strategy Lightning knows; "
            f"choose auto, ddp or ddp_spawn, or {TRAINER_CHOICES}"
        )
    accelerator = str(settings.get("accelerator", "auto"))
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        return (
            f"trainer.accelerator={accelerator} is not available on this machine ({text}); "
            "choose cpu, or gpu where CUDA is available"
        )
    named = re.search(r"`(\w+)`", text)  # Lightning names the argument it refuses: `max_epochs`
    if named and named.group(1) in settings:
        key = named.group(1)
        return f"trainer settings refused: trainer.{key}={settings[key]!r} ({text})"
    return f"trainer settings refused ({text}); choose {TRAINER_CHOICES}"


def _final_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    metrics = {}
    for key, value in trainer.callback_metrics.items():
        v = float(value)
        metrics[key] = v if math.isfinite(v) else None
    return metrics


def train(cfg: DictConfig, run_dir: Path, ckpt_path: Path | None) -> dict[str, Any]:
    """Train DIM as configured; returns the final metrics (also written to metrics.json)."""
    request = StopRequest()  # from here on a signal asks for a stop at a safe point
    request.install()
    try:
        return _train(cfg, run_dir, ckpt_path, request)
    finally:
        request.restore()


def _train(
    cfg: DictConfig, run_dir: Path, ckpt_path: Path | None, request: StopRequest
) -> dict[str, Any]:
    check_devices(cfg)
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by lightning_utilities
        # a file in the way, a read-only filesystem, no permission: one line, before any work
        subdirs = ["checkpoints"] + ([TB_DIR] if cfg.logger.name == "tensorboard" else [])
        for folder in (run_dir, *(run_dir / d for d in subdirs)):  # created when first used
            check_writable_dir(folder, "run folder", create=False)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    method: dict[str, Any] = _plain(cfg.method) if "method" in cfg else {"name": "dim"}  # old runs
    data: ImageDataModule | DeviceDataModule = ImageDataModule(
        _plain(cfg.data), seed=int(cfg.seed), views=method.get("views")
    )
    if cfg.data_on_device:
        data = DeviceDataModule(data)
    module = build_method(
        method["name"],
        model=_plain(cfg.model),
        bound=_plain(cfg.bound),
        objective=_plain(cfg.objective),
        optim=_plain(cfg.optim),
        data=data.info,
    )
    if ckpt_path is not None:
        if cfg.get("resume"):  # an unreadable last.ckpt: the newest readable one, named
            ckpt_path, ckpt = resume_checkpoint(ckpt_path)
            done = nothing_left(cfg, check_checkpoint(ckpt_path, module, ckpt))
        else:
            done = nothing_left(cfg, check_checkpoint(ckpt_path, module))
        if done is not None:
            return finish_without_training(cfg, run_dir, ckpt_path, done)
    callbacks = build_callbacks(cfg, run_dir, request)
    trainer = build_trainer(cfg, run_dir, callbacks)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except Exception as exc:
        if isinstance(exc, SIGTERMException) or (storage := disk_error_in(exc)) is None:
            raise
        kill = getattr(trainer.strategy.launcher, "kill", None)
        if kill is not None and trainer.world_size > 1:  # DDP children would wait forever
            kill(signal.SIGKILL)
        raise write_failure(storage, run_dir, resume_hint(run_dir)) from None
    except SIGTERMException:
        stop = next(c for c in callbacks if isinstance(c, GracefulStop))
        signum = request.signum or signal.SIGTERM
        if trainer.is_global_zero:
            print(
                f"Stopped by {signal.Signals(signum).name} at step {trainer.global_step}; "
                f"checkpoint saved to {stop.saved}. Continue with: dim-train resume={run_dir}",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(128 + signum)
    metrics = _final_metrics(trainer)
    if trainer.is_global_zero:
        summary = {
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "train_seconds": round(
                next(c for c in callbacks if isinstance(c, TrainClock)).seconds, 1
            ),
            "metrics": metrics,
            "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        }
        try:
            write_text(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
            if cfg.export_encoder:
                save_encoder(module.encoder, run_dir / "encoder.pt", {"run_dir": str(run_dir)})
        except WriteError as err:
            raise err.with_hint(resume_hint(run_dir)) from None
        print_summary(run_dir, metrics, cfg, stopped_early(trainer, cfg))
    return metrics


def finish_without_training(
    cfg: DictConfig, run_dir: Path, ckpt_path: Path, why: str
) -> dict[str, Any]:
    """A resumed run with nothing left to train: say so; write a missing ``encoder.pt`` or
    ``metrics.json`` (a run whose last writes failed, e.g. on a full disk)."""
    summary = run_dir / "metrics.json"
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by lightning_utilities
        if cfg.export_encoder and not (run_dir / "encoder.pt").is_file():
            save_encoder(load_encoder(ckpt_path), run_dir / "encoder.pt", {"run_dir": str(run_dir)})
        if not summary.is_file():
            steps, epochs = trained_so_far(_safe_load(ckpt_path))
            doc = {
                "global_step": steps,
                "epochs": epochs,
                "metrics": {},  # measured at the end of training, which this process did not see
                "checkpoint": str(ckpt_path),
            }
            write_text(summary, json.dumps(doc, indent=2) + "\n")
        print(
            f"Nothing to train: {why}. Raise trainer.max_steps or trainer.max_epochs to continue "
            f"(run dir: {run_dir}).",
            flush=True,
        )
    return json.loads(summary.read_text())["metrics"] if summary.is_file() else {}


def resume_hint(run_dir: Path) -> str:
    """What to do after a failed write: the last checkpoint is intact (written atomically)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "no checkpoint was written yet; free space and start the run again"
    return f"{last} is intact; free space, then continue with: dim-train resume={run_dir}"


def print_summary(
    run_dir: Path, metrics: dict[str, Any], cfg: DictConfig, early: str | None = None
) -> None:
    lines = ["", f"Training {early}." if early else "Training finished."]
    probes = {k: v for k, v in metrics.items() if k.startswith("val/probe/acc_")}
    for key in sorted(probes):
        if probes[key] is not None:
            lines.append(
                f"  online probe accuracy ({key.rsplit('_', 1)[-1]:>4}): {probes[key]:.3f}"
            )
    for key in sorted(k for k in metrics if k.startswith("val/knn/acc_")):
        if metrics[key] is not None:
            lines.append(
                f"  kNN accuracy          ({key.rsplit('_', 1)[-1]:>4}): {metrics[key]:.3f}"
            )
    for key in sorted(k for k in metrics if k.startswith("val/mi/")):  # DIM local/global, AMDIM
        if metrics.get(key) is not None:
            lines.append(f"  {key.split('/', 1)[1]} estimate (nats): {metrics[key]:.3f}")
    lines += [
        f"  run dir:     {run_dir}",
        f"  checkpoint:  {run_dir / 'checkpoints' / 'last.ckpt'}",
    ]
    if cfg.logger.name == "tensorboard":
        lines.append(f"  tensorboard: tensorboard --logdir {run_dir / TB_DIR}")
    print("\n".join(lines), flush=True)
