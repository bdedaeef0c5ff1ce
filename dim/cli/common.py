"""Shared plumbing of the Hydra entry points: one-line errors and no litter on failure."""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dim.cli.outputs import RunDirUse, decide
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


# What a command that stopped on bad input may have started in a run dir it created itself,
# before its first checkpoint or result (TensorBoard's first event file).
_EARLY_OUTPUTS = {"tensorboard"}


def _remove_if_only_hydra_litter(path: Path, ours: bool = False) -> None:
    """Remove ``path`` if it holds only Hydra's files (and, when this command created it,
    ``ours``, what it writes before any result: :data:`_EARLY_OUTPUTS`)."""
    if not path.is_dir():
        return
    litter = _HYDRA_LITTER | (_EARLY_OUTPUTS if ours else set())
    entries = list(path.iterdir())
    if all(e.name in litter or e.suffix == ".log" for e in entries):
        shutil.rmtree(path, ignore_errors=True)


def leave_nothing(out: Path) -> None:
    """After a failed or interrupted command: release its lock of run dir ``out`` (ours only:
    another holder's run stays) and remove the run dir if it holds nothing but what Hydra wrote,
    with the folders above it that the lock created."""
    from dim.run import directory as rundir

    lock = rundir.held(out)
    created = list(lock.created) if lock is not None else []
    trained = lock is not None and lock.trained  # a run stopped by a NaN keeps its curves
    rundir.release_run_dir(out)
    ours = bool(created) and created[0] == out.resolve() and not trained
    _remove_if_only_hydra_litter(out, ours=ours)
    for folder in created:  # deepest first
        try:
            if folder.exists():
                folder.rmdir()  # only when empty
        except OSError:
            break


def user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task: a :class:`DimError` prints ``error: <message>`` and exits with code 2.

    A run directory that holds nothing but what Hydra wrote for this failed run is removed, so a
    bad command leaves nothing behind.  Use it *under* ``@hydra.main``.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        from dim.run import diskio

        try:
            from dim.cli.value_types import check_overrides

            check_overrides(cfg)  # a value of the wrong type: one line naming key and type
            return task(cfg)
        except Exception as exc:
            # a full disk, an I/O error (also one Lightning's clean-up ran into): one line too
            storage = None if isinstance(exc, DimError) else diskio.disk_error_in(exc)
            if not isinstance(exc, DimError) and storage is None:
                raise
            out = _output_dir()
            err = exc if storage is None else diskio.write_failure(storage, out)
            print(f"error: {err}", file=sys.stderr)
            if out is not None:
                leave_nothing(out)
            sys.exit(getattr(err, "exit_code", EXIT_USER_ERROR))

    return wrapper


class Interrupted(BaseException):
    """SIGTERM during a command that stops at once (a BaseException, as KeyboardInterrupt is:
    no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def interruptible(command: str) -> Callable[[Callable[[DictConfig], Any]], Any]:
    """Wrap a Hydra task (dim-eval, dim-embed, dim-mine) so that SIGTERM or SIGINT (Ctrl-C)
    stops it with one line and exit code 128 + signal.

    These commands hold no state worth saving: they stop where they are.  Every file they write
    goes through :func:`dim.run.diskio.atomic_write` (a temporary file renamed over the target),
    so an interrupted write leaves the previous file or none, never half of one; a run dir that
    holds nothing but Hydra's files is removed, as after an error.  Use it under
    :func:`user_errors`.
    """

    def wrap(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
        @functools.wraps(task)
        def wrapper(cfg: DictConfig) -> Any:
            def stop(signum: int, frame: Any) -> None:
                raise Interrupted(signum)

            main = threading.current_thread() is threading.main_thread()
            before = (
                {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
            )
            try:
                return task(cfg)
            except (Interrupted, KeyboardInterrupt) as exc:
                signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
                for s in before:  # a second signal during the clean-up: the default action
                    signal.signal(s, signal.SIG_DFL)
                out = _output_dir()
                if out is not None:
                    leave_nothing(out)
                print(
                    f"{command} interrupted by {signal.Signals(signum).name}: stopped before it "
                    "finished; nothing was half-written (each file is written whole or not at "
                    "all)",
                    file=sys.stderr,
                    flush=True,
                )
                sys.exit(128 + signum)
            finally:
                for s, handler in before.items():
                    signal.signal(s, handler)

        return wrapper

    return wrap


def _output_dir() -> Path | None:
    try:
        return run_dir()
    except Exception:  # no Hydra context (called from Python): nothing to clean
        return None


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
    use: RunDirUse | None = None,
) -> None:
    """Run a Hydra task; bad input on the command line is a one-line error with exit code 2.

    ``prepare_argv`` rewrites the command line first (it raises :class:`DimError` on bad input);
    then :func:`dim.cli.outputs.decide` reads it as Hydra does, refuses a run dir (``use``: how
    the command writes one) that would overwrite a run, locks it and pins it for Hydra.
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
        argv = decide(argv, config_module, config_name, use)
    except DimError as err:
        from dim.run import directory as rundir

        rundir.release_all()  # a lock it took before finding the input bad
        print(f"error: {err}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", EXIT_USER_ERROR))  # a full disk: 1
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
