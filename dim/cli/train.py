"""``dim-train``: the Hydra entry point of DIM training (config in, :func:`dim.training.train`).

Two things happen before Hydra composes the config, because Hydra creates and writes the run dir
before our task function runs:

- ``resume=<run_dir>`` is turned into ``hydra.run.dir=<run_dir>`` (same dir) with Hydra's own
  files going to ``.hydra/resume_<time>/``, so the run's original ``.hydra/`` stays untouched;
- an explicit ``hydra.run.dir`` that already holds a run is refused (nothing is overwritten).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dim.cli.common import launch, run_dir, user_errors
from dim.cli.presets import rewrite_argv
from dim.errors import DimError
from dim.run.directory import lock_run_dir
from dim.run.diskio import write_text

GROUPS = ("data", "model", "bound", "objective", "optim", "trainer", "logger", "callbacks", "paths")


def _arg(argv: list[str], key: str) -> str | None:
    for a in argv:
        if a.startswith(key + "="):
            return a.split("=", 1)[1]
    return None


def _is_launched_child() -> bool:
    # Lightning's DDP launcher re-runs this command in child processes with LOCAL_RANK set;
    # torchrun and SLURM set RANK / SLURM_PROCID for every process of the job.
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or os.environ.get("LOCAL_RANK")
    return (rank or "0") != "0"


def holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in ("checkpoints", "metrics.json", "encoder.pt"))


def prepare_argv(argv: list[str]) -> list[str]:
    """Rewrite ``resume=`` into Hydra run-dir overrides; refuse to overwrite an existing run."""
    argv = rewrite_argv(argv)  # experiment=<paper-row name> -> preset + overrides
    if _is_launched_child():  # write nothing of its own: Hydra's job log goes to stdout
        return [*argv, "hydra/job_logging=stdout", "hydra.output_subdir=null"]
    resume = _arg(argv, "resume")
    # One writer per run dir: its lock is taken before Hydra writes anything into it (not for
    # --cfg / --help, which write nothing; a sweep's jobs lock their own dirs in _task).
    lock = not any(a.startswith("-") for a in argv)
    if resume not in (None, "", "null"):
        run = Path(resume).expanduser().resolve()
        if not (run / ".hydra" / "config.yaml").is_file():
            raise DimError(f"resume={resume} is not a dim run directory (no .hydra/config.yaml)")
        if lock:  # a live writer comes first: it may not have written its first checkpoint yet
            lock_run_dir(run)
        if not any((run / "checkpoints").glob("*.ckpt")):
            raise DimError(f"resume={resume}: the run has no checkpoints/last.ckpt to resume from")
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        argv = [a for a in argv if not a.startswith(("hydra.run.dir=", "hydra.output_subdir="))]
        return argv + [f"hydra.run.dir={run}", f"hydra.output_subdir=.hydra/resume_{stamp}"]
    explicit = _arg(argv, "hydra.run.dir")
    if explicit and holds_run(Path(explicit).expanduser()):
        raise DimError(
            f"{explicit} already holds a run; continue it with resume={explicit} or choose "
            "another hydra.run.dir (nothing was overwritten)"
        )
    if explicit and lock:
        lock_run_dir(Path(explicit).expanduser())
    return argv


def resumed_config(run: Path, overrides: list[str]) -> DictConfig:
    """The run's own resolved config, plus key overrides such as ``trainer.max_epochs=20``."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    keys = [o for o in overrides if not o.startswith("resume=")]
    groups = [
        o for o in keys if o.split("=", 1)[0].lstrip("+~") in GROUPS or "." not in o.split("=")[0]
    ]
    if groups:
        raise DimError(
            f"resume keeps the run's config; only key overrides such as trainer.max_epochs=20 are "
            f"allowed, not {groups[0]}"
        )
    OmegaConf.set_struct(cfg, True)
    try:
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(keys))
    except OmegaConfBaseException as err:
        raise DimError(
            f"cannot apply {keys} to the resumed run: {str(err).splitlines()[0]}"
        ) from None
    assert isinstance(merged, DictConfig)  # merging into a DictConfig gives a DictConfig
    merged.resume = str(run)
    return merged


@hydra.main(version_base="1.3", config_path="pkg://dim.configs", config_name="train")
@user_errors
def _task(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from dim.training import train

    run = run_dir()
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by lightning_utilities
        lock_run_dir(run)  # already held unless Hydra chose the dir (its default: a timestamp)
    ckpt = None
    if cfg.resume:
        cfg = resumed_config(run, list(HydraConfig.get().overrides.task))
        ckpt = run / "checkpoints" / "last.ckpt"
    elif cfg.ckpt_path:
        ckpt = Path(cfg.ckpt_path).expanduser().resolve()
        if not ckpt.is_file():
            raise DimError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if (
        rank_zero_only.rank == 0  # type: ignore[attr-defined]  # set by lightning_utilities
        and not cfg.resume
        and (subdir := HydraConfig.get().output_subdir)
    ):
        # Replace Hydra's copy with the *resolved* config: the run is reproducible from it alone.
        resolved = OmegaConf.to_container(cfg, resolve=True)
        write_text(run / subdir / "config.yaml", OmegaConf.to_yaml(resolved))
    metrics = train(cfg, run, ckpt)
    return sweep_value(cfg, metrics)


def sweep_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The final metric ``sweep_metric`` names: what a sweeper that optimises (Optuna) reads as
    the job's result; NaN when the run has no such metric (Optuna records the trial as failed)."""
    key = cfg.get("sweep_metric")
    if not key:
        return None
    value = metrics.get(key)
    return float("nan") if value is None else float(value)


def main() -> None:
    """Console script ``dim-train``."""
    launch(_task, "dim.configs", "train", prepare_argv)


if __name__ == "__main__":
    main()
