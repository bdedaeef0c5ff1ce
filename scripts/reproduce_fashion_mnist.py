"""Reproduce the Fashion-MNIST table: DIM and AMDIM presets against three baselines.

Trains the presets (``dim-train experiment=<preset>``, the real CLI, timed), a supervised encoder
of the same architecture (basic32 + a linear layer on Y, cross-entropy, random crops and flips)
for the same wall time as the DIM preset, and embeds the train and test splits of
every model plus two baselines: raw pixels and the encoder at random initialisation
(``dim-embed``'s code, :func:`dim.eval.embed.write_embedding`).  On the frozen features it
measures, for every layer (conv / fc / y):

- ``linear``: logistic regression on all training labels (``dim-eval``'s linear protocol:
  z-scored features, Adam, :func:`dim.eval.classifiers.fit_classifier`);
- ``knn``: 20-nearest-neighbour vote, cosine distance (scikit-learn);
- ``Nshot``: scikit-learn logistic regression on N labelled images per class (N in ``--shots``),
  ``--draws`` random draws (the same images for every model), features z-scored with the
  statistics of the whole (unlabelled) training split.

Writes ``<out>.json``, ``<out>.md`` (table, commands, wall times, machine) and three plots:
``<out>_labels.png`` (accuracy against labels per class, best layer), ``<out>_tsne.png`` (t-SNE
of the test embedding of each model's Y, coloured by class) and ``<out>_epochs.png`` (each preset's
online probes and kNN monitor at every epoch end, from its TensorBoard log).

    python scripts/reproduce_fashion_mnist.py --data-dir data --out docs/fashion_mnist/reproduction
                                                                         # the test split, once
    python scripts/reproduce_fashion_mnist.py --data-dir data --holdout 10000 --out /tmp/val
                                                                         # choosing settings
    python scripts/reproduce_fashion_mnist.py --data cifar10 --presets dim_cifar10 amdim_cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLASSES = {
    "fashion_mnist": [
        "T-shirt", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "boot",
    ],
}  # fmt: skip
# Published references shown beside our rows (top-1 %, test split).
PUBLISHED = {
    "fashion_mnist": "Zalando's benchmark: logistic regression on pixels 84.2, RBF SVM 89.7, "
    "small supervised CNNs 90-93",
    "cifar10": "DIM paper (non-linear probe, conv/fc/Y): DIM(L) NCE 75.2 / 75.6 / 69.1; "
    "supervised 75.4. AMDIM paper: 91.2 (linear, large encoder)",
    "stl10": "DIM paper (non-linear probe, conv/fc/Y): DIM(L) NCE 72.6 / 70.0 / 67.1. "
    "AMDIM paper: 93.8",
}
TAPS = ("conv", "fc", "y")
#: the supervised baseline's augmentation, whatever the DIM preset uses (it may use views instead)
SUPERVISED_AUGMENT = {"crop_padding": 4, "hflip": True, "random_crop": False}


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    from dim.run.precision import cpuinfo_field

    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_preset(preset: str, args: argparse.Namespace, runs: Path) -> tuple[Path, float]:
    """Run ``dim-train experiment=<preset>``; (run dir, wall seconds). Reused with --skip-train."""
    run_dir = runs / preset
    stamp = run_dir / "reproduce_wall.json"
    if args.skip_train and (run_dir / "encoder.pt").is_file() and stamp.is_file():
        return run_dir, float(json.loads(stamp.read_text())["wall_s"])
    cmd = [
        str(Path(sys.executable).with_name("dim-train")),
        f"experiment={preset}",
        f"data.data_dir={args.data_dir}",
        f"hydra.run.dir={run_dir}",
        *([f"data.holdout={args.holdout}"] if args.holdout else []),
        *args.set,
    ]
    log("train: " + shlex.join(cmd))
    start = time.perf_counter()
    with open(runs / f"{preset}.log", "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {preset} failed (exit {proc.returncode}); see {runs / f'{preset}.log'}")
    shown = ["dim-train", *cmd[1:]]  # as a user types it, not this machine's venv path
    stamp.write_text(json.dumps({"wall_s": wall, "command": relative_command(shown)}))
    log(f"{preset}: {wall / 60:.1f} min")
    return run_dir, wall


def relative_command(args: list[str]) -> str:
    """A command as the docs record it: each absolute path (``/a/b``, ``key=/a/b``) relative to
    the working directory, so no record carries the paths of the machine that wrote it."""

    def relative(arg: str) -> str:
        key, sep, value = arg.partition("=") if "=" in arg else ("", "", arg)
        return f"{key}{sep}{os.path.relpath(value)}" if value.startswith("/") else arg

    return shlex.join(relative(a) for a in args)


def train_supervised(run_dim: Path, seconds: float, args: argparse.Namespace, runs: Path) -> Path:
    """The DIM run's encoder architecture + linear(Y -> classes), cross-entropy, Adam 1e-3, on the
    DIM run's batch size and data pipeline (in memory, bf16 where native) with the usual
    supervised augmentation (random crops of the image padded by 4 px, horizontal flips), for
    ``seconds`` of wall time."""
    from omegaconf import OmegaConf

    from dim.data.device import DeviceDataModule
    from dim.data.images import ImageDataModule
    from dim.nets.encoders import build_encoder
    from dim.run.checkpoints import save_encoder
    from dim.run.precision import resolve_precision

    out = runs / "supervised" / "encoder.pt"
    if args.skip_train and out.is_file():
        return out
    cfg = OmegaConf.to_container(OmegaConf.load(run_dim / ".hydra" / "config.yaml"), resolve=True)
    assert isinstance(cfg, dict)
    data, model = dict(cfg["data"]), dict(cfg["model"])
    data["data_dir"] = str(args.data_dir)
    data["augment"] = {**data.get("augment", {}), **SUPERVISED_AUGMENT}
    if args.holdout:
        data["holdout"] = args.holdout
    batches = DeviceDataModule(ImageDataModule(data, seed=args.seed))
    batches.setup()
    images, labels = batches.tensors["train"]
    torch.manual_seed(args.seed)
    info = batches.info
    encoder = build_encoder(
        model["encoder"], in_channels=info["channels"], image_size=info["image_size"]
    )
    head = torch.nn.Linear(int(model.get("y_dim", 64)), int(info["num_classes"] or 10))
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    precision = resolve_precision(str(cfg["trainer"].get("precision", "32-true")), on_cpu=True)
    bf16 = precision.startswith("bf16")
    gen = torch.Generator().manual_seed(args.seed)
    batch, steps, start = batches.batch_size, 0, time.perf_counter()
    encoder.train()
    while time.perf_counter() - start < seconds:
        perm = torch.randperm(len(images), generator=gen)
        for i in range(0, len(perm) - batch + 1, batch):
            idx = perm[i : i + batch]
            xb = batches.prepare(images[idx], True, gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(head(encoder(xb)["y"]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    epochs = steps * batch / len(images)
    log(f"supervised: {steps} steps ({epochs:.1f} epochs) in {seconds / 60:.1f} min")
    save_encoder(encoder, out, {"data": data, "steps": steps, "epochs": epochs})
    return out


def embed(run: Path, init: str, split: str, args: argparse.Namespace, cache: Path) -> dict:
    """Features of one split (``dim-embed``'s code), cached as ``.npz`` under the runs dir."""
    from dim.eval.embed import write_embedding

    out = cache / f"{split}.npz"
    if not out.is_file():
        patches = {"data_dir": str(args.data_dir)}
        if args.holdout:
            patches["holdout"] = args.holdout
        write_embedding(run, out, split=split, init=init, seed=args.seed, data_patches=patches)
    with np.load(out) as z:  # conv is (N, C, H, W): probes read it flattened
        return {k: z[k] if k == "labels" else z[k].reshape(len(z[k]), -1) for k in z.files}


def pixels(run: Path, split: str, args: argparse.Namespace) -> dict:
    """The normalised images themselves, flattened: the raw-pixel baseline."""
    from dim.eval.features import stack_images
    from dim.eval.source import build_eval_splits, data_config, load_source

    source = load_source(run, "trained", args.seed)
    patches: dict[str, Any] = {"data_dir": str(args.data_dir)}
    if args.holdout:
        patches["holdout"] = args.holdout
    splits = build_eval_splits(data_config(source.run_data, None, patches), source.config)
    ds = splits.eval_dataset(split)
    x = stack_images(ds).flatten(1).numpy()
    labels = _labels(ds)
    return {"pixels": x.astype(np.float32), "labels": labels}


def _labels(ds: Any) -> np.ndarray:
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    if targets is None:
        return np.asarray([int(ds[i][1]) for i in range(len(ds))])
    return np.asarray(targets, dtype=np.int64)


def zscore(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return [scaler.transform(a).astype(np.float32) for a in (train, *others)]


def linear_all(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int, device="cpu"
) -> float:
    """dim-eval's linear protocol (z-scored features, logistic regression trained with Adam)."""
    from functools import partial

    from dim.eval.classifiers import fit_classifier, seeded
    from dim.nets.probes import linear_classifier

    k = int(max(ytr.max(), yte.max())) + 1
    model = seeded(seed, partial(linear_classifier, xtr.shape[1], k))
    history = fit_classifier(
        model,
        (torch.from_numpy(xtr), torch.from_numpy(ytr)),
        (torch.from_numpy(xte), torch.from_numpy(yte)),
        epochs=30,
        lr=1e-3,
        batch_size=256,
        seed=seed,
        device=device,
        score_every=None,
    )
    return float(history[-1])


def knn(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, k: int = 20) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute", n_jobs=1)
    return float(clf.fit(xtr, ytr).score(xte, yte))


def few_labels(xtr, ytr, xte, yte, shots: int, draws: int, seed: int) -> list[float]:
    """Logistic regression (scikit-learn) on ``shots`` images per class, ``draws`` draws."""
    from sklearn.linear_model import LogisticRegression

    accs = []
    for d in range(draws):
        rng = np.random.default_rng(seed + d)  # the same images for every model
        idx = np.concatenate(
            [rng.permutation(np.flatnonzero(ytr == c))[:shots] for c in np.unique(ytr)]
        )
        clf = LogisticRegression(max_iter=1000)
        accs.append(float(clf.fit(xtr[idx], ytr[idx]).score(xte, yte)))
    return accs


def probe_model(name: str, train: dict, test: dict, args: argparse.Namespace) -> dict:
    """Every protocol on every layer of one model's features."""
    ytr, yte = train["labels"], test["labels"]
    result: dict[str, Any] = {}
    for tap in [t for t in (*TAPS, "pixels") if t in train]:
        start = time.perf_counter()
        xtr, xte = zscore(train[tap], test[tap])
        row: dict[str, Any] = {"linear": linear_all(xtr, ytr, xte, yte, args.seed)}
        row["knn20"] = knn(train[tap], ytr, test[tap], yte)
        for shots in args.shots:
            accs = few_labels(xtr, ytr, xte, yte, shots, args.draws, args.seed)
            row[f"{shots}shot"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs))}
        result[tap] = row
        log(f"{name}/{tap}: {json.dumps(row)} ({time.perf_counter() - start:.0f} s)")
    return result


