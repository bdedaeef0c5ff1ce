"""Reproduce the paper's DIM(G) vs DIM(L) x JSD / InfoNCE / DV comparison on the shipped digits.

For every (objective, bound) this trains ``experiment=quickstart`` (scikit-learn digits upsampled to
32x32, basic32 encoder) through the real ``dim-train`` code path and measures, on the frozen
representation Y, with ``dim-eval``'s own protocols (the code of ``dim-eval eval=fewshot,linear``,
run through :func:`dim.eval.runner.evaluate`, which writes each run's ``eval/eval.json``):

- ``fewshot``: logistic regression on ``--shots`` labelled images per class, drawn
  ``--probe-seeds`` times (mean +- std), scored on the 297 held-out images;
- ``linear``: a linear probe trained on all 1500 training labels (mean +- std over its seeds).

The baseline is the same encoder randomly initialised (``init=random``), one draw for each of
``--probe-seeds`` initialisations.  Writes ``<out>.md`` (the table of docs/reproduce_digits.md)
and ``<out>.json``.

    python scripts/reproduce_digits.py --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dim.eval.runner import evaluate
from dim.training import train

ROWS = [  # (label, objective group, bound group)
    ("DIM(G) JSD", "global", "jsd"),
    ("DIM(G) NCE", "global", "infonce"),
    ("DIM(G) DV", "global", "dv"),
    ("DIM(L) JSD", "local", "jsd"),
    ("DIM(L) NCE", "local", "infonce"),
    ("DIM(L) DV", "local", "dv"),
]


def probes(run: Path | None, out: Path, shots: int, seeds: int, seed: int = 0) -> dict:
    """Few-label and all-label accuracies on Y (lists of per-draw values) from dim-eval's
    protocols; ``run=None`` probes a random basic32 encoder (``init=random`` of the first run)."""
    settings = {
        "run": str(run),
        "init": "trained",
        "seed": seed,
        "device": "cpu",
        "features": ["y"],
    }
    if run is None:
        settings.update(run=str(out.parent), init="random")
    doc = evaluate(settings, {"fewshot": {"shots": [shots], "seeds": seeds}, "linear": {}}, out)
    results = doc["results"]
    return {
        "fewshot": results["fewshot"]["values"][f"{shots}shot/y"]["values"],
        "linear": results["linear"]["values"]["y"]["values"],
    }


def train_one(objective: str, bound: str, epochs: int, seed: int, runs: Path) -> Path:
    run = runs / f"{objective}_{bound}"
    overrides = [
        "experiment=quickstart",
        f"objective={objective}",
        f"bound={bound}",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"seed={seed}",
    ]
    with initialize_config_module("dim.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    run.mkdir(parents=True, exist_ok=False)
    (run / ".hydra").mkdir()  # a run dir like dim-train's: dim-eval reads its data config
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    train(cfg, run, None)
    return run


def mean_std(values: list[float]) -> str:
    pct = 100 * np.asarray(values)
    return f"{pct.mean():.1f} ± {pct.std():.1f}" if len(pct) > 1 else f"{pct.mean():.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--shots", type=int, default=10, help="labelled images per class")
    parser.add_argument("--probe-seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--runs", type=Path, default=Path("outputs/reproduce_digits"))
    parser.add_argument("--out", type=Path, default=Path("docs/reproduce_digits"))
    args = parser.parse_args()

    runs = args.runs / time.strftime("%Y-%m-%d_%H-%M-%S")
    results = []
    for label, objective, bound in ROWS:
        start = time.time()
        run = train_one(objective, bound, args.epochs, args.seed, runs)
        r = probes(run, run / "eval", args.shots, args.probe_seeds)
        r.update(row=label, objective=objective, bound=bound, minutes=(time.time() - start) / 60)
        results.append(r)
        print(f"{label}: few-label {mean_std(r['fewshot'])}, linear {mean_std(r['linear'])}")

    random_few, random_full = [], []
    first = runs / f"{ROWS[0][1]}_{ROWS[0][2]}"
    for s in range(args.probe_seeds):  # one fresh encoder and one label draw per seed
        r = probes(None, first / f"eval_random{s}", args.shots, 1, seed=s)
        random_few += r["fewshot"]
        random_full += r["linear"]
    results.append(
        dict(row="random init", objective=None, bound=None, fewshot=random_few, linear=random_full)
    )

    header = (
        f"| model | Y, {args.shots} labels/class (%) | Y, linear on all 1500 labels (%) |\n"
        "|---|---|---|\n"
    )
    table = header + "".join(
        f"| {r['row']} | {mean_std(r['fewshot'])} | {mean_std(r['linear'])} |\n" for r in results
    )
    settings = (
        f"Settings: `experiment=quickstart objective=<global|local> bound=<jsd|infonce|dv> "
        f"trainer.max_epochs={args.epochs} seed={args.seed}` (basic32, mi_units 256, Adam 5e-4, "
        f"batch 64, 1500 train / 297 held-out digits at 32x32; DIM(G): alpha 1, gamma 1; DIM(L): "
        f"beta 1, gamma 0.1); one training run per row. Probes: dim-eval's fewshot "
        f"(logistic regression on z-scored Y of {args.shots} random labelled images per class, "
        f"mean ± std over {args.probe_seeds} draws) and linear protocols with their default "
        f"options; random init: {args.probe_seeds} random basic32 encoders (one draw each). "
        f"Generated by `python scripts/reproduce_digits.py --epochs {args.epochs}` on "
        f"{platform.machine()} CPU, torch {torch.__version__}."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n" + settings + "\n")
    payload = {
        "settings": vars(args) | {"runs": os.path.relpath(runs), "out": os.path.relpath(args.out)},
        "rows": results,
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n" + table + "\n" + settings)


if __name__ == "__main__":
    main()
