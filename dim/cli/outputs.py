"""Where a command writes: decided once, from Hydra's own parse of the command line, before
Hydra writes anything.

Hydra creates the run dir and writes ``.hydra/`` into it before the task function runs, so the
run dir is decided here, on the command line, the way Hydra itself reads it:

- Hydra's argument parser separates its flags (``-m``, ``--cfg``, ``--help``) from the overrides,
  and Hydra's override parser reads each override, so every spelling Hydra accepts gives the same
  path: ``hydra.run.dir=runs/r1``, ``'hydra.run.dir="runs/r 1"'``, ``"hydra.run.dir='runs/r1'"``,
  ``++hydra.run.dir=...``, ``+hydra.run.dir=...``, ``resume='runs/été/r1'``;
- where the path is not a plain string (Hydra's default ``outputs/<task_name>/<time>``, an
  interpolation such as ``${paths.output_dir}/x``), the config is composed and the path resolved;
- the path is expanded (``~``: Hydra itself would create a folder named ``~``) and made
  absolute; then it is checked (a dir that already holds a run of any dim command is refused:
  Hydra would overwrite its ``.hydra/``, the command its outputs) and locked (one writer per
  run dir, :mod:`dim.run.directory`);
- the absolute path goes back to Hydra as the one ``hydra.run.dir`` override (any other spelling
  of it is dropped), so Hydra writes exactly where the checks looked.

For ``-m`` sweeps the sweep dir is resolved, refused if it already holds runs, and pinned the
same way; each job locks its own dir when it starts.  ``--cfg``, ``--help`` and ``--info`` write
nothing and are left alone.  An override Hydra cannot parse is one line here (with the quoted
spelling to use where quoting is what it lacks) instead of Hydra's lexer report.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dim.errors import DimError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

#: what a finished or started run of a dim command leaves in its run dir -> whose run it is
RUN_MARKERS = {
    "checkpoints": "a run (dim-train's checkpoints/)",
    "metrics.json": "a run (dim-train's metrics.json)",
    "encoder.pt": "a run (dim-train's encoder.pt)",
    "eval.json": "an eval.json (a dim-eval run)",
    "mi.json": "an mi.json (a dim-mine run)",
    ".hydra": "the config of an earlier run (.hydra/)",
}


@dataclass(frozen=True)
class RunDirUse:
    """How a command uses its Hydra run dir (dim-embed and dim-export write none)."""

    command: str  # dim-train, dim-eval, dim-mine
    resume: bool = False  # resume=<run dir> continues a run in its own dir (dim-train)
    writes: bool = True  # False: Hydra makes the dir, the command writes nothing into it


#: run dir -> the folders Hydra will create for a command that writes nothing (deepest first)
_UNUSED: dict[Path, list[Path]] = {}


def missing_folders(path: Path) -> list[Path]:
    """``path`` and the folders above it that do not exist, deepest first."""
    out = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        out.append(folder)
    return out


def remove_unused(run: Path) -> None:
    """Remove the empty folders Hydra created for a command that writes no run dir (dim-embed,
    dim-export): only those that did not exist before the command, never a folder of the user."""
    for folder in _UNUSED.pop(Path(os.path.abspath(run)), []):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return


def launched_child() -> bool:
    """A process that Lightning's DDP launcher, torchrun or SLURM started for a rank other than 0:
    it writes nothing of its own and decides nothing (rank 0 did)."""
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or os.environ.get("LOCAL_RANK")
    return (rank or "0") != "0"


# ---------------------------------------------------------------- reading the command line


class _ArgvError(Exception):
    pass


def hydra_arguments(argv: list[str]) -> argparse.Namespace | None:
    """Hydra's own reading of ``argv`` (flags and overrides); None when Hydra would refuse it
    (Hydra then prints its usage error itself)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise _ArgvError(message)

    parser.error = error  # type: ignore[method-assign]
    try:
        return parser.parse_args(argv)
    except (_ArgvError, SystemExit):  # SystemExit: --version printed and exits
        return None


