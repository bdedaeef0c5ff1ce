"""The DIM paper's grid on one dataset: objective x bound, the prior's effect, the negatives curve.

Every cell is a real ``dim-train`` run of the dataset's preset (``experiment=dim_<data>``) as the
paper's single-image DIM (``method.views=null``, random crops of the image padded by 4 px and
horizontal flips), with the shared budget (``--epochs``) and the cell's overrides, followed by
``dim-eval`` runs of the paper's measures on the frozen encoder:

- ``classify``: ``nonlinear`` (the paper's classifier: 200 hidden units, BN, dropout),
  ``linear`` (all labels), ``knn`` (20-NN) and ``fewshot`` (10 labels per class, several draws)
  on conv / fc / Y;
- ``table3``: the columns of the paper's Table 3 on Y: ``mine`` (I(X;Y)), ``ndm`` (with and
  without the sigmoid), ``msssim`` (an L2 decoder from Y) and ``prior`` (KS / C2ST to the prior),
  on the first seed only (as the paper's table, one run per row).

Groups of cells (``--groups``, in this order of priority; ``main`` and ``prior`` run for every
``--seeds``, ``negatives`` and ``reference`` for the first seed):

- ``main``: objective in {global, local, local_global} x bound in {jsd, infonce, dv};
- ``prior``: DIM(G)+JSD and DIM(L)+InfoNCE with ``objective.gamma=0``;
- ``negatives``: DIM(L) with each bound at the batch sizes ``--batches`` (negatives per positive:
  (B - 1) x the local map's locations; the preset's batch is the ``main`` cell itself);
- ``reference``: the encoder at its random initialisation (the floor every cell must beat), the
  two-view DIM(L) preset and the AMDIM preset, unchanged but for the budget.

Every finished step (a training run or one ``dim-eval`` run) is appended at once to the ledger
(``--ledger``, JSON: command, seed, wall time, machine, every measure, warnings and the status:
``ok``, ``nonfinite`` when training stopped on a NaN/inf loss, ``collapsed`` when Y classifies at
chance); a rerun skips finished steps and an interrupted training continues with
``dim-train resume=<run_dir>``. A grid split across processes or machines (one ``--ledger``
each) is joined with ``--merge PART...``. ``--docs DIR`` writes the ledger, a markdown table and
plots there (``scripts/paper_grid_report.py``).

    python scripts/paper_grid.py --data fashion_mnist --data-dir data --split validation \\
        --groups main --seeds 0 --runs outputs/paper_grid            # choosing settings
    python scripts/paper_grid.py --data fashion_mnist --data-dir data --split test \\
        --runs outputs/paper_grid --docs docs/paper_grid             # the grid, test split
    python scripts/paper_grid.py --data cifar10 --split test --epochs 1000 --eval-budget paper \\
        --set trainer=gpu data_on_device=true --runs outputs/paper_grid --docs docs/paper_grid
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_grid_cells import (  # noqa: E402
    EVAL_STEPS,
    GROUPS,
    NO_MONITORS,
    NONFINITE,
    SINGLE_IMAGE,
    STEPS,
    Cell,
    grid_cells,
    plan,
)
from paper_grid_ledger import Ledger  # noqa: E402

CHANCE_MARGIN = 1.5  # Y classifying below this times chance (linear and 20-NN) = collapsed


def machine() -> str:
    """CPU model, cores, torch's CPU threads, torch version (and the GPU if one is visible)."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    threads = torch.get_num_threads()  # OMP_NUM_THREADS, when grids share the cores
    return f"{name}, {os.cpu_count()} cores, {threads} threads{gpu}, torch {torch.__version__}"


def log(msg: str) -> None:
    print(f"[paper_grid {time.strftime('%H:%M:%S')}] {msg}", flush=True)


Runner = Callable[[list[str], Path], int]


