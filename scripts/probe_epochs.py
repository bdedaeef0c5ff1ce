"""Frozen-feature probes of one training run at several epochs: accuracy against epochs.

Trains ``dim-train experiment=<preset> [overrides]`` to the first of ``--epochs``, then continues
the same run dir (``dim-train resume=<run> trainer.max_epochs=E``; resume is exact, so the run
equals one uninterrupted run) to each next one. After each stop it embeds the training and
evaluation splits (``dim-embed``'s code) and measures, on every layer, the protocols of
``scripts/reproduce_fashion_mnist.py``: the linear probe on all labels (``dim-eval``'s protocol),
the 20-NN vote on Y and logistic regression on 10 labels per class (5 draws). The probes of one
stop run in a thread while the next stop trains. One JSON line per stop goes to ``--out``, with
the training wall time so far, so a GPU run can say after how many epochs (and minutes) a preset
reaches a target:

    python scripts/probe_epochs.py --preset dim_fashion_mnist --epochs 4 8 16 32 \\
        --data-dir data --holdout 10000 --run outputs/curve_dim --out curve_dim.jsonl \\
        --set trainer=gpu

``--holdout N`` validates on N images held out of the training split (choosing settings); without
it the evaluation split is the test split. ``--deadline S`` starts no new stop after S seconds.
``--extend`` continues a run this script stopped earlier to further stops (same ``--run`` and
``--out``; its training minutes carry on from the last line of ``--out``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_fashion_mnist import TAPS, few_labels, knn, linear_all, log, zscore  # noqa: E402


def train_to(epochs: int, first: bool, args: argparse.Namespace) -> float:
    """Train (or continue) the run to ``epochs``; the wall seconds of this stop."""
    if first:
        cmd = [
            f"experiment={args.preset}",
            f"data.data_dir={args.data_dir}",
            f"hydra.run.dir={args.run}",
            *([f"data.holdout={args.holdout}"] if args.holdout else []),
            *args.set,
        ]
    else:
        cmd = [f"resume={args.run}"]
    cmd = [sys.executable, "-m", "dim.cli.train", *cmd, f"trainer.max_epochs={epochs}"]
    log("train: " + shlex.join(cmd[1:]))
    start = time.perf_counter()
    with open(args.run.parent / f"{args.run.name}.log", "a") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"error: training to epoch {epochs} failed (exit {proc.returncode})")
    return time.perf_counter() - start


def features(args: argparse.Namespace, epochs: int) -> tuple[dict, dict]:
    """Train and evaluation features of the run as it is now (in memory; written beside the run
    with ``--keep-features``)."""
    from dim.eval.embed import embedding_arrays, write_embedding

    patches: dict[str, Any] = {"data_dir": str(args.data_dir)}
    if args.holdout:
        patches["holdout"] = args.holdout
    out = []
    for split in ("train", "test"):
        how = {"split": split, "seed": args.seed, "data_patches": patches}
        if args.keep_features:
            path = args.run / "probe_epochs" / f"epoch{epochs:04d}_{split}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = write_embedding(args.run, path, **how)
        else:
            arrays = embedding_arrays(args.run, **how)
        out.append({k: v if k == "labels" else v.reshape(len(v), -1) for k, v in arrays.items()})
    return out[0], out[1]


def probe(train: dict, test: dict, args: argparse.Namespace) -> dict[str, Any]:
    """Linear (all labels) and 10-per-class probes of every layer, 20-NN on Y."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ytr, yte = train["labels"], test["labels"]
    row: dict[str, Any] = {"linear": {}, "10shot": {}}
    for tap in TAPS:
        xtr, xte = zscore(train[tap], test[tap])
        row["linear"][tap] = linear_all(xtr, ytr, xte, yte, args.seed, device=device)
        accs = few_labels(xtr, ytr, xte, yte, 10, args.draws, args.seed)
        row["10shot"][tap] = {"mean": float(np.mean(accs)), "std": float(np.std(accs))}
    row["knn20_y"] = knn(train["y"], ytr, test["y"], yte)
    return row


def extended_wall(args: argparse.Namespace) -> float:
    """Training seconds so far of the run that ``--extend`` continues, from its last stop (and
    its overrides, for the records, when ``--set`` is not given)."""
    if not (args.run / "checkpoints").is_dir():
        sys.exit(f"error: --extend needs a run this script trained; {args.run} has no checkpoints")
    lines = args.out.read_text().splitlines() if args.out.is_file() else []
    if not lines:
        sys.exit(f"error: --extend needs the JSON lines of the earlier stops; {args.out} has none")
    last = json.loads(lines[-1])
    if args.epochs[0] <= last["epochs"]:
        sys.exit(f"error: {args.out} already reaches epoch {last['epochs']}; stops must go past it")
    args.set = args.set or last.get("set", [])  # the resumed run keeps its own overrides
    return 60 * float(last["train_min"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True, help="experiment config, e.g. dim_fashion_mnist")
    p.add_argument("--epochs", type=int, nargs="+", required=True, help="stops, increasing")
    p.add_argument("--run", type=Path, required=True, help="the run dir (created)")
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one per stop (appended)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--holdout", type=int, default=None, help="validate on N training images")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", type=float, default=None, help="no new stop after S seconds")
    p.add_argument("--keep-features", action="store_true")
    p.add_argument("--set", nargs="*", default=[], help="extra dim-train overrides")
    p.add_argument("--extend", action="store_true", help="continue --run to further stops")
    args = p.parse_args()
    if args.epochs != sorted(set(args.epochs)) or args.epochs[0] < 1:
        sys.exit(f"error: --epochs must increase and be >= 1; got {args.epochs}")
    wall = 0.0
    if args.extend:
        wall = extended_wall(args)
    elif args.run.exists():
        sys.exit(f"error: {args.run} exists; give a new --run, or --extend to continue it")
    args.run.parent.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start, pending = time.perf_counter(), None
    failed: list[str] = []  # a probe thread's error, reported by the main thread
    for i, epochs in enumerate(args.epochs):
        if i and args.deadline and time.perf_counter() - start > args.deadline:
            log(f"deadline: stopping before epoch {epochs}")
            break
        wall += train_to(epochs, i == 0 and not args.extend, args)
        train, test = features(args, epochs)
        if pending is not None:
            pending.join()
        record = {
            "preset": args.preset,
            "set": args.set,
            "epochs": epochs,
            "train_min": wall / 60,
            "split": "holdout" if args.holdout else "test",
        }

        def work(train: dict = train, test: dict = test, record: dict = record) -> None:
            try:
                record.update(probe(train, test, args))
            except Exception as err:  # noqa: BLE001 - any failure ends the script, named
                failed.append(f"probing epoch {record['epochs']} failed: {err!r}")
                return
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
            log(f"epoch {record['epochs']}: {json.dumps(record)}")

        if failed:
            break
        pending = threading.Thread(target=work)
        pending.start()
    if pending is not None:
        pending.join()
    if failed:
        sys.exit(f"error: {failed[0]}")


if __name__ == "__main__":
    main()