def quote(text: str) -> str:
    """``text`` as a Hydra quoted string (quotes and backslashes escaped as Hydra reads them)."""
    from hydra.core.override_parser.types import Quote, QuotedString

    return QuotedString(text=text, quote=Quote.single).with_quotes()


def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_overrides(lines: list[str]) -> list[Override]:
    """Hydra's parse of each override; one that does not parse is a one-line :class:`DimError`,
    suggesting the quoted spelling when quoting makes it parse (a path with spaces, accents or
    ``~``: ``hydra.run.dir='runs/été/r1'``)."""
    from hydra.errors import HydraException

    parser = _parser()
    out = []
    for line in lines:
        try:
            out.append(parser.parse_override(line))
        except HydraException as err:
            raise DimError(_parse_error(parser, line, err)) from None
    return out


def _parse_error(parser: Any, line: str, err: Exception) -> str:
    from hydra.errors import HydraException

    key, sep, value = line.partition("=")
    structure = set("[]{}(),='\"")  # a list, a dict, a sweep: quoting is not what it lacks
    if sep and value and not structure & set(value):
        quoted = f"{key}={quote(value)}"
        try:
            parser.parse_override(quoted)
        except HydraException:
            pass
        else:
            return (
                f"cannot read '{line}': Hydra takes such a value only in quotes; quote it: "
                f'{quoted} (in a shell: "{quoted}")'
            )
    why = " ".join(str(err).split()) or type(err.__cause__ or err).__name__
    return (
        f"cannot read the override '{line}': {why}; the grammar: "
        "https://hydra.cc/docs/advanced/override_grammar/basic/"
    )


def last(overrides: list[Override], key: str) -> Override | None:
    """The override of ``key`` that wins (the last one, whatever its ``+`` / ``++`` prefix)."""
    found = [o for o in overrides if o.key_or_group == key and o.package is None]
    return found[-1] if found else None


def _value(override: Override | None) -> Any:
    return None if override is None or override.is_delete() else override.value()


# ---------------------------------------------------------------- paths