def run_logged(cmd: list[str], log_file: Path) -> int:
    """Run ``cmd`` with its output appended to ``log_file``; its exit status."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode


def warning_lines(log_file: Path, since: int) -> list[str]:
    """Lines of ``log_file`` after byte ``since`` that carry a warning or an error (at most 20)."""
    if not log_file.is_file():
        return []
    with open(log_file, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    keys = ("warning", "error", "nan", "non-finite", "inf ")
    hits = [ln.strip() for ln in text.splitlines() if any(k in ln.lower() for k in keys)]
    return [h[:300] for h in hits[:20]]


def shown(cmd: list[str]) -> str:
    """The command as a user types it (console script names, not this machine's interpreter)."""
    names = {"dim.cli.train": "dim-train", "dim.cli.eval": "dim-eval"}
    if len(cmd) > 2 and cmd[1] == "-m" and cmd[2] in names:
        return shlex.join([names[cmd[2]], *cmd[3:]])
    return shlex.join(cmd)


class Grid:
    """Runs the planned cells, step by step, into the ledger."""

    def __init__(self, args: argparse.Namespace, ledger: Ledger, runner: Runner = run_logged):
        self.args, self.ledger, self.runner = args, ledger, runner
        self.machine = machine()

    def run_dir(self, cell: Cell, seed: int) -> Path:
        return self.args.runs / self.args.split / cell.name / f"seed{seed}"

    def train_command(self, cell: Cell, seed: int, run_dir: Path) -> list[str]:
        a = self.args
        base = (
            []
            if any(o.startswith("experiment=") for o in cell.overrides)
            else [f"experiment={a.preset or 'dim_' + a.data}"]
        )
        return [
            sys.executable,
            "-m",
            "dim.cli.train",
            *base,
            *(SINGLE_IMAGE if cell.single_image else []),
            *cell.overrides,
            f"data.data_dir={a.data_dir}",
            *([f"data.holdout={a.holdout}"] if a.split == "validation" else []),
            *NO_MONITORS,
            f"trainer.max_epochs={a.epochs}",
            f"seed={seed}",
            *a.set,
            f"hydra.run.dir={run_dir}",
        ]

    def train(self, cell: Cell, seed: int) -> dict[str, Any]:
        """Train (or resume) the cell; its ledger record."""
        done = self.ledger.find(cell.name, seed, "train")
        if done is not None:
            return done
        run_dir = self.run_dir(cell, seed)
        log_file = run_dir.with_name(run_dir.name + "_train.log")
        cmd = self.train_command(cell, seed, run_dir)
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            run = [sys.executable, "-m", "dim.cli.train", f"resume={run_dir}"]
        else:
            if run_dir.exists():  # stopped before its first checkpoint: start again, aside
                shutil.move(str(run_dir), str(run_dir) + f".stale-{time.strftime('%H%M%S')}")
            run = cmd
        log(f"train {cell.name} seed {seed}: {shown(run)}")
        since = log_file.stat().st_size if log_file.is_file() else 0
        start = time.perf_counter()
        rc = self.runner(run, log_file)
        wall = time.perf_counter() - start
        warnings = warning_lines(log_file, since)
        metrics_file = run_dir / "metrics.json"
        if rc != 0:
            if not any(NONFINITE.search(w) for w in warnings):
                sys.exit(
                    f"error: training {cell.name} seed {seed} failed (exit {rc}); see {log_file}"
                )
            status = "nonfinite"  # stopped by the non-finite guard: its last good checkpoint
        else:
            status = "ok"
        summary = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        record = {
            "cell": cell.name,
            "seed": seed,
            "step": "train",
            "group": cell.group,
            "label": cell.label,
            "info": cell.info,
            "command": shown(cmd),
            "resumed": run[3].startswith("resume="),
            "run_dir": str(run_dir),
            "wall_s": round(wall, 1),
            "train_seconds": summary.get("train_seconds"),
            "epochs": summary.get("epochs"),
            "global_step": summary.get("global_step"),
            "status": status,
            "warnings": warnings,
            "machine": self.machine,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        self.ledger.add(record)
        log(f"train {cell.name} seed {seed}: {status} in {wall / 60:.1f} min")
        return record

    def evaluate(self, cell: Cell, seed: int, step: str, trained: dict[str, Any]) -> None:
        if self.ledger.find(cell.name, seed, step) is not None:
            return
        run_dir = self.run_dir(cell, seed)
        out = run_dir.with_name(f"{run_dir.name}_eval") / step
        log_file = out.with_name(f"{step}.log")
        cmd = [
            sys.executable,
            "-m",
            "dim.cli.eval",
            f"run={run_dir}",
            *EVAL_STEPS[self.args.eval_budget][step],
            f"seed={seed}",
            *self.args.eval_set,
            f"hydra.run.dir={out}",
        ]
        since = log_file.stat().st_size if log_file.is_file() else 0
        start = time.perf_counter()
        if not (out / "eval.json").is_file():  # one that finished before a kill is read back
            log(f"{step} {cell.name} seed {seed}: {shown(cmd)}")
            rc = self.runner(cmd, log_file)
            if rc != 0:
                sys.exit(
                    f"error: {step} of {cell.name} seed {seed} failed (exit {rc}); see {log_file}"
                )
        wall = time.perf_counter() - start
        doc = json.loads((out / "eval.json").read_text())
        results = {
            name: {
                "values": {k: v for k, v in res["values"].items()},
                "warnings": res.get("settings", {}).get("warnings", []),
                "seconds": res.get("seconds"),
            }
            for name, res in doc["results"].items()
        }
        status = trained["status"]
        if step == "classify" and status == "ok" and collapsed(results, doc.get("n_test")):
            status = "collapsed"
        self.ledger.add(
            {
                "cell": cell.name,
                "seed": seed,
                "step": step,
                "group": cell.group,
                "label": cell.label,
                "command": shown(cmd),
                "eval_dir": str(out),
                "n_train": doc.get("n_train"),
                "n_test": doc.get("n_test"),
                "wall_s": round(wall, 1),
                "status": status,
                "results": results,
                "warnings": warning_lines(log_file, since),
                "machine": self.machine,
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
        )
        log(f"{step} {cell.name} seed {seed}: {status} in {wall / 60:.1f} min")

    def run(self, order: list[tuple[Cell, int]]) -> None:
        first = self.args.seeds[0]
        for cell, seed in order:
            if self.args.deadline and time.time() > self.args.deadline:
                log("deadline reached: no new step started")
                return
            trained = self.train(cell, seed)
            for step in cell.steps:
                if step not in self.args.steps or (step == "table3" and seed != first):
                    continue
                if self.args.deadline and time.time() > self.args.deadline:
                    log("deadline reached: no new step started")
                    return
                self.evaluate(cell, seed, step, trained)


def collapsed(results: dict[str, Any], n_test: int | None) -> bool:
    """Y no better than ``CHANCE_MARGIN`` x chance under both the linear probe and 20-NN."""
    try:
        lin = results["linear"]["values"]["y"]["mean"]
        knn = results["knn"]["values"]["k20/y"]["mean"]
    except KeyError:
        return False
    chance = 0.1  # ten balanced classes in every dataset of the grid's presets
    return max(lin, knn) < CHANCE_MARGIN * chance


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion_mnist", help="dataset: its preset is dim_<data>")
    p.add_argument("--preset", default=None, help="experiment to start from (default dim_<data>)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument(
        "--split",
        choices=("validation", "test"),
        required=True,
        help="validation: --holdout training images held out (choosing settings)",
    )
    p.add_argument("--holdout", type=int, default=10000, help="images held out for validation")
    p.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    p.add_argument("--cells", nargs="*", default=[], help="only these cell names")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=4, help="the shared training budget")
    p.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[8, 16, 32, 128],
        help="batch sizes of the negatives curve",
    )
    p.add_argument("--base-batch", type=int, default=128, help="the preset's batch size")
    p.add_argument(
        "--steps",
        nargs="+",
        choices=STEPS,
        default=list(STEPS),
        help="dim-eval steps to run after training",
    )
    p.add_argument("--eval-budget", choices=sorted(EVAL_STEPS), default="cpu")
    p.add_argument("--set", nargs="*", default=[], help="extra dim-train overrides (every cell)")
    p.add_argument("--eval-set", nargs="*", default=[], help="extra dim-eval overrides")
    p.add_argument("--runs", type=Path, default=Path("outputs/paper_grid"))
    p.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="the JSON ledger (default <runs>/<data>_<split>.json)",
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        help="first add these ledgers' records (parts of the same grid run apart)",
    )
    p.add_argument("--docs", type=Path, default=None, help="write JSON, markdown, plots here")
    p.add_argument("--report-only", action="store_true", help="write --docs, train nothing")
    p.add_argument("--deadline", type=float, default=None, help="no new step after this epoch time")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    args.ledger = args.ledger or args.runs / f"{args.data}_{args.split}.json"
    return args


