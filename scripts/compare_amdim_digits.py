"""AMDIM vs DIM(L) on the shipped digits: ``amdim_quickstart`` against ``quickstart``.

For each training seed, both presets are trained through the real ``dim-train`` code path and
their frozen Y is probed with ``dim-eval``'s ``fewshot`` protocol (logistic regression on
``--shots`` labelled images per class, ``--probe-seeds`` draws, scored on the 297 held-out digits)
and its ``linear`` protocol (all 1500 labels).  Training time is reported as wall-clock and as
CPU time of this process (all threads).  Writes ``<out>.json`` and prints a markdown table.

    python scripts/compare_amdim_digits.py --seeds 0 1 2
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
from reproduce_digits import mean_std, probes

from dim.training import train

PRESETS = {"DIM(L) (quickstart)": "quickstart", "AMDIM (amdim_quickstart)": "amdim_quickstart"}


def train_preset(preset: str, seed: int, run: Path, extra: list[str]) -> tuple[float, float]:
    """Train ``experiment=<preset>`` into ``run``; returns (wall seconds, CPU seconds)."""
    overrides = [
        f"experiment={preset}",
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        *extra,
    ]
    with initialize_config_module("dim.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    run.mkdir(parents=True, exist_ok=False)
    (run / ".hydra").mkdir()  # a run dir like dim-train's: dim-eval reads its data config
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    wall, cpu = time.perf_counter(), time.process_time()
    train(cfg, run, None)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, default=5, help="labelled images per class")
    parser.add_argument("--probe-seeds", type=int, default=5)
    parser.add_argument("--amdim", nargs="*", default=[], help="extra amdim_quickstart overrides")
    parser.add_argument("--runs", type=Path, default=Path("outputs/compare_amdim_digits"))
    parser.add_argument("--out", type=Path, default=Path("docs/amdim_digits"))
    args = parser.parse_args()

    runs = args.runs / time.strftime("%Y-%m-%d_%H-%M-%S")
    rows = []
    for label, preset in PRESETS.items():
        few, linear, walls, cpus = [], [], [], []
        for seed in args.seeds:
            run = runs / f"{preset}_seed{seed}"
            extra = args.amdim if preset.startswith("amdim") else []
            wall, cpu = train_preset(preset, seed, run, extra)
            r = probes(run, run / "eval", args.shots, args.probe_seeds)
            few.append(float(np.mean(r["fewshot"])))
            linear.append(float(np.mean(r["linear"])))
            walls.append(wall)
            cpus.append(cpu)
            print(
                f"{label} seed {seed}: {args.shots}-shot {100 * few[-1]:.1f} %, linear "
                f"{100 * linear[-1]:.1f} %, {wall / 60:.1f} min ({cpu / 60:.1f} CPU-min)"
            )
        rows.append(
            dict(row=label, preset=preset, fewshot=few, linear=linear, wall_s=walls, cpu_s=cpus)
        )

    table = (
        f"| method | Y, {args.shots} labels/class (%) | Y, linear, all labels (%) | training "
        "(min, wall / CPU) |\n|---|---|---|---|\n"
    )
    table += "".join(
        f"| {r['row']} | {mean_std(r['fewshot'])} | {mean_std(r['linear'])} | "
        f"{np.mean(r['wall_s']) / 60:.1f} / {np.mean(r['cpu_s']) / 60:.1f} |\n"
        for r in rows
    )
    settings = (
        f"Training seeds {args.seeds} (mean ± std over seeds of each seed's mean over "
        f"{args.probe_seeds} label draws); extra AMDIM overrides: {args.amdim or 'none'}. "
        f"`python scripts/compare_amdim_digits.py` on {platform.machine()} CPU "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": vars(args) | {"runs": os.path.relpath(runs), "out": os.path.relpath(args.out)},
        "rows": rows,
    }
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print("\n" + table + "\n" + settings)


if __name__ == "__main__":
    main()
