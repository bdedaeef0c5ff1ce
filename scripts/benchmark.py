"""Throughput benchmark: (a) the bare training step of the config's method (encoder, critics,
bound, prior, optimiser steps; no probes) on tensors already in memory and (b) the full
``dim-train`` pipeline (Trainer, data loading, probes, logging, checks, checkpointing) on the same
config.  Compare the pipeline with probes off with ``--set model.probe=false``.  Methods that
train on two views of each image (AMDIM, DIM with ``method.views``) get two views per image in
(a) as in (b), so an image/s is an image of the dataset in both.

    python scripts/benchmark.py --batch-sizes 64 256 512 --precision 32-true bf16-mixed auto \
        --compile 0 1 --device-data 0 1 --out bench.json --set model.mi_units=2048
    python scripts/benchmark.py --batch-sizes 128 --precision auto --device-data 1 \
        --set method=amdim model=basic32 data.channels=1

Prints a table and writes JSON: images/second for (a) and (b), the ratio (b)/(a) (target >= 0.9),
peak memory of each, the training FLOPs per image (forward + backward, counted by
``torch.utils.flop_counter``) and the rate they imply.  Timing starts after ``--warmup`` steps
(compilation, cuDNN autotuning excluded) and ends at the last step (checkpoint writes excluded).
``--profile`` adds a torch.profiler table of the bare step's most expensive operators.

``--folder DIR`` compares instead a folder of image files with the same images as arrays, in one
process, rounds alternating so a busy machine slows both alike: DIR holds ``train/`` and
``test/`` with one sub-folder per class (``scripts/fashion_mnist_png.py`` writes Fashion-MNIST so),
``--arrays-dir`` the ``data.data_dir`` of the IDX files.  It reports the first pass's cost (the
decode cache's build), the start-up with the cache built, and the pipeline's images/s of both
paths after it (target: folder >= 0.9x arrays); ``--uncached`` adds the folder read file by file.

    python scripts/benchmark.py --folder fmnist_png --arrays-dir data --rounds 3 --uncached \
        --out docs/benchmarks/folder-cache.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dim.methods import build_method
from dim.run.precision import resolve_precision
from dim.training import train


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # process-wide, CPU


def make_cfg(batch: int, precision: str, compiled: bool, device_data: bool, steps: int, extra):
    overrides = [
        "data=synthetic",
        f"data.batch_size={batch}",
        f"data.num_samples={batch * steps}",
        f"data.val_size={batch}",
        f"trainer.precision={precision}",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        f"model.compile={str(compiled).lower()}",
        f"data_on_device={str(device_data).lower()}",
        "logger.histogram_every_n_steps=0",
        *extra,
    ]
    with initialize_config_module("dim.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def bare_step(
    cfg, device: torch.device, steps: int, warmup: int, profile: Path | None = None
) -> tuple[float, float, float]:
    """(images/s, peak memory MB, training FLOPs per image) of the bare step."""
    c = OmegaConf.to_container(cfg, resolve=True)
    info = {
        "channels": c["data"]["channels"],
        "image_size": c["data"]["image_size"],
        "num_classes": 10,
    }
    # The bare step has no online probes (nor logging, checks or data loading): it is the
    # training computation proper, which the pipeline is compared against.
    model = {**c["model"], "probe": False}
    method = c.get("method") or {"name": "dim"}
    module = build_method(
        method["name"], model=model, bound=c["bound"], objective=c["objective"],
        optim=c["optim"], data=info,
    ).to(device)  # fmt: skip
    optimizers, _ = module.configure_optimizers()
    b, s = c["data"]["batch_size"], info["image_size"]
    views = (2,) if method.get("views") else ()  # as the data layer decides (AMDIM always)
    x = torch.randn(b, *views, info["channels"], s, s, device=device)
    y = torch.randint(0, 10, (b,), device=device)
    precision = resolve_precision(str(c["trainer"]["precision"]), device.type == "cpu")
    dtype = torch.bfloat16 if "bf16" in precision else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = module.compute_losses(x, y)
            total = (
                out["encoder_loss"]
                + out.get("prior_discriminator_loss", 0)
                + out.get("probe_loss", 0)
            )
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in optimizers:
            opt.step()

    for _ in range(warmup):
        step()
    from torch.utils.flop_counter import FlopCounterMode

    # The counter cannot follow autograd.grad (the prior's gradient penalty, a small MLP on
    # 64-d Y): count the step without it.
    gp, module.gp_weight = getattr(module, "gp_weight", 0.0), 0.0
    with FlopCounterMode(display=False) as counter:
        step()
    module.gp_weight = gp
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = b * steps / (time.perf_counter() - t0)
    if profile is not None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(10):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=25)
        profile.write_text(table)
        print(table, file=sys.stderr)
    return rate, peak_memory_mb(device), counter.get_total_flops() / b


class StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` (includes data loading and logging);
    with ``profile``, a torch.profiler table of 10 steps after the timed ones."""

    def __init__(self, warmup: int, profile: Path | None = None) -> None:
        self.warmup, self.t0, self.t1, self.images = warmup, None, None, 0
        self.profile, self.prof = profile, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()
        if self.profile is not None and batch_idx == self._last(trainer) + 1:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities)
            self.prof.__enter__()
            self.python = cProfile.Profile()  # where the host's time goes, Lightning included
            self.python.enable()

    def _last(self, trainer) -> int:  # the last timed batch; 10 profiled ones follow it
        return trainer.num_training_batches - 1 - (10 if self.profile is not None else 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.t0 is not None and batch_idx <= self._last(trainer):
            self.images += batch[0].shape[0]
        if batch_idx == self._last(trainer):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()
        if batch_idx == trainer.num_training_batches - 1:  # before the epoch-end checkpoint
            if self.prof is not None:
                self.python.disable()
                self.prof.__exit__(None, None, None)
                stats = io.StringIO()
                pstats.Stats(self.python, stream=stats).sort_stats("tottime").print_stats(40)
                self.profile.with_suffix(".python.txt").write_text(stats.getvalue())
                averages = self.prof.key_averages()
                tables = [averages.table(sort_by="self_cpu_time_total", row_limit=30)]
                if torch.cuda.is_available():
                    tables.append(averages.table(sort_by="self_cuda_time_total", row_limit=20))
                self.profile.write_text("\n".join(tables))
                self.prof = None


def pipeline(cfg, warmup: int, profile: Path | None = None) -> tuple[float, float]:
    """(images/s, peak memory MB) of the whole ``dim-train`` run (profiled 10 steps longer)."""
    timer = StepTimer(warmup, profile)
    import dim.training as training

    original = training.build_callbacks
    training.build_callbacks = lambda *a: [*original(*a), timer]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp), None)
    finally:
        training.build_callbacks = original
    return timer.images / (timer.t1 - timer.t0), peak_memory_mb(device)


