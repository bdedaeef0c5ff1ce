"""Plot frozen-feature probes against epochs: the records of ``scripts/probe_epochs.py``.

Reads JSON-lines files written by ``probe_epochs.py --out`` (one run each, named by the file) or a
collected sweep (a JSON file with ``runs: [{name, what, stops}]``), and draws three panels: the
best layer's linear probe on all labels, the 20-NN vote on Y, and the best layer's probe on 10
labels per class, each against epochs, with optional target lines.

    python scripts/plot_probe_epochs.py docs/fashion_mnist/validation_sweep.json \\
        --runs dimL_1v dimL_2v amdim --targets 90 87 76 --out curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PANELS = (("linear", "linear, all labels (best layer)"), ("knn20_y", "20-NN on Y"),
          ("10shot", "10 labels per class (best layer)"))  # fmt: skip


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Runs as ``{name, what, stops}`` from sweep JSON files and ``probe_epochs`` JSON lines."""
    runs: list[dict[str, Any]] = []
    for path in paths:
        text = path.read_text()
        if path.suffix == ".json":
            runs.extend(json.loads(text)["runs"])
        else:
            stops = [json.loads(line) for line in text.splitlines() if line.strip()]
            runs.append({"name": path.stem, "what": path.stem, "stops": stops})
    return runs


def score(stop: dict[str, Any], key: str) -> float:
    """A stop's accuracy (%) under ``key``: the best layer's, for per-layer protocols."""
    value = stop[key]
    if isinstance(value, dict):
        return 100 * max(v["mean"] if isinstance(v, dict) else v for v in value.values())
    return 100 * float(value)


def plot(runs: list[dict[str, Any]], out: Path, targets: list[float] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (ax, (key, title)) in enumerate(zip(axes, PANELS, strict=True)):
        for run in runs:
            epochs = [s["epochs"] for s in run["stops"]]
            ax.plot(epochs, [score(s, key) for s in run["stops"]], "o-", label=run["what"])
        if targets:
            ax.axhline(targets[i], color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_title(title)
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    rows = -(-(len(runs) + bool(targets)) // 3)  # the legend below the panels, three per row
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.045 * rows + 0.01, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", type=Path, nargs="+", help="sweep .json or probe_epochs .jsonl files")
    p.add_argument("--runs", nargs="*", default=None, help="only these runs, in this order")
    p.add_argument("--targets", type=float, nargs=3, default=None, help="linear, kNN, 10-shot (%%)")
    p.add_argument("--out", type=Path, required=True, help="the .png to write")
    args = p.parse_args()
    runs = load(args.files)
    if args.runs:
        by_name = {r["name"]: r for r in runs}
        missing = [n for n in args.runs if n not in by_name]
        if missing:
            sys.exit(f"error: no run named {missing[0]}; runs: {', '.join(by_name)}")
        runs = [by_name[n] for n in args.runs]
    plot(runs, args.out, args.targets)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
