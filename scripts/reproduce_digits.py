"""Reproduce the paper's DIM(G) vs DIM(L) x JSD / InfoNCE / DV comparison on the shipped digits.

For every (objective, bound) this trains ``experiment=quickstart`` (scikit-learn digits upsampled to
32x32, basic32 encoder) through the real ``dim-train`` code path, loads the exported encoder with
``dim.load_encoder`` and measures, on the frozen representation Y:

- a few-label probe: logistic regression on ``--shots`` labelled images per class, drawn
  ``--probe-seeds`` times (mean +- std), scored on the 297 held-out images;
- a linear probe trained on all 1500 training labels.

The baseline is the same encoder randomly initialised (``dim.build_encoder``), mean +- std over
``--probe-seeds`` initialisations.  Features are z-scored with statistics of all training images
(no labels needed).  Writes ``<out>.md`` (the table of docs/reproduce_digits.md) and ``<out>.json``.

    python scripts/reproduce_digits.py --epochs 5
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import dim
from dim.data.sources import build_splits
from dim.training import train

ROWS = [  # (label, objective group, bound group)
    ("DIM(G) JSD", "global", "jsd"),
    ("DIM(G) NCE", "global", "infonce"),
    ("DIM(G) DV", "global", "dv"),
    ("DIM(L) JSD", "local", "jsd"),
    ("DIM(L) NCE", "local", "infonce"),
    ("DIM(L) DV", "local", "dv"),
]


@torch.no_grad()
def features(encoder: torch.nn.Module, dataset, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    encoder.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False)
    ys, labels = [], []
    for x, y in loader:
        ys.append(encoder(x)["y"].flatten(1))
        labels.append(y)
    return torch.cat(ys).numpy(), torch.cat(labels).numpy()


def probes(encoder, splits, shots: int, seeds: list[int]) -> dict[str, list[float]]:
    """Few-label accuracies (one per seed) and the all-label linear accuracy on Y."""
    x_train, y_train = features(encoder, splits.eval_train)
    x_test, y_test = features(encoder, splits.val)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    few = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(y_train == c), shots, replace=False) for c in range(10)]
        )
        clf = LogisticRegression(max_iter=2000).fit(x_train[idx], y_train[idx])
        few.append(float(clf.score(x_test, y_test)))
    full = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {"fewshot": few, "linear": [float(full.score(x_test, y_test))]}


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
    splits = build_splits({"name": "digits", "image_size": 32})
    results = []
    for label, objective, bound in ROWS:
        start = time.time()
        run = train_one(objective, bound, args.epochs, args.seed, runs)
        encoder = dim.load_encoder(run)
        r = probes(encoder, splits, args.shots, list(range(args.probe_seeds)))
        r.update(row=label, objective=objective, bound=bound, minutes=(time.time() - start) / 60)
        results.append(r)
        print(f"{label}: few-label {mean_std(r['fewshot'])}, linear {mean_std(r['linear'])}")

    random_few, random_full = [], []
    for s in range(args.probe_seeds):  # one fresh encoder and one label draw per seed
        torch.manual_seed(s)
        r = probes(
            dim.build_encoder("basic32", in_channels=1, image_size=32), splits, args.shots, [s]
        )
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
        f"beta 1, gamma 0.1); one training run per row. Few-label probe: logistic regression "
        f"on z-scored Y of {args.shots} random labelled images per class, mean ± std over "
        f"{args.probe_seeds} draws; random init: {args.probe_seeds} random basic32 encoders "
        f"(one draw each). Generated by `python scripts/reproduce_digits.py --epochs "
        f"{args.epochs}` on {platform.machine()} CPU, torch {torch.__version__}."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n" + settings + "\n")
    payload = {"settings": vars(args) | {"runs": str(runs), "out": str(args.out)}, "rows": results}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n" + table + "\n" + settings)


if __name__ == "__main__":
    main()