def best(result: dict, key: str) -> tuple[str, float]:
    """(layer, accuracy) of the best layer under ``key``."""
    vals = {
        tap: (r[key]["mean"] if isinstance(r[key], dict) else r[key]) for tap, r in result.items()
    }
    tap = max(vals, key=lambda t: vals[t])
    return tap, vals[tap]


def y_or_only(result: dict, key: str) -> float:
    row = result.get("y", result.get("pixels"))
    v = row[key]
    return float(v["mean"] if isinstance(v, dict) else v)


def plots(results: dict, feats: dict, args: argparse.Namespace, out: Path) -> list[str]:
    """Accuracy against labels per class (best layer), and t-SNE pictures of the test Y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        xs = [*args.shots, "all"]
        ys = [best(res, f"{s}shot")[1] for s in args.shots] + [best(res, "linear")[1]]
        ax.plot(range(len(xs)), [100 * y for y in ys], marker="o", label=name)
    ax.set_xticks(range(len(args.shots) + 1), [str(s) for s in args.shots] + ["all"])
    ax.set_xlabel("labels per class (logistic regression on frozen features, best layer)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{args.data}: accuracy against labels per class")
    labels_png = save_plot(fig, ax, out, "_labels.png", legend_size=8)

    names = [n for n in results if "y" in feats[n][1] or "pixels" in feats[n][1]]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4))
    rng = np.random.default_rng(args.seed)
    test_labels = feats[names[0]][1]["labels"]
    pick = rng.permutation(len(test_labels))[: args.tsne_points]
    classes = CLASSES.get(args.data)
    for ax, name in zip(np.atleast_1d(axes), names):
        test = feats[name][1]
        x = test["y"] if "y" in test else test["pixels"]
        xy = TSNE(init="pca", random_state=args.seed, perplexity=30).fit_transform(x[pick])
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=test_labels[pick], cmap="tab10", s=2)
        ax.set_title(f"{name} ({'Y' if 'y' in test else 'pixels'})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if classes:
        handles = sc.legend_elements()[0]
        fig.legend(handles, classes, loc="lower center", ncol=10, fontsize=7, markerscale=0.8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    tsne_png = out.with_name(out.name + "_tsne.png")
    fig.savefig(tsne_png, dpi=110)
    plt.close(fig)
    return [labels_png, str(tsne_png)]


CURVE_TAGS = ("val/probe/acc_conv", "val/probe/acc_y", "val/knn/acc_conv", "val/knn/acc_y")


def epoch_curves(trained: dict[str, Path]) -> dict[str, dict[str, list[float]]]:
    """Accuracy against epochs of each preset, as its run logged it to TensorBoard at every epoch
    end: the online linear probes (trained beside the encoder) and the kNN monitor (a 5,000-image
    bank, 2,000 queries) on the validation split: the test split unless ``--holdout``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[str, list[float]]] = {}
    for name, run in trained.items():
        ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        ea.Reload()
        have = set(ea.Tags()["scalars"])
        curves[name] = {
            t: [float(e.value) for e in sorted(ea.Scalars(t), key=lambda e: e.step)]
            for t in CURVE_TAGS
            if t in have
        }
    return curves


