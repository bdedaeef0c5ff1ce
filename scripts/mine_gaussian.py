"""Reproduce the MINE paper's Gaussian experiment (Belghazi et al. 2018, Fig. 1).

x, y in R^d with per-coordinate correlation rho, d = 2 and 20, rho swept over (-1, 1):
true I(X;Y) = -(d/2) log(1 - rho^2) against MINE (`dim.estimate_mi`, default settings, held-out
estimate) and the KSG k-NN estimator.  Writes <out>/mine_gaussian.png (numbers: --json).
Estimates that came with a warning (dim.mine.diagnostics) are drawn hollow; those above the
panel's top (1.3x the largest true MI) are pinned to it with their value written next to them.

    python scripts/mine_gaussian.py --out docs/img --jobs 2
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RHOS = [-0.99, -0.9, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 0.9, 0.99]


def one(job: dict) -> dict:
    """One (dim, rho, bound) estimate in a worker process."""
    from dim import estimate_mi
    from dim.mine.pairs import gaussian_pairs

    pairs = gaussian_pairs(job["n"], job["dim"], rho=job["rho"], seed=job["seed"])
    res = estimate_mi(pairs.x, pairs.y, job["bound"], seed=job["seed"])
    return {
        **job,
        "true_mi": pairs.true_mi,
        "estimate": res.mi_nats,
        "stderr": res.stderr_nats,
        "seconds": res.seconds,
        "warnings": res.warnings,
    }


def plot(rows: list[dict], dims: list[int], path: Path) -> None:
    """Two panels (one per dimension): truth curve, MINE and KSG estimates against rho."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dim.mine.pairs import gaussian_mi

    fig, axes = plt.subplots(1, len(dims), figsize=(5.2 * len(dims), 4.2), squeeze=False)
    grid = np.linspace(-0.995, 0.995, 401)
    style = {"mine": ("MINE", "tab:blue", "o"), "ksg": ("KSG", "tab:orange", "s")}
    for ax, dim in zip(axes[0], dims):
        truth = [gaussian_mi(r, dim) for r in grid]
        top = 1.3 * max(r["true_mi"] for r in rows if r["dim"] == dim)
        ax.plot(grid, truth, "k-", lw=1.5, label="true MI")
        for bound, (label, color, marker) in style.items():
            pts = sorted(
                (r["rho"], r["estimate"], bool(r.get("warnings")))
                for r in rows
                if r["dim"] == dim and r["bound"] == bound
            )
            if not pts:
                continue
            rho = [p[0] for p in pts]
            shown = [min(p[1], top) for p in pts]
            ax.plot(rho, shown, color=color, ls="--", lw=1, label=label)
            for r, v, (_, est, warned) in zip(rho, shown, pts):
                face = "none" if warned else color
                ax.plot(r, v, marker=marker, color=color, mfc=face, ls="none")
                if est > top:
                    ax.annotate(f"{est:.0f}", (r, v), textcoords="offset points", xytext=(4, -12))
        ax.plot([], [], "o", color="gray", mfc="none", ls="none", label="with a warning")
        ax.set_ylim(-0.03 * top, top * 1.02)
        ax.set_title(f"{dim}-d correlated Gaussians")
        ax.set_xlabel("correlation ρ")
        ax.set_ylabel("I(X;Y) [nats]")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[2, 20])
    p.add_argument("--rhos", type=float, nargs="+", default=RHOS)
    p.add_argument("--bounds", nargs="+", default=["mine", "ksg"])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="estimates run at the same time")
    p.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNG")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = p.parse_args()
    jobs = [
        {"dim": d, "rho": r, "bound": b, "n": args.n, "seed": args.seed}
        for d in args.dims
        for r in args.rhos
        for b in args.bounds
    ]
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(one, jobs):
            rows.append(r)
            print(
                f"dim={r['dim']:>2} rho={r['rho']:+.2f} {r['bound']:<5} true={r['true_mi']:7.3f} "
                f"est={r['estimate']:7.3f} ({r['seconds']:.1f}s) warnings={len(r['warnings'])}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.dims, args.out / "mine_gaussian.png")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out / 'mine_gaussian.png'}")


if __name__ == "__main__":
    main()