def main(argv: list[str] | None = None, runner: Runner = run_logged) -> None:
    args = parse_args(argv)
    cells = grid_cells(args.data, args.batches, args.base_batch)
    unknown = sorted(set(args.cells) - {c.name for c in cells})
    if unknown:
        sys.exit(f"error: unknown cell {unknown[0]}; cells: {', '.join(c.name for c in cells)}")
    settings = {
        "epochs": args.epochs,
        "set": args.set,
        "eval_budget": args.eval_budget,
        "eval_set": args.eval_set,
        "eval_steps": EVAL_STEPS[args.eval_budget],
        "preset": args.preset or f"dim_{args.data}",
        "holdout": args.holdout if args.split == "validation" else None,
    }
    meta = {
        "data": args.data,
        "split": args.split,
        "holdout": args.holdout if args.split == "validation" else None,
        "settings": settings,
        "single_image": SINGLE_IMAGE,
        "no_monitors": NO_MONITORS,
        "eval_steps": EVAL_STEPS[args.eval_budget],
        "cells": {c.name: {"group": c.group, "label": c.label, "info": c.info} for c in cells},
        "negatives_batches": args.batches,
        "base_batch": args.base_batch,
    }
    ledger = Ledger(args.ledger, meta)
    order = plan(args, cells)
    if args.dry_run:
        grid = Grid(args, ledger, runner)
        for cell, seed in order:
            state = "trained" if ledger.find(cell.name, seed, "train") else "to train"
            cmd = grid.train_command(cell, seed, grid.run_dir(cell, seed))
            print(f"{cell.name} seed {seed} [{state}]: {shown(cmd)}")
        return
    if args.merge or not args.report_only:
        ledger.hold()
    try:
        for part in args.merge:
            added, had = ledger.merge(part)
            log(f"merged {part}: {added} records added, {had} already here")
        if not args.report_only:
            given = sys.argv[1:] if argv is None else argv
            ledger.doc["meta"]["command"] = shlex.join(["python", "scripts/paper_grid.py", *given])
            Grid(args, ledger, runner).run(order)
    finally:
        ledger.release()
    if args.docs:
        from paper_grid_report import write_report  # this folder is on sys.path (see the top)

        for path in write_report(ledger.doc, args.docs):
            log(f"wrote {path}")


if __name__ == "__main__":
    main()