def plot_curves(
    curves: dict[str, dict[str, list[float]]], args: argparse.Namespace, out: Path
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, tags in curves.items():
        for tag, style in zip(CURVE_TAGS, ("-o", "--o", "-s", "--s")):
            if tags.get(tag):
                vals = tags[tag]
                label = f"{name}: {tag.removeprefix('val/')}"
                ax.plot(range(1, len(vals) + 1), [100 * v for v in vals], style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    split = "validation" if args.holdout else "test"
    ax.set_title(f"{args.data}: online probes and kNN monitor ({split} split)", fontsize=9)
    return save_plot(fig, ax, out, "_epochs.png", legend_size=6)


def save_plot(fig: Any, ax: Any, out: Path, suffix: str, legend_size: int) -> str:
    """Grid, legend, ``<out><suffix>`` at 120 dpi; the figure is closed."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    png = out.with_name(out.name + suffix)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return str(png)


def markdown(report: dict, args: argparse.Namespace) -> str:
    split = f"validation ({args.holdout} images held out of train)" if args.holdout else "test"
    lines = [
        f"# {args.data}: frozen-feature accuracy ({split} split)",
        "",
        f"Machine: {report['machine']}. Written by `{report['command']}`.",
        "",
        "Best layer's linear probe on all labels / Y's 20-NN / best layer's logistic regression"
        " on N labels per class (mean over draws):",
        "",
        "| features | train wall (min) | linear (best layer) | 20-NN on Y | "
        + " | ".join(f"{s}/class" for s in args.shots)
        + " |",
        "|---|---|---|---|" + "---|" * len(args.shots),
    ]
    for name, res in report["results"].items():
        tap, lin = best(res, "linear")
        wall = report["wall_min"].get(name)
        cells = [
            f"{100 * lin:.1f} ({tap})",
            f"{100 * y_or_only(res, 'knn20'):.1f}",
            *(
                "{:.1f} ± {:.1f} ({})".format(
                    100 * res[best(res, f"{s}shot")[0]][f"{s}shot"]["mean"],
                    100 * res[best(res, f"{s}shot")[0]][f"{s}shot"]["std"],
                    best(res, f"{s}shot")[0],
                )
                for s in args.shots
            ),
        ]
        lines.append(
            f"| {name} | {'' if wall is None else f'{wall:.1f}'} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Every layer:", "", "| features | layer | linear | 20-NN | "
              + " | ".join(f"{s}/class" for s in args.shots) + " |",
              "|---|---|---|---|" + "---|" * len(args.shots)]  # fmt: skip
    for name, res in report["results"].items():
        for tap, row in res.items():
            shots = " | ".join(f"{100 * row[f'{s}shot']['mean']:.1f}" for s in args.shots)
            lines.append(
                f"| {name} | {tap} | {100 * row['linear']:.1f} | "
                f"{100 * row['knn20']:.1f} | {shots} |"
            )
    for name, tags in report.get("epochs", {}).items():
        if not tags:
            continue
        n = max(len(v) for v in tags.values())
        lines += ["", f"{name}, accuracy against epochs (online probes / kNN monitor):", ""]
        lines += ["| epoch | " + " | ".join(t.removeprefix("val/") for t in tags) + " |"]
        lines += ["|---|" + "---|" * len(tags)]
        for i in range(n):
            cells = [f"{100 * v[i]:.1f}" if i < len(v) else "" for v in tags.values()]
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    if args.data in PUBLISHED:
        lines += ["", f"Published, for scale: {PUBLISHED[args.data]}."]
    lines += ["", "Training commands:", ""]
    lines += [f"- `{c}`" for c in report["train_commands"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fashion_mnist", help="data config name (the presets' data)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--presets", nargs="+", default=["dim_fashion_mnist", "amdim_fashion_mnist"])
    p.add_argument("--holdout", type=int, default=None, help="validate on N training images")
    p.add_argument(
        "--runs", type=Path, default=None, help="runs dir (default outputs/reproduce_<data>)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output prefix (default docs/<data>/reproduction)"
    )
    p.add_argument("--shots", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--tsne-points", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-supervised", action="store_true")
    p.add_argument("--skip-train", action="store_true", help="reuse finished runs in --runs")
    p.add_argument("--set", nargs="*", default=[], help="extra dim-train overrides for the presets")
    args = p.parse_args()
    runs = args.runs or Path("outputs") / f"reproduce_{args.data}"
    out = args.out or Path("docs") / args.data / "reproduction"
    runs.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    trained, walls, commands = {}, {}, []
    for preset in args.presets:
        run_dir, wall = train_preset(preset, args, runs)
        trained[preset], walls[preset] = run_dir, wall / 60
        recorded = json.loads((run_dir / "reproduce_wall.json").read_text())["command"]
        commands.append(relative_command(shlex.split(recorded)))  # older stamps: absolute
    first = trained[args.presets[0]]
    models: dict[str, tuple[Path, str]] = {"random init": (first, "random")}
    models.update({name: (run, "trained") for name, run in trained.items()})
    if not args.no_supervised:
        seconds = walls[args.presets[0]] * 60
        sup = train_supervised(first, seconds, args, runs)
        models["supervised (same wall time)"] = (sup, "trained")
        walls["supervised (same wall time)"] = seconds / 60

    feats: dict[str, tuple[dict, dict]] = {
        "raw pixels": (pixels(first, "train", args), pixels(first, "test", args))
    }
    for name, (run, init) in models.items():
        cache = runs / "features" / name.split(" ")[0].replace("/", "_")
        feats[name] = tuple(embed(run, init, s, args, cache) for s in ("train", "test"))  # type: ignore[assignment]
    results = {name: probe_model(name, tr, te, args) for name, (tr, te) in feats.items()}

    report = {
        "data": args.data,
        "split": "holdout" if args.holdout else "test",
        "holdout": args.holdout,
        "results": results,
        "wall_min": walls,
        "train_commands": commands,
        "command": "python " + relative_command(sys.argv),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
        "total_min": (time.perf_counter() - start) / 60,
    }
    report["epochs"] = epoch_curves(trained)
    report["plots"] = [*plots(results, feats, args, out), plot_curves(report["epochs"], args, out)]
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report, args))
    print(markdown(report, args))
    log(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {', '.join(report['plots'])}")


if __name__ == "__main__":
    main()
