"""The paper grid's ledger as docs: a copy of the JSON, a markdown page of tables, and plots.

Used by ``scripts/paper_grid.py --docs DIR``; also on its own:

    python scripts/paper_grid_report.py outputs/paper_grid/fashion_mnist_test.json docs/paper_grid

Every number is read from the ledger; a planned cell without a finished step shows as missing,
a diverged (non-finite) or collapsed one says so in its status column.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

#: the paper's CIFAR-10 numbers (Hjelm et al. 2019): Table 1's non-linear classifier on
#: conv / fc / Y, and Table 3's MS-SSIM, MINE I(X;Y) and NDM (without the sigmoid)
PAPER_CIFAR10: dict[str, dict[str, Any]] = {
    "global-jsd": {
        "nonlinear": (52.2, 52.84, 43.17),
        "msssim": 0.49,
        "mine": 49.63,
        "ndm": (0.35, 9.96),
    },
    "local-jsd": {
        "nonlinear": (73.25, 73.62, 66.96),
        "msssim": 0.37,
        "mine": 45.09,
        "ndm": (0.18, 9.18),
    },
    "local-infonce": {"nonlinear": (75.21, 75.57, 69.13)},
    "local_global-jsd": {"msssim": 0.53, "mine": 101.65, "ndm": (0.5, 22.89)},
}
TAPS = ("conv", "fc", "y")


def seed_values(doc: dict, cell: str, step: str, protocol: str, key: str) -> list[float]:
    """The per-seed means of one measure of one cell (seeds in ledger order)."""
    out = []
    for rec in doc["records"]:
        if rec["cell"] == cell and rec["step"] == step:
            try:
                out.append(float(rec["results"][protocol]["values"][key]["mean"]))
            except (KeyError, TypeError):
                pass
    return out


def draw_values(doc: dict, cell: str, protocol: str, key: str) -> list[float]:
    """Every draw of every seed (the few-label probe's draws)."""
    out: list[float] = []
    for rec in doc["records"]:
        if rec["cell"] == cell and rec["step"] == "classify":
            try:
                out += [float(v) for v in rec["results"][protocol]["values"][key]["values"]]
            except (KeyError, TypeError):
                pass
    return out


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` (std over the values when there are several), or ``-``."""
    if not values:
        return "-"
    m = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def cell_status(doc: dict, cell: str) -> tuple[list[int], str]:
    """(trained seeds, status): ``ok``, ``nonfinite (seed s)``, ``collapsed (seed s)``."""
    seeds, notes = [], []
    for rec in doc["records"]:
        if rec["cell"] != cell:
            continue
        if rec["step"] == "train":
            seeds.append(rec["seed"])
        if rec["status"] != "ok":
            note = f"{rec['status']} (seed {rec['seed']})"
            if note not in notes:
                notes.append(note)
    return sorted(seeds), ", ".join(notes) or ("ok" if seeds else "missing")


def train_minutes(doc: dict, cell: str) -> str:
    """Mean training minutes per seed: the run's own training clock (``metrics.json``, which a
    resumed run carries on), else the wall time of the ``dim-train`` call."""
    walls = [
        (r.get("train_seconds") or r["wall_s"]) / 60
        for r in doc["records"]
        if r["cell"] == cell and r["step"] == "train"
    ]
    return f"{statistics.fmean(walls):.1f}" if walls else "-"


def cells_of(doc: dict, group: str) -> list[str]:
    return [name for name, c in doc["meta"]["cells"].items() if c["group"] == group]


def label(doc: dict, cell: str) -> str:
    return str(doc["meta"]["cells"][cell]["label"])


def main_table(doc: dict) -> list[str]:
    paper = doc["meta"]["data"] != "cifar10"
    head = (
        "| cell | seeds | status | train min | non-linear conv | fc | Y | linear conv | fc | Y "
        "| 20-NN Y | 10 labels/class Y |"
        + (" paper CIFAR-10 non-linear conv / fc / Y |" if paper else "")
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for group in ("main", "prior", "negatives", "reference"):
        for cell in cells_of(doc, group):
            seeds, status = cell_status(doc, cell)
            if group not in ("main",) and not seeds:
                continue  # only the nine cells are listed when missing; the rest below
            row = [
                label(doc, cell),
                ",".join(map(str, seeds)) or "-",
                status,
                train_minutes(doc, cell),
            ]
            row += [fmt(seed_values(doc, cell, "classify", "nonlinear", t)) for t in TAPS]
            row += [fmt(seed_values(doc, cell, "classify", "linear", t)) for t in TAPS]
            row.append(fmt(seed_values(doc, cell, "classify", "knn", "k20/y")))
            row.append(fmt(draw_values(doc, cell, "fewshot", "10shot/y")))
            if paper:
                p = PAPER_CIFAR10.get(cell, {}).get("nonlinear") if group == "main" else None
                row.append(" / ".join(f"{v:.1f}" for v in p) if p else "")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def table3(doc: dict) -> list[str]:
    head = (
        "| cell | seed | MINE I(X;Y) (nats) | NDM sigmoid (raw) | MS-SSIM | prior KS | prior C2ST "
        "| paper CIFAR-10: MINE, NDM, MS-SSIM |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for cell in cells_of(doc, "main") + cells_of(doc, "prior"):
        seeds = [r["seed"] for r in doc["records"] if r["cell"] == cell and r["step"] == "table3"]
        if not seeds:
            continue
        mine = fmt(seed_values(doc, cell, "table3", "mine", "y"), 1, 2)
        ndm_s = fmt(seed_values(doc, cell, "table3", "ndm", "sigmoid/y"), 1, 3)
        ndm_r = fmt(seed_values(doc, cell, "table3", "ndm", "raw/y"), 1, 2)
        ms = fmt(seed_values(doc, cell, "table3", "msssim", "y"), 1, 3)
        ks = fmt(seed_values(doc, cell, "table3", "prior", "ks/y"), 1, 3)
        c2 = fmt(seed_values(doc, cell, "table3", "prior", "c2st/y"), 1, 3)
        p = PAPER_CIFAR10.get(cell, {})
        ref = f"{p['mine']}, {p['ndm'][0]} ({p['ndm'][1]}), {p['msssim']}" if "mine" in p else ""
        lines.append(
            f"| {label(doc, cell)} | {','.join(map(str, seeds))} | {mine} | {ndm_s} ({ndm_r}) "
            f"| {ms} | {ks} | {c2} | {ref} |"
        )
    return lines


def negatives(doc: dict) -> dict[str, dict[int, dict[str, float | None]]]:
    """bound -> batch -> {linear_y, linear_conv, nonlinear_y, nonlinear_conv} (seed means)."""
    base = int(doc["meta"]["base_batch"])
    curve: dict[str, dict[int, dict[str, float | None]]] = {}
    for bound in ("jsd", "infonce", "dv"):
        for b in doc["meta"]["negatives_batches"]:
            cell = f"local-{bound}" if b == base else f"local-{bound}-b{b}"
            if cell not in doc["meta"]["cells"]:
                continue
            curve.setdefault(bound, {})[b] = {
                f"{step}_{tap}": mean(seed_values(doc, cell, s, step, tap))
                for step, s in (("linear", "classify"), ("nonlinear", "classify"))
                for tap in ("y", "conv")
            }
    return curve


def summary_table(doc: dict) -> list[str]:
    """The compact table docs/paper_results.md quotes: seed means of the non-linear classifier
    on conv / fc / Y and of the measures on Y, every trained cell but the negatives curve."""

    def m(values: list[float]) -> str:
        return fmt([statistics.fmean(values)]) if values else "-"

    head = "| cell | seeds | non-linear conv / fc / Y | linear Y | 20-NN Y | 10 labels Y |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for group in ("main", "prior", "reference"):
        for cell in cells_of(doc, group):
            seeds, _ = cell_status(doc, cell)
            if not seeds:
                continue
            nonlinear = [m(seed_values(doc, cell, "classify", "nonlinear", t)) for t in TAPS]
            row = [
                label(doc, cell),
                ",".join(map(str, seeds)),
                " / ".join(nonlinear),
                m(seed_values(doc, cell, "classify", "linear", "y")),
                m(seed_values(doc, cell, "classify", "knn", "k20/y")),
                m(draw_values(doc, cell, "fewshot", "10shot/y")),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def negatives_table(doc: dict, probe: str = "linear") -> list[str]:
    """Y / conv accuracy of ``probe`` (``linear`` or ``nonlinear``) per bound and batch size."""
    curve = negatives(doc)
    batches = doc["meta"]["negatives_batches"]
    lines = [
        "| DIM(L) bound | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for bound, row in curve.items():
        cells = []
        for b in batches:
            v = row.get(b, {})
            y, c = v.get(f"{probe}_y"), v.get(f"{probe}_conv")
            cells.append("-" if y is None else f"{100 * y:.1f} / {100 * (c or 0):.1f}")
        lines.append(f"| {bound} | " + " | ".join(cells) + " |")
    return lines


def missing(doc: dict) -> list[str]:
    """Planned (cell, seed) pairs of the main and prior groups without a training record."""
    seeds = sorted({r["seed"] for r in doc["records"]} | {0, 1})
    out = []
    for cell in cells_of(doc, "main") + cells_of(doc, "prior"):
        done = {r["seed"] for r in doc["records"] if r["cell"] == cell and r["step"] == "train"}
        todo = [s for s in seeds if s not in done]
        if todo:
            out.append(f"{cell} (seed {', '.join(map(str, todo))})")
    return out


def plots(doc: dict, prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    cells = [c for c in cells_of(doc, "main") + cells_of(doc, "prior") if cell_status(doc, c)[0]]
    if cells:
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cells)), 4))
        measures = [
            ("classify", "linear", "y", "linear Y"),
            ("classify", "linear", "conv", "linear conv"),
            ("classify", "nonlinear", "y", "non-linear Y"),
            ("classify", "knn", "k20/y", "20-NN Y"),
        ]
        width = 0.8 / len(measures)
        for i, (step, proto, key, name) in enumerate(measures):
            vals = [seed_values(doc, c, step, proto, key) for c in cells]
            ax.bar(
                [j + i * width for j in range(len(cells))],
                [100 * statistics.fmean(v) if v else 0 for v in vals],
                width,
                yerr=[100 * statistics.stdev(v) if len(v) > 1 else 0 for v in vals],
                label=name,
            )
        ax.set_xticks(
            [j + 0.4 - width / 2 for j in range(len(cells))],
            [label(doc, c).replace(", gamma = 0", "\nγ=0") for c in cells],
            rotation=45,
            ha="right",
            fontsize=7,
        )
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(bottom=max(0, ax.get_ylim()[0]))
        ax.set_title(f"{doc['meta']['data']} ({doc['meta']['split']} split): accuracy per cell")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        written.append(prefix.with_name(prefix.name + "_cells.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    curve = negatives(doc)
    if any(v.get("linear_y") is not None for row in curve.values() for v in row.values()):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
        for ax, tap in zip(axes, ("y", "conv")):
            for bound, row in curve.items():
                pts = [
                    (b, acc)
                    for b, v in sorted(row.items())
                    if (acc := v[f"linear_{tap}"]) is not None
                ]
                if pts:
                    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "-o", label=bound)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size (negatives per positive: (B - 1) x locations)")
            ax.set_ylabel(f"linear probe on {tap} (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{doc['meta']['data']}: DIM(L) accuracy against negatives", fontsize=10)
        fig.tight_layout()
        written.append(prefix.with_name(prefix.name + "_negatives.png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def markdown(doc: dict, pngs: list[Path]) -> str:
    meta = doc["meta"]
    split = (
        f"validation ({meta['holdout']} training images held out)"
        if meta["split"] == "validation"
        else "test"
    )
    machines = sorted({r["machine"] for r in doc["records"]})
    gaps = missing(doc)
    lines = [
        f"# The DIM paper's grid on {meta['data']} ({split} split)",
        "",
        "Generated by `scripts/paper_grid.py` from the ledger "
        f"`{meta['data']}_{meta['split']}.json` (every run, seed, command, wall time). "
        f"Shared budget: {meta['settings']['epochs']} epochs of `{meta['settings']['preset']}` "
        f"as single-image DIM ({' '.join(meta['single_image'])}), evaluation budget "
        f"`{meta['settings']['eval_budget']}`. Machines: {'; '.join(machines) or '-'}.",
        "",
        ("**Partial**: missing " + "; ".join(gaps) + ".")
        if gaps
        else "All nine cells and the prior rows have every planned seed.",
        "",
        "## Classification (%)",
        "",
        "Mean ± std over training seeds (10 labels per class: over seeds x draws). Non-linear: the "
        "paper's 200-unit classifier; linear: logistic regression on all labels; 20-NN: cosine "
        "vote on Y.",
        "",
        *main_table(doc),
        "",
        "## Table 3's measures (one training seed per cell)",
        "",
        *table3(doc),
        "",
        "## Negatives (DIM(L), Y / conv, %)",
        "",
        "Linear probe (all labels):",
        "",
        *negatives_table(doc),
        "",
        "The paper's non-linear classifier:",
        "",
        *negatives_table(doc, "nonlinear"),
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    lines += ["", "## Commands", ""]
    seen = set()
    for rec in doc["records"]:
        if rec["step"] == "train" and rec["command"] not in seen:
            seen.add(rec["command"])
            lines.append(f"- {rec['cell']} seed {rec['seed']}: `{portable(rec['command'])}`")
    steps = meta.get("eval_steps", {})
    lines += ["", "Evaluation, per trained run (`dim-eval run=<run_dir> ...`):", ""]
    lines += [f"- {s}: `{' '.join(o)}`" for s, o in steps.items()]
    return "\n".join(lines) + "\n"


def portable(command: str) -> str:
    """A recorded command with this machine's folders replaced by the documented relative ones:
    ``data.data_dir=data`` and runs under ``outputs/paper_grid`` (the ledger keeps the real
    paths)."""
    command = re.sub(r"data\.data_dir=\S+", "data.data_dir=data", command)
    return re.sub(
        r"((?:hydra\.run\.dir|run)=)\S*?/((?:validation|test)/)",
        r"\1outputs/paper_grid/\2",
        command,
    )


def portable_doc(doc: dict) -> dict:
    """The ledger with :func:`portable` commands and folders (the copy written to the docs)."""
    out = json.loads(json.dumps(doc))
    for rec in out["records"]:
        for key in ("command", "run_dir", "eval_dir"):
            if isinstance(rec.get(key), str):
                rec[key] = portable(rec[key] if key == "command" else f"run={rec[key]}")
                rec[key] = rec[key] if key == "command" else rec[key].removeprefix("run=")
    if isinstance(out["meta"].get("command"), str):
        out["meta"]["command"] = re.sub(
            r"(--(?:data-dir|runs|ledger|docs)) \S+", r"\1 <dir>", out["meta"]["command"]
        )
    return out


def write_report(doc: dict, out_dir: Path) -> list[Path]:
    """Write ``<data>_<split>.json``, ``.md`` and plots into ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{doc['meta']['data']}_{doc['meta']['split']}"
    pngs = plots(doc, prefix)
    js, md = prefix.with_suffix(".json"), prefix.with_suffix(".md")
    js.write_text(json.dumps(portable_doc(doc), indent=1) + "\n")
    md.write_text(markdown(doc, pngs))
    return [js, md, *pngs]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[2] == "--summary":  # the table paper_results.md quotes
        print("\n".join(summary_table(json.loads(Path(sys.argv[1]).read_text()))))
    elif len(sys.argv) == 3:
        for path in write_report(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
            print(path)
    else:
        sys.exit("usage: python scripts/paper_grid_report.py LEDGER.json (OUT_DIR | --summary)")