def folder_configs(args: argparse.Namespace, cache: Path) -> dict[str, list[str]]:
    """Overrides of the array run and of the folder runs (same preset, same images, same size)."""
    steps = args.steps + args.warmup
    base = [
        f"experiment={args.experiment}", "trainer.max_epochs=1",
        f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false", "logger.histogram_every_n_steps=0",
    ]  # fmt: skip
    folder = [
        "data=folder", f"data.root={args.folder / 'train'}",
        f"data.val_root={args.folder / 'test'}", "data.labels=folder", "data.channels=1",
        "data.image_size=32", "data.resize=28",
        "data.mean=[0.2860]", "data.std=[0.3530]", "data.augment.hflip=false",
        f"data.cache_dir={cache}", "data.num_workers=2",
    ]  # fmt: skip
    arrays = [f"data.data_dir={args.arrays_dir}", "data.download=false"]
    runs = {"arrays": base + arrays + args.set, "folder": base + folder + args.set}
    if args.uncached:  # the file-by-file path (data_on_device needs arrays)
        runs["uncached"] = base + folder + ["data.cache=false", "data_on_device=false"] + args.set
    return runs


def compose_overrides(overrides: list[str]):
    with initialize_config_module("dim.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def folder_vs_arrays(args: argparse.Namespace) -> dict:
    """The first pass (cache build) and the alternating rounds of ``--folder`` (module doc)."""
    from dim.data.images import ImageDataModule

    with tempfile.TemporaryDirectory() as tmp:
        runs = folder_configs(args, Path(tmp) / "cache")
        cfgs = {name: compose_overrides(o) for name, o in runs.items()}
        data = {k: OmegaConf.to_container(c.data, resolve=True) for k, c in cfgs.items()}
        t0 = time.perf_counter()
        dm = ImageDataModule(data["folder"])  # the first pass: decodes into the cache
        build_s = time.perf_counter() - t0
        n_images = len(dm.splits.train) + len(dm.splits.val)
        startup = {}
        for name in ("folder", "arrays"):
            t0 = time.perf_counter()
            ImageDataModule(data[name])
            startup[name] = round(time.perf_counter() - t0, 2)
        rates: dict[str, list[float]] = {name: [] for name in cfgs}
        for r in range(args.rounds):
            order = ["arrays", "folder"] if r % 2 == 0 else ["folder", "arrays"]
            if "uncached" in cfgs and r == 0:
                order.append("uncached")  # one round: it is the slow one
            for name in order:
                rate, _ = pipeline(cfgs[name], args.warmup)
                rates[name].append(round(rate, 1))
                print(f"round {r + 1} {name}: {rate:.1f} img/s", file=sys.stderr, flush=True)
    med = {name: round(statistics.median(v), 1) for name, v in rates.items() if v}
    pairs = [round(f / a, 3) for f, a in zip(rates["folder"], rates["arrays"])]
    row = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(), "experiment": args.experiment,
        "images": n_images, "first_pass_build_s": round(build_s, 3),
        "first_pass_img_s": round(n_images / build_s, 1),
        "startup_s": startup, "steps": args.steps, "warmup": args.warmup,
        "batch": int(cfgs["folder"].data.batch_size), "img_s_per_round": rates,
        "img_s_median": med, "folder_over_arrays_per_round": pairs,
        # each round's two runs are neighbours in time: the median of their ratios is the
        # least sensitive to a shared machine's load drifting between rounds
        "folder_over_arrays": round(statistics.median(pairs), 3),
        "folder_over_arrays_of_medians": round(med["folder"] / med["arrays"], 3),
        "overrides": runs,
    }  # fmt: skip
    if "uncached" in med:
        row["uncached_over_arrays"] = round(med["uncached"] / med["arrays"], 3)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    p.add_argument("--precision", nargs="+", default=["32-true"])
    p.add_argument("--compile", type=int, nargs="+", default=[0])
    p.add_argument("--device-data", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--profile", type=Path, default=None,
        help="write the first configuration's profiles: PATH (bare step), PATH.pipeline.txt",
    )  # fmt: skip
    p.add_argument("--set", nargs="*", default=[], help="dim-train overrides, e.g. model=basic64")
    p.add_argument("--folder", type=Path, default=None, help="folder vs arrays (module doc)")
    p.add_argument("--arrays-dir", type=Path, default=Path("data"), help="with --folder")
    p.add_argument("--experiment", default="dim_fashion_mnist", help="with --folder")
    p.add_argument("--rounds", type=int, default=3, help="with --folder: alternating rounds")
    p.add_argument("--uncached", action="store_true", help="with --folder: the file-by-file path")
    args = p.parse_args(argv)
    if args.folder is not None:
        row = folder_vs_arrays(args)
        print(json.dumps(row, indent=2))
        if args.out:
            args.out.write_text(json.dumps(row, indent=2) + "\n")
        return
    extra = args.set
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    grid = itertools.product(args.batch_sizes, args.precision, args.compile, args.device_data)
    for batch, precision, compiled, device_data in grid:
        profile, args.profile = args.profile, None  # the first configuration only
        steps = args.steps + args.warmup + (10 if profile else 0)
        cfg = make_cfg(batch, precision, bool(compiled), bool(device_data), steps, extra)
        bare, mem, flops = bare_step(cfg, device, args.steps, args.warmup, profile)
        full, full_mem = pipeline(
            cfg, args.warmup, profile and profile.with_suffix(".pipeline.txt")
        )
        rows.append(
            {
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "batch": batch, "precision": precision, "compile": bool(compiled),
                "device_data": bool(device_data), "bare_img_s": round(bare, 1),
                "pipeline_img_s": round(full, 1), "ratio": round(full / bare, 3),
                "peak_mem_mb": round(mem, 1), "pipeline_peak_mem_mb": round(full_mem, 1),
                "gflop_per_img": round(flops / 1e9, 3),
                "pipeline_tflop_s": round(flops * full / 1e12, 1),
                "cifar10_1000_epochs_min": round(50000 * 1000 / full / 60, 1),
                "overrides": extra,
            }
        )  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    cols = [
        ("batch", 5), ("precision", 10), ("compile", 7), ("device_data", 11), ("bare_img_s", 10),
        ("pipeline_img_s", 14), ("ratio", 6), ("peak_mem_mb", 11), ("pipeline_tflop_s", 16),
        ("cifar10_1000_epochs_min", 23),
    ]  # fmt: skip
    print(" ".join(f"{name:>{w}}" for name, w in cols))
    for r in rows:
        print(" ".join(f"{r[name]!s:>{w}}" for name, w in cols))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
