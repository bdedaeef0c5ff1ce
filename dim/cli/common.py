"""Shared plumbing of the Hydra entry points: one-line errors and no litter on failure."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dim.errors import DimError

EXIT_USER_ERROR = 2
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
        try:
            return task(cfg)
        except DimError as err:
            print(f"error: {err}", file=sys.stderr)
            try:
                _remove_if_only_hydra_litter(run_dir())
            except Exception:  # no Hydra context (called from Python): nothing to clean
                pass
            sys.exit(EXIT_USER_ERROR)

    return wrapper


def launch(task: Callable[[], Any], prepare_argv: Callable[[list[str]], list[str]]) -> None:
    """Run a Hydra task after rewriting its command line; bad input there is a one-line error."""
    try:
        sys.argv = [sys.argv[0], *prepare_argv(sys.argv[1:])]
    except DimError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    task()
