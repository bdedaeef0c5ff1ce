"""dim-mine's estimators on the task families of Czyż et al. (NeurIPS 2023, "Beyond Normal").

The tasks (dim.mine.tasks) are built here with numpy/scipy and have closed-form MI: multivariate
normals (dense and sparse, 1x1 to 25x25), Student-t (1, 2 and 5 dims, 1 and 2 dof), transformed
normals (half-cube, asinh, normal CDF, wiggly, spiral, Swiss roll, bimodal), additive uniform
noise (eps 0.1 and 0.75) and high-MI normals (3 and 4 nats).  Each estimate uses the library
defaults of `dim.estimate_mi` for that estimator (what `dim-mine bound=<name>` does), 10 000
samples, one torch thread.

Targets (issue 14): median |error| <= 0.03 nats; no estimate below zero; tasks with <= 5 dims per
variable within max(0.05, 10 % of the truth); 25-d transformed tasks within 15 %; < 15 s each.

    python scripts/benchmark_mi_tasks.py                          # default estimator + KSG
    python scripts/benchmark_mi_tasks.py --estimators all         # every estimator of dim-mine
    python scripts/benchmark_mi_tasks.py --estimators mine legacy --tasks student-1x1-dof1

`legacy` is the pre-issue-14 default (`transform=zscore`, `critic=concat`).  Rows are appended to
<out>.json as they finish (a rerun with --resume skips the rows already there); <out>.md gets the
table and --plot a figure of estimate against truth.  With --resume and every requested row
already in <out>.json nothing is run: the table and the plot are rebuilt from the stored rows
(e.g. after merging a new task's rows into an earlier full run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ALL = ["mine", "mine_f", "nwj", "infonce", "dv", "jsd", "smile", "ksg"]
LEGACY = {"transform": "zscore", "critic": "concat"}


def tolerance(name: str, truth: float, x_dim: int, y_dim: int) -> float:
    """The issue's target |error| for a task (nats)."""
    if max(x_dim, y_dim) <= 5:
        return max(0.05, 0.10 * truth)
    return 0.15 * truth


def one(task: str, estimator: str, n: int, seed: int, threads: int) -> dict:
    import torch

    from dim import estimate_mi
    from dim.mine.tasks import make_task

    torch.set_num_threads(threads)
    p = make_task(task, n, seed)
    bound, extra = ("mine", LEGACY) if estimator == "legacy" else (estimator, {})
    start = time.perf_counter()
    res = estimate_mi(p.x, p.y, bound, seed=seed, threads=threads, **extra)
    seconds = time.perf_counter() - start
    assert p.true_mi is not None
    tol = tolerance(task, p.true_mi, p.x.shape[1], p.y.shape[1])
    return {
        "task": task,
        "estimator": estimator,
        "x_dim": p.x.shape[1],
        "y_dim": p.y.shape[1],
        "truth": p.true_mi,
        "estimate": res.mi_nats,
        "raw": res.raw_mi_nats,
        "ci95": list(res.ci_nats),
        "abs_error": abs(res.mi_nats - p.true_mi),
        "tolerance": tol,
        "within": abs(res.mi_nats - p.true_mi) <= tol,
        "seconds": seconds,
        "steps": res.steps,
        "warnings": res.warnings,
        "n": n,
        "seed": seed,
    }


def table(rows: list[dict], estimators: list[str]) -> str:
    """Markdown: one row per task, per estimator `estimate (|error|, s)`, target flags."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    by = {(r["task"], r["estimator"]): r for r in rows}
    head = ["task", "dims", "true MI", "target ±"] + estimators
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        first = next(r for r in rows if r["task"] == t)
        cells = [t, f"{first['x_dim']}×{first['y_dim']}", f"{first['truth']:.3f}"]
        cells.append(f"{first['tolerance']:.3f}")
        for e in estimators:
            r = by.get((t, e))
            if r is None:
                cells.append("—")
                continue
            flag = "" if r["within"] else " ✗"
            warn = " ⚠" if r["warnings"] else ""
            cells.append(
                f"{r['estimate']:.3f} ({r['abs_error']:.3f}, {r['seconds']:.0f} s){flag}{warn}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    summary = ["", "| estimator | median \\|error\\| | within target | below 0 | max s |"]
    summary.append("|---|---|---|---|---|")
    for e in estimators:
        rs = [r for r in rows if r["estimator"] == e]
        if not rs:
            continue
        med = statistics.median(r["abs_error"] for r in rs)
        ok = sum(r["within"] for r in rs)
        neg = sum(r["estimate"] < 0 for r in rs)
        slow = max(r["seconds"] for r in rs)
        summary.append(f"| {e} | {med:.3f} | {ok}/{len(rs)} | {neg} | {slow:.1f} |")
    return "\n".join(lines + summary)


def plot(rows: list[dict], estimators: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    by = {(r["task"], r["estimator"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(tasks) + 1.5))
    ypos = range(len(tasks))
    truth = [next(r for r in rows if r["task"] == t)["truth"] for t in tasks]
    ax.scatter(truth, ypos, marker="|", s=300, color="black", label="true MI", zorder=3)
    markers = "os^vD<>xP"
    for i, e in enumerate(estimators):
        pts = [(by[(t, e)]["estimate"], j) for j, t in enumerate(tasks) if (t, e) in by]
        if pts:
            ax.scatter(*zip(*pts), marker=markers[i % len(markers)], label=e, alpha=0.8)
    ax.set_yticks(list(ypos), tasks, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("I(X;Y), nats (10 000 samples)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    from dim.mine.tasks import TASKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--estimators", nargs="+", default=["mine", "ksg"])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/benchmark_mi_tasks"))
    p.add_argument("--plot", type=Path, default=None, help="e.g. docs/img/mine_tasks.png")
    p.add_argument("--resume", action="store_true", help="keep the rows already in <out>.json")
    args = p.parse_args()
    estimators = ALL if args.estimators == ["all"] else args.estimators
    unknown = set(estimators) - {*ALL, "legacy"} or set(args.tasks) - set(TASKS)
    if unknown:
        p.error(f"unknown: {sorted(unknown)}")
    out_json = args.out.with_suffix(".json")
    rows: list[dict] = []
    if args.resume and out_json.is_file():
        rows = json.loads(out_json.read_text())
    done = {(r["task"], r["estimator"]) for r in rows}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        for e in estimators:
            if (task, e) in done:
                continue
            r = one(task, e, args.n, args.seed, args.threads)
            rows.append(r)
            out_json.write_text(json.dumps(rows, indent=1) + "\n")
            print(
                f"{task:28s} {e:8s} true={r['truth']:.3f} est={r['estimate']:.3f} "
                f"err={r['abs_error']:.3f} {'ok ' if r['within'] else 'OUT'} "
                f"{r['seconds']:5.1f}s {'; '.join(r['warnings'])}",
                flush=True,
            )
    shown = [e for e in (*ALL, "legacy") if any(r["estimator"] == e for r in rows)]
    md = table(rows, shown)
    print(md)
    args.out.with_suffix(".md").write_text(md + "\n")
    if args.plot is not None:
        plot(rows, shown, args.plot)


if __name__ == "__main__":
    main()