def absolute(value: Any, what: str) -> Path:
    """A path as the user meant it: ``~`` expanded, relative to the working directory."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DimError(f"{what}={value!r} is not a path; give a folder, e.g. {what}=runs/r1")
    text = str(value)
    if not text.strip():
        raise DimError(f"{what} is empty; give a folder, e.g. {what}=runs/r1")
    if "${" in text:
        raise DimError(f"{what}={text}: cannot resolve the interpolation; give a plain path")
    return Path(os.path.abspath(Path(text).expanduser()))


def holds(path: Path) -> str | None:
    """Whose run ``path`` already holds (see :data:`RUN_MARKERS`), or None."""
    for name, whose in RUN_MARKERS.items():
        if (path / name).exists():
            return whose
    return None


def runs_below(path: Path, depth: int = 3) -> Path | None:
    """The first dir at or below ``path`` (``depth`` levels) that holds a run, or None."""
    if holds(path):
        return path
    if depth == 0 or not path.is_dir():
        return None
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    for child in children:
        found = runs_below(child, depth - 1)
        if found is not None:
            return found
    return None


def _resolved(
    config_module: str, config_name: str, overrides: list[Override], key: str
) -> str | None:
    """``key`` of the composed config (with Hydra's part), resolved; None when the config does
    not compose (Hydra then reports that, before it writes anything)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    lines = [str(o.input_line) for o in overrides if not o.is_sweep_override()]
    try:
        with initialize_config_module(config_module, version_base="1.3"):
            cfg = compose(config_name, overrides=lines, return_hydra_config=True)
    except Exception:
        return None
    try:
        return str(OmegaConf.select(cfg, key, throw_on_missing=True))
    except Exception as err:
        raise DimError(f"cannot resolve {key} before the run: {str(err).splitlines()[0]}") from None


def _path_of(
    overrides: list[Override], key: str, config_module: str, config_name: str
) -> Path | None:
    given = _value(last(overrides, key))
    if isinstance(given, str) and "${" not in given:
        return absolute(given, key)
    if given is not None and not isinstance(given, str):
        return absolute(given, key)
    text = _resolved(config_module, config_name, overrides, key)
    return None if text is None else absolute(text, key)


def _refusal(run: Path, use: RunDirUse, whose: str) -> str:
    if use.resume and "dim-train" in whose:
        fix = f"continue it with resume={run} or choose another hydra.run.dir"
    elif whose.startswith("the config"):
        fix = "remove it or choose another hydra.run.dir"
    else:
        fix = "choose another hydra.run.dir"
    return f"{run} already holds {whose}; {fix} (nothing was overwritten)"


def _without(argv: list[str], overrides: list[Override], keys: tuple[str, ...]) -> list[str]:
    drop = {o.input_line for o in overrides if o.key_or_group in keys and o.package is None}
    return [a for a in argv if a not in drop]


def decide(
    argv: list[str], config_module: str, config_name: str, use: RunDirUse | None
) -> list[str]:
    """Check ``argv`` and pin where Hydra writes (see the module docstring); returns the argv
    Hydra gets.  Raises :class:`DimError` (one line) for a path that would overwrite a run."""
    from dim.run.directory import lock_run_dir

    args = hydra_arguments(argv)
    if args is None:
        return argv
    overrides = parse_overrides(list(args.overrides))
    shows_only = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    other_config = args.config_path or args.config_name or args.config_dir
    if use is None or shows_only or other_config or args.experimental_rerun or launched_child():
        return argv
    mode = _value(last(overrides, "hydra.mode"))
    if args.multirun or str(mode) == "MULTIRUN":
        sweep = _path_of(overrides, "hydra.sweep.dir", config_module, config_name)
        if sweep is None:
            return argv
        taken = runs_below(sweep)
        if taken is not None:
            raise DimError(
                f"hydra.sweep.dir {sweep} already holds runs ({taken}: {holds(taken)}); choose "
                "another hydra.sweep.dir (nothing was overwritten)"
            )
        return [
            *_without(argv, overrides, ("hydra.sweep.dir",)),
            f"hydra.sweep.dir={quote(str(sweep))}",
        ]
    resume = _value(last(overrides, "resume")) if use.resume else None
    if resume not in (None, "", "null"):
        return _resume(argv, overrides, absolute(resume, "resume"), use)
    run = _path_of(overrides, "hydra.run.dir", config_module, config_name)
    if run is None:
        return argv
    if not use.writes:
        _UNUSED[run] = missing_folders(run)
        return [*_without(argv, overrides, ("hydra.run.dir",)), f"hydra.run.dir={quote(str(run))}"]
    lock_run_dir(run, command=use.command)  # a live holder first: "in use by ..." names it
    whose = holds(run)
    if whose is not None:
        raise DimError(_refusal(run, use, whose))
    return [*_without(argv, overrides, ("hydra.run.dir",)), f"hydra.run.dir={quote(str(run))}"]


def _resume(argv: list[str], overrides: list[Override], run: Path, use: RunDirUse) -> list[str]:
    """``resume=<run dir>``: the same dir, Hydra's files going to ``.hydra/resume_<time>/`` so
    the run's own ``.hydra/`` stays as it was."""
    from dim.run.directory import lock_run_dir

    if not (run / ".hydra" / "config.yaml").is_file():
        raise DimError(f"resume={run} is not a dim run directory (no .hydra/config.yaml)")
    lock_run_dir(run, command=use.command)  # a live writer may not have checkpointed yet
    if not any((run / "checkpoints").glob("*.ckpt")):
        raise DimError(f"resume={run}: the run has no checkpoints/last.ckpt to resume from")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    kept = _without(argv, overrides, ("hydra.run.dir", "hydra.output_subdir"))
    return [*kept, f"hydra.run.dir={quote(str(run))}", f"hydra.output_subdir=.hydra/resume_{stamp}"]
