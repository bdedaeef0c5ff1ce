"""``dim-train``: the Hydra entry point of DIM training (config in, :func:`dim.training.train`).

Before Hydra composes the config (Hydra creates and writes the run dir before our task function
runs), :func:`dim.cli.outputs.decide` reads the command line as Hydra does, whatever the spelling:

- ``resume=<run_dir>`` becomes ``hydra.run.dir=<run_dir>`` (same dir) with Hydra's own files
  going to ``.hydra/resume_<time>/``, so the run's original ``.hydra/`` stays untouched;
- a ``hydra.run.dir`` that already holds a run is refused (nothing is overwritten), one in use by
  another process too; otherwise it is locked before Hydra writes into it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dim.cli.common import launch, run_dir, user_errors
from dim.cli.outputs import RunDirUse, launched_child, parse_overrides
from dim.cli.presets import rewrite_argv
from dim.errors import DimError
from dim.run.directory import lock_run_dir
from dim.run.diskio import write_text

GROUPS = ("data", "model", "bound", "objective", "optim", "trainer", "logger", "callbacks", "paths")
USE = RunDirUse("dim-train", resume=True)


def prepare_argv(argv: list[str]) -> list[str]:
    """Paper-row names -> preset + overrides; a DDP child process writes nothing of its own."""
    argv = rewrite_argv(argv)  # experiment=<paper-row name> -> preset + overrides
    if launched_child():  # Hydra's job log goes to stdout; the run dir is the parent's
        return [*argv, "hydra/job_logging=stdout", "hydra.output_subdir=null"]
    return argv


def resumed_config(run: Path, overrides: list[str]) -> DictConfig:
    """The run's own resolved config, plus key overrides such as ``trainer.max_epochs=20``
    (applied as Hydra applies them: parsed by its override parser, ``++`` adds a key)."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    if not isinstance(cfg, DictConfig):
        raise DimError(f"resume={run}: its .hydra/config.yaml holds no settings")
    keys = [o for o in parse_overrides(overrides) if o.key_or_group != "resume"]
    groups = [
        o.input_line
        for o in keys
        if o.key_or_group in GROUPS
        or "." not in o.key_or_group
        or o.package is not None
        or o.is_delete()
        or o.is_sweep_override()
    ]
    if groups:
        raise DimError(
            f"resume keeps the run's config; only key overrides such as trainer.max_epochs=20 are "
            f"allowed, not {groups[0]}"
        )
    OmegaConf.set_struct(cfg, True)
    try:
        for o in keys:
            if o.is_add() or o.is_force_add():
                with open_dict(cfg):
                    OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True, force_add=True)
            else:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
    except OmegaConfBaseException as err:
        lines = [o.input_line for o in keys]
        raise DimError(
            f"cannot apply {lines} to the resumed run: {str(err).splitlines()[0]}"
        ) from None
    cfg.resume = str(run)
    return cfg


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
    launch(_task, "dim.configs", "train", prepare_argv, USE)


if __name__ == "__main__":
    main()
