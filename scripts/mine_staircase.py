"""The staircase benchmark (Poole et al. 2019; Song & Ermon 2020, Fig. 1).

20-d correlated Gaussians whose true MI steps 2 -> 4 -> 6 -> 8 -> 10 nats during training, with
fresh batches every step.  For each bound, plots the training estimate (per-step batch value,
averaged over each logging window) and the held-out estimate against the true MI; InfoNCE's
ceiling log(batch) is drawn too.  Writes <out>/mine_staircase.png (numbers: --json).

    python scripts/mine_staircase.py --out docs/img --jobs 2
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

BOUNDS = ["mine", "nwj", "infonce", "smile"]


def one(job: dict) -> dict:
    """Walk the staircase with one bound (in a worker process)."""
    from dim.mine import estimate_staircase
    from dim.mine.pairs import Staircase

    task = Staircase(job["dim"], job["levels"], job["steps_per_level"], job["cubic"])
    kw = {"tau": job["tau"]} if job["bound"] == "smile" else {}
    if job["lr"] is not None:
        kw["lr"] = job["lr"]
    res = estimate_staircase(
        task,
        job["bound"],
        batch_size=job["batch_size"],
        eval_every=job["eval_every"],
        seed=job["seed"],
        **kw,
    )
    return {**job, "curve": [asdict(p) for p in res.curve], "seconds": res.seconds}


def plot(rows: list[dict], path: Path) -> None:
    """One panel per bound: train and held-out estimates over steps, the true MI as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.8), sharey=True)
    axes = [axes] if len(rows) == 1 else axes
    for ax, row in zip(axes, rows):
        c = row["curve"]
        steps = [p["step"] for p in c]
        ax.plot(steps, [p["train_mi"] for p in c], color="tab:blue", alpha=0.6, label="train")
        ax.plot(steps, [p["heldout_mi"] for p in c], color="tab:red", lw=1.5, label="held-out")
        ax.step(steps, [p["true_mi"] for p in c], "k-", where="pre", lw=1.2, label="true MI")
        if row["bound"] == "infonce":
            ax.axhline(math.log(row["batch_size"]), color="gray", ls=":", label="log(batch)")
        name = f"smile (τ={row['tau']:g})" if row["bound"] == "smile" else row["bound"]
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("I(X;Y) [nats]")
    axes[0].set_ylim(0, max(row["levels"][-1] for row in rows) + 2)
    axes[-1].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bounds", nargs="+", default=BOUNDS)
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--levels", type=float, nargs="+", default=[2, 4, 6, 8, 10])
    p.add_argument("--steps-per-level", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--lr", type=float, default=None, help="default: the staircase's (1e-3)")
    p.add_argument("--tau", type=float, default=5.0, help="SMILE clipping")
    p.add_argument("--cubic", action="store_true", help="y -> y^3 (same MI)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="bounds run at the same time")
    p.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNG")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = p.parse_args()
    jobs = [
        {
            "bound": b,
            "dim": args.dim,
            "levels": args.levels,
            "steps_per_level": args.steps_per_level,
            "batch_size": args.batch_size,
            "eval_every": args.eval_every,
            "lr": args.lr,
            "tau": args.tau,
            "cubic": args.cubic,
            "seed": args.seed,
        }
        for b in args.bounds
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(one, jobs))
    for r in rows:
        last = r["curve"][-1]
        print(f"{r['bound']:<8} final held-out {last['heldout_mi']:.3f} (true {last['true_mi']:g})")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "mine_staircase.png")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out / 'mine_staircase.png'}")


if __name__ == "__main__":
    main()
