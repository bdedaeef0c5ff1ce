"""The paper grid's cells and evaluation budgets (``scripts/paper_grid.py``): which ``dim-train``
overrides each cell adds, which ``dim-eval`` options each evaluation step runs, and the order in
which (cell, seed) pairs run."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = {"global": "DIM(G)", "local": "DIM(L)", "local_global": "DIM(L+G)"}
BOUNDS = {"jsd": "JSD", "infonce": "NCE", "dv": "DV"}
GROUPS = ("main", "prior", "negatives", "reference")
STEPS = ("classify", "table3")
#: the paper's single-image DIM: one image per item, crops of the padded image and flips
SINGLE_IMAGE = ["method.views=null", "data.augment.crop_padding=4", "data.augment.hflip=true"]
#: training reads no evaluation split: no online probes, kNN monitor or projector (the test
#: split is then read once per cell, by dim-eval)
NO_MONITORS = [
    "trainer.limit_val_batches=0",
    "callbacks.knn.every_n_epochs=0",
    "callbacks.projector.num_images=0",
    "model.probe=false",
]
#: how dim-train's non-finite guard words its stop (dim.methods.base.check_nonfinite)
NONFINITE = re.compile(r"became (nan|-?inf)\b|non-finite", re.IGNORECASE)

#: dim-eval options per step and budget: "paper" keeps every protocol's own defaults (GPU),
#: "cpu" shortens the costly ones for two CPU cores, "smoke" is for the script's tests. One
#: dim-eval run per step: the features of the 70k images are extracted once for the classifiers
#: (on two busy CPU cores the extraction costs as much as the probes). On a CPU shared with other
#: jobs one thread per process avoids the OpenMP threads' waits on each other (num_threads=1).
EVAL_STEPS: dict[str, dict[str, list[str]]] = {
    "paper": {
        "classify": ["eval=[nonlinear,linear,knn,fewshot]", "eval.fewshot.shots=[10]"],
        "table3": ["eval=[mine,ndm,prior,msssim]", "features=[y]"],
    },
    "cpu": {
        "classify": [
            "eval=[nonlinear,linear,knn,fewshot]",
            "num_threads=1",
            "eval.fewshot.shots=[10]",
            "eval.fewshot.seeds=5",
            "eval.linear.seeds=3",
            "eval.linear.epochs=15",
            "eval.nonlinear.epochs=10",
            "eval.nonlinear.lr=1e-3",
            "eval.nonlinear.milestones=[5,8]",
            "eval.nonlinear.batch_size=128",
            "eval.nonlinear.last_epochs=2",
        ],
        "table3": [
            "eval=[mine,ndm,prior,msssim]",
            "features=[y]",
            "num_threads=1",
            "max_train=10000",
            "eval.ndm.steps=200",
            "eval.ndm.batch_size=5000",
            "eval.prior.seeds=2",
            "eval.msssim.epochs=5",
        ],
    },
    "smoke": {
        "classify": [
            "eval=[nonlinear,linear,knn,fewshot]",
            "eval.fewshot.shots=[2]",
            "eval.fewshot.seeds=2",
            "eval.fewshot.steps=5",
            "eval.linear.seeds=1",
            "eval.linear.epochs=1",
            "eval.nonlinear.epochs=1",
            "eval.nonlinear.last_epochs=1",
        ],
        "table3": [
            "eval=[mine,ndm,prior,msssim]",
            "features=[y]",
            "eval.mine.train.max_steps=20",
            "eval.mine.train.eval_every=10",
            "eval.ndm.steps=5",
            "eval.ndm.batch_size=200",
            "eval.prior.seeds=1",
            "eval.prior.max_iter=5",
            "eval.msssim.epochs=1",
        ],
    },
}


@dataclass(frozen=True)
class Cell:
    """One row of the grid: a name, its group and its ``dim-train`` overrides."""

    name: str
    group: str
    label: str
    overrides: tuple[str, ...]
    single_image: bool = True
    steps: tuple[str, ...] = ("classify", "table3")
    info: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def grid_cells(data: str, batches: list[int], base_batch: int) -> list[Cell]:
    """Every cell of the grid, in order of priority."""
    cells = []
    for obj, olabel in OBJECTIVES.items():
        for bound, blabel in BOUNDS.items():
            cells.append(
                Cell(
                    f"{obj}-{bound}",
                    "main",
                    f"{olabel} {blabel}",
                    (f"objective={obj}", f"bound={bound}"),
                    info={"objective": obj, "bound": bound, "gamma0": False},
                )
            )
    for obj, bound in (("global", "jsd"), ("local", "infonce")):
        cells.append(
            Cell(
                f"{obj}-{bound}-gamma0",
                "prior",
                f"{OBJECTIVES[obj]} {BOUNDS[bound]}, gamma = 0",
                (f"objective={obj}", f"bound={bound}", "objective.gamma=0"),
                info={"objective": obj, "bound": bound, "gamma0": True},
            )
        )
    for bound in BOUNDS:
        for b in batches:
            if b == base_batch:
                continue  # the main cell local-<bound> itself
            cells.append(
                Cell(
                    f"local-{bound}-b{b}",
                    "negatives",
                    f"DIM(L) {BOUNDS[bound]}, batch {b}",
                    ("objective=local", f"bound={bound}", f"data.batch_size={b}"),
                    steps=("classify",),
                    info={"objective": "local", "bound": bound, "batch": b},
                )
            )
    cells.append(
        Cell(
            "random-init",
            "reference",
            "basic32 at random initialisation (no training)",
            # one step at learning rate 0: Adam moves no weight (its step and its weight decay
            # are both scaled by the rate), batch norm's running statistics see one batch; the
            # floor every cell's measures must beat to have learned anything
            ("objective=local", "bound=jsd", "trainer.max_steps=1", "optim.lr=0"),
            steps=("classify",),
        )
    )
    cells.append(
        Cell(
            "dim-two-views",
            "reference",
            f"dim_{data} preset (DIM(L) NCE, two views)",
            (),
            single_image=False,
            steps=("classify",),
        )
    )
    cells.append(
        Cell(
            "amdim",
            "reference",
            f"amdim_{data} preset",
            (f"experiment=amdim_{data}",),
            single_image=False,
            steps=("classify",),
        )
    )
    return cells


def plan(args: argparse.Namespace, cells: list[Cell]) -> list[tuple[Cell, int]]:
    """(cell, seed) in the order they run: the main grid seed by seed, then the prior rows (every
    seed), then the negatives and reference rows (first seed)."""
    chosen = [
        c for c in cells if c.group in args.groups and (not args.cells or c.name in args.cells)
    ]
    order: list[tuple[Cell, int]] = []
    for seed in args.seeds:
        order += [(c, seed) for c in chosen if c.group == "main"]
    for seed in args.seeds:
        order += [(c, seed) for c in chosen if c.group == "prior"]
    for group in ("negatives", "reference"):
        order += [(c, args.seeds[0]) for c in chosen if c.group == group]
    return order
