"""Shared plumbing of the Hydra entry points: one-line errors and no litter on failure."""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dim.errors import DimError

EXIT_USER_ERROR = 2


def config_groups(config_name: str) -> str:
    """``group: option, ...`` lines for the groups in the defaults list of ``<config_name>.yaml``
    (the ``--help`` of each command; Hydra's own lists every group of the shared config tree,
    including those of the other commands)."""
    from importlib.resources import files

    root = files("dim.configs")
    defaults = OmegaConf.load(str(root / f"{config_name}.yaml")).defaults
    groups = sorted(
        k for entry in defaults if OmegaConf.is_dict(entry) for k in entry if " " not in k
    )
    lines = []
    for group in groups:
        options = sorted(p.name[:-5] for p in (root / group).iterdir() if p.name.endswith(".yaml"))
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines) or "(none)"


OmegaConf.register_new_resolver("dim_groups", config_groups, replace=True)
# What Hydra itself puts into a fresh run directory before our task function starts.
_HYDRA_LITTER = {".hydra"}


def run_dir() -> Path:
    """The current Hydra run directory (the job's output dir)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _remove_if_only_hydra_litter(path: Path) -> None:
    if not path.is_dir():
        return
    entries = list(path.iterdir())
    if all(e.name in _HYDRA_LITTER or e.suffix == ".log" for e in entries):
        shutil.rmtree(path, ignore_errors=True)


def user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task: a :class:`DimError` prints ``error: <message>`` and exits with code 2.

    A run directory that holds nothing but what Hydra wrote for this failed run is removed, so a
    bad command leaves nothing behind.  Use it *under* ``@hydra.main``.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        from dim.run import directory as rundir
        from dim.run import diskio

        try:
            return task(cfg)
        except Exception as exc:
            # a full disk, an I/O error (also one Lightning's clean-up ran into): one line too
            storage = None if isinstance(exc, DimError) else diskio.disk_error_in(exc)
            if not isinstance(exc, DimError) and storage is None:
                raise
            try:
                out = run_dir()
            except Exception:  # no Hydra context (called from Python): nothing to clean
                out = None
            err = exc if storage is None else diskio.write_failure(storage, out)
            print(f"error: {err}", file=sys.stderr)
            if out is not None:
                rundir.release_run_dir(out)  # our lock only: another holder's run stays
                _remove_if_only_hydra_litter(out)
            sys.exit(getattr(err, "exit_code", EXIT_USER_ERROR))

    return wrapper


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _config_keys(config_module: str, config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of the composed config (for "did you mean"); [] if it does not compose."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    def walk(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return [prefix]
        return [k for key, v in node.items() for k in walk(v, f"{prefix}{key}.")] or [prefix]

    try:
        with initialize_config_module(config_module, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides)
    except Exception:
        return []
    return [k.rstrip(".") for k in walk(OmegaConf.to_container(cfg, resolve=False), "")]


def _closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def config_error(err: Exception, config_module: str, config_name: str, argv: list[str]) -> str:
    """One line for a Hydra composition error (Hydra prints a block with the search path)."""
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        what = f"{group} '{name}'" if group else f"config '{name}'"
        return f"unknown {what}{_closest(name, err.options)}; choose one of: " + ", ".join(
            err.options
        )
    text = " ".join(str(err).split("Config search path:")[0].split())
    bad = re.match(r"Could not override '([^']+)'", text)
    if bad:
        key = bad.group(1)
        rest = [  # the other overrides (not flags such as --cfg, nor Hydra's own settings)
            a
            for a in argv
            if "=" in a
            and not a.startswith("-")
            and a.split("=", 1)[0].lstrip("+~") not in (key, "hydra")
            and not a.lstrip("+~").startswith(("hydra.", "hydra/"))
        ]
        hint = _closest(key, _config_keys(config_module, config_name, rest))
        return f"unknown config key '{key}'{hint}; to add a new key write +{key}=..."
    return text


def launch(
    task: Callable[[], Any],
    config_module: str,
    config_name: str,
    prepare_argv: Callable[[list[str]], list[str]] | None = None,
) -> None:
    """Run a Hydra task; bad input on the command line is a one-line error with exit code 2.

    ``prepare_argv`` rewrites the command line first (it raises :class:`DimError` on bad input).
    Hydra's own composition errors (a misspelt key, an unknown group option, a malformed
    override) become ``error: unknown config key 'trainer.max_epoch' (did you mean
    trainer.max_epochs?) ...`` instead of Hydra's block; ``HYDRA_FULL_ERROR=1`` keeps Hydra's.
    """
    from hydra.errors import HydraException

    from dim.monitor.warnings_filter import quiet_third_party

    # library noise that says nothing to the user (dim/monitor/warnings_filter.py)
    quiet_third_party()
    argv = sys.argv[1:]
    try:
        argv = prepare_argv(argv) if prepare_argv else argv
    except DimError as err:
        from dim.run import directory as rundir

        rundir.release_all()  # a lock it took before finding the input bad
        _fail(str(err))
    sys.argv = [sys.argv[0], *argv]
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing and exiting
    from dim.run import directory as rundir
    from dim.run import diskio

    diskio.quiet_tensorboard_thread_errors()
    # A log file on a full disk must not print a traceback per record (Hydra logs to one);
    # the failing write that matters is reported as one line.
    logging.raiseExceptions = False
    try:
        task()
    except HydraException as err:
        if before == "1":
            raise
        _fail(config_error(err, config_module, config_name, argv))
    except OSError as err:  # Hydra creating the run dir or writing its .hydra/ files
        if err.errno not in diskio.DISK_ERRNOS:
            raise
        path = Path(err.filename) if err.filename else Path.cwd()
        problem = rundir.unusable(path, err, "output path")
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(getattr(problem, "exit_code", EXIT_USER_ERROR))
    finally:
        rundir.release_all()  # the run-dir lock goes with the command, however it ends
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


# ---- shared by the commands that read a run (dim-eval, dim-embed, dim-export) ----
def remove_empty_dirs(path: Path, levels: int = 3) -> None:
    """Remove ``path`` and then its parents while they are empty (``levels`` at most)."""
    for _ in range(levels):
        try:
            path.rmdir()  # only ever removes an empty directory
        except OSError:
            return
        path = path.parent


def check_out(value: object, overwrite: bool, suffix: str | None = None) -> Path:
    """Validate the ``out`` path: given, right suffix, not an existing file unless overwrite."""
    if value in (None, "", "???"):
        raise DimError("no output file given: pass out=<file>")
    out = Path(str(value)).expanduser()
    if suffix and out.suffix != suffix:
        raise DimError(f"out={value} must end in {suffix}")
    if out.is_dir():
        raise DimError(f"out={value} is a directory; give a file name")
    if out.exists() and not overwrite:
        raise DimError(f"out={value} exists; pass overwrite=true to replace it (nothing written)")
    from dim.run.directory import check_writable_dir

    check_writable_dir(out.parent, "output folder", create=False)
    return out


def patch_data_keys(arg: str) -> str:
    """``data.key=value`` -> ``++data.key=value`` (add-or-override; see the module docstring)."""
    key, sep, _ = arg.partition("=")
    return "++" + arg if sep and key.startswith("data.") else arg


def data_choice(cfg: DictConfig) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the ``data=<name>`` group chosen on the command line or None, the ``data.`` patches)."""
    from hydra.core.hydra_config import HydraConfig

    data = OmegaConf.to_container(cfg.data, resolve=True) or {}
    if HydraConfig.get().runtime.choices.get("data") not in (None, "null"):
        return data, {}  # type: ignore[return-value]
    return None, data  # type: ignore[return-value]
