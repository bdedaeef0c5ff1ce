"""``dim-compare DIR...``: one row per training run of a sweep (see :mod:`dim.monitor.compare`).

    dim-compare multirun/2026-12-04/10-00-00                  # a sweep dir
    dim-compare outputs/quickstart/* --sort val/knn/acc_y     # run dirs or globs, best first
    dim-compare multirun/... --csv sweep.csv --json sweep.json

Unlike the other commands this one is a plain argparse program, not a Hydra app: it composes no
config and creates no run dir of its own (a Hydra app would write ``outputs/<time>/.hydra`` for
a read-only look at other runs), and its arguments are paths and globs, which Hydra's override
grammar (``key=value``) cannot take as they are.  Bad input is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from dim.cli.common import EXIT_USER_ERROR
from dim.errors import DimError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's usage block -> our one line
        print(f"error: {message} (see dim-compare --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dim-compare",
        description="Compare the training runs of a sweep: one row per run with the overrides "
        "that differ between runs, status, steps, training time, final metrics and dim-eval "
        "results.",
    )
    p.add_argument("paths", nargs="+", metavar="DIR", help="sweep dirs, run dirs or globs")
    p.add_argument(
        "--sort", metavar="COLUMN", help="order by this column, e.g. val/probe/acc_y or steps"
    )
    p.add_argument("--ascending", action="store_true", help="smallest first (default: largest)")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="PREFIX",
        default=None,
        help="final metrics shown: keys of metrics.json starting with these "
        "(default: val/probe/acc_ val/knn/acc_ val/mi/; 'all' for every one)",
    )
    p.add_argument("--csv", metavar="FILE", type=Path, help="also write the table as CSV")
    p.add_argument("--json", metavar="FILE", type=Path, help="also write the table as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing --csv/--json files")
    return p


def _expand(patterns: list[str]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        expanded = str(Path(pattern).expanduser())
        matches = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
        existing = [Path(m) for m in matches if Path(m).exists()]
        if not existing:
            raise DimError(f"{pattern}: no such file or directory")
        paths += existing
    return paths


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "train_time" and isinstance(value, int | float):
        return str(timedelta(seconds=int(round(value))))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _check_out(path: Path | None, overwrite: bool) -> None:
    if path is None:
        return
    if path.is_dir():
        raise DimError(f"{path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise DimError(f"{path} exists; pass --overwrite to replace it (nothing written)")
    if not path.parent.is_dir():
        raise DimError(f"{path}: folder {path.parent} does not exist")


def print_table(rows: list[dict], out: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    for key in rows[0]:
        table.add_column(key, justify="left" if key in ("run", "status") else "right")
    for row in rows:
        table.add_row(*(_cell(k, v) for k, v in row.items()))
    stream = out or sys.stdout
    # A terminal: rich fits the table to it; a file gets every column at full width.
    full = sum(3 + max(len(k), *(len(_cell(k, r[k])) for r in rows)) for k in rows[0]) + 1
    Console(file=stream, width=None if stream.isatty() else full).print(table)


def compare(argv: list[str]) -> int:
    from dim.monitor.compare import (
        DEFAULT_METRICS,
        attach_evals,
        find_runs,
        read_run,
        sort_rows,
        table,
    )

    args = parser().parse_args(argv)
    for out in (args.csv, args.json):
        _check_out(out, args.overwrite)
    paths = _expand(args.paths)
    run_dirs, eval_files, torn = find_runs(paths)
    if torn and not run_dirs:
        path, why = next(iter(torn.items()))
        more = f" (and {len(torn) - 1} more run dirs like it)" if len(torn) > 1 else ""
        raise DimError(
            f"{path} is a run whose .hydra/config.yaml is torn ({why}){more}; no readable "
            "training runs to compare"
        )
    for path, why in torn.items():  # the others are compared
        print(f"warning: {path}: its .hydra/config.yaml is torn ({why}); skipped", file=sys.stderr)
    if not run_dirs:
        raise DimError(
            f"no training runs found in {', '.join(args.paths)} (a run dir holds "
            ".hydra/config.yaml of dim-train)"
        )
    runs = [read_run(p) for p in run_dirs]
    attach_evals(runs, eval_files)
    prefixes = tuple(args.metrics) if args.metrics else DEFAULT_METRICS
    rows = table(runs, ("",) if prefixes == ("all",) else prefixes)
    if args.sort:
        rows = sort_rows(rows, args.sort, descending=not args.ascending)
    print_table(rows)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"csv:  {args.csv}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


def main() -> None:
    """Console script ``dim-compare``."""
    from dim.monitor.warnings_filter import quiet_third_party

    quiet_third_party()
    try:
        sys.exit(compare(sys.argv[1:]))
    except DimError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
