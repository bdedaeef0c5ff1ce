"""The GPU check's benchmark rows: the eager step vs the captured one vs the compiled one.

    python scripts/gpu_bench.py --modes eager graph --batch-sizes 256 512 --out rows.json
    python scripts/gpu_bench.py --merge eager.json graph.json ro.json --out summary.json

Modes (each adds its overrides to ``model.mi_units=2048`` and ``--set``):

- ``eager``: dim-train's default step;
- ``graph``: ``model.cuda_graph=true``, the whole step replayed as CUDA graphs;
- ``graph-gp4``: the same with ``model.gp_every=4`` (two graphs, with and without the penalty:
  the same training as ``reduce-overhead``'s);
- ``reduce-overhead``: ``model.compile=true model.compile_mode=reduce-overhead`` with
  ``model.gp_every=4`` (the penalty's double backward, which torch.compile cannot trace, on a
  quarter of the steps).

Each row, on synthetic 32x32 data in bf16 (``--precision``) with the dataset on the device: the
bare step's images/s (encoder, critics, bound, prior game and optimisers on a batch already in
memory; in ``graph`` mode the captured step replayed), the whole ``dim-train`` pipeline's images/s
after ``--warmup`` steps (graph capture and compilation excluded), peak memory, the training FLOPs
per image (scripts/benchmark.py's count) and the FLOP/s they imply against the bf16 peak measured
on this device (an 8192^3 matrix product), and the minutes of 1000 CIFAR-10 epochs.  At
``--profile-batch`` the pipeline's last ``--profile-steps`` steps are profiled: kernel launches
per step, GPU busy share (dim.monitor.gpu_profile).  ``--merge`` joins row files into one and
prints the table.  A mode that cannot run here (``graph`` without CUDA), or a row that fails, is
a row with its reason (the traceback goes to stderr) and the other rows still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

import dim.training as training
from dim.errors import DimError
from dim.methods import build_method
from dim.methods.graphed import capturable_step, capture, on_side_stream
from dim.monitor.gpu_profile import summarize
from dim.run.precision import resolve_precision

MODES: dict[str, tuple[bool, list[str]]] = {  # name -> (model.compile, overrides)
    "eager": (False, []),
    "graph": (False, ["model.cuda_graph=true"]),
    "graph-gp4": (False, ["model.cuda_graph=true", "model.gp_every=4"]),
    "reduce-overhead": (True, ["model.compile_mode=reduce-overhead", "model.gp_every=4"]),
}
BASE = ["model.mi_units=2048"]


def load_benchmark() -> Any:
    """scripts/benchmark.py as a module: its config builder, bare step and peak memory."""
    path = Path(__file__).with_name("benchmark.py")
    spec = importlib.util.spec_from_file_location("benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_peak_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float | None:
    """bf16 matrix-product rate of this GPU (median of ``reps`` timed products on random data
    after 3 warm-ups); None on the CPU."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


def bare_graph(cfg, device: torch.device, steps: int, warmup: int) -> tuple[float, float, float]:
    """(images/s, peak MB, FLOPs per image) of the bare step captured and replayed."""
    if device.type != "cuda":
        raise DimError("mode graph captures CUDA graphs: it needs a CUDA GPU")
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    info = {"channels": c["data"]["channels"], "image_size": c["data"]["image_size"]}
    method = c.get("method") or {"name": "dim"}
    module = build_method(
        method["name"], model={**c["model"], "probe": False}, bound=c["bound"],
        objective=c["objective"], optim=c["optim"], data={**info, "num_classes": 10},
    ).to(device)  # fmt: skip
    optimizers, _ = module.configure_optimizers()
    b, s = c["data"]["batch_size"], info["image_size"]
    views = (2,) if method.get("views") else ()
    x = torch.randn(b, *views, info["channels"], s, s, device=device)
    y = torch.randint(0, 10, (b,), device=device)
    precision = resolve_precision(str(c["trainer"]["precision"]), False)
    dtype = torch.bfloat16 if "bf16" in precision else None

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return capturable_step(module, optimizers, x, y)

    torch.cuda.reset_peak_memory_stats(device)
    stream = torch.cuda.Stream(device=device)
    for _ in range(warmup):
        on_side_stream(step, stream)
    from torch.utils.flop_counter import FlopCounterMode

    gp, module.gp_weight = getattr(module, "gp_weight", 0.0), 0.0  # the counter cannot follow
    with FlopCounterMode(display=False) as counter:  # autograd.grad (as scripts/benchmark.py)
        on_side_stream(step, stream)
    module.gp_weight = gp
    graph = capture(step, optimizers, stream)
    graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    torch.cuda.synchronize()
    rate = b * steps / (time.perf_counter() - t0)
    return rate, torch.cuda.max_memory_allocated(device) / 2**20, counter.get_total_flops() / b


class Timed(pl.Callback):
    """Wall time of the steps after ``warmup``; with ``profile_steps``, a profiler summary of as
    many steps after the timed ones."""

    def __init__(self, warmup: int, profile_steps: int = 0) -> None:
        self.warmup, self.profile_steps = warmup, profile_steps
        self.t0 = self.t1 = self.p0 = 0.0
        self.images = 0
        self.prof: Any = None
        self.summary: dict[str, Any] | None = None

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _last(self, trainer) -> int:
        return trainer.num_training_batches - 1 - self.profile_steps

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()
        if self.profile_steps and batch_idx == self._last(trainer) + 1:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._sync()
            self.prof = torch.profiler.profile(activities=activities)
            self.prof.__enter__()
            self.p0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.warmup <= batch_idx <= self._last(trainer):
            self.images += batch[0].shape[0]
        if batch_idx == self._last(trainer):
            self._sync()
            self.t1 = time.perf_counter()
        if self.prof is not None and batch_idx == trainer.num_training_batches - 1:
            self._sync()
            wall = time.perf_counter() - self.p0
            self.prof.__exit__(None, None, None)
            self.summary = summarize(self.prof.events(), self.profile_steps, wall)
            self.prof = None


def pipeline(cfg, warmup: int, profile_steps: int) -> tuple[float, float, dict | None]:
    """(images/s, peak MB, profile summary) of the whole dim-train run."""
    timer = Timed(warmup, profile_steps)
    original = training.build_callbacks
    training.build_callbacks = lambda *a: [*original(*a), timer]  # type: ignore[assignment]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            training.train(cfg, Path(tmp), None)
    finally:
        training.build_callbacks = original  # type: ignore[assignment]
    bench = load_benchmark()
    return timer.images / (timer.t1 - timer.t0), bench.peak_memory_mb(device), timer.summary


def row(mode: str, batch: int, args: argparse.Namespace, peak: float | None) -> dict[str, Any]:
    compiled, overrides = MODES[mode]
    extra = [*BASE, *overrides, *args.set]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    profile = args.profile_steps if batch == args.profile_batch else 0
    bench = load_benchmark()
    steps = args.steps + args.warmup + profile
    cfg = bench.make_cfg(batch, args.precision, compiled, True, steps, extra)
    head = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "mode": mode, "batch": batch, "precision": args.precision, "device_data": True,
        "overrides": extra, "commit": args.commit,
    }  # fmt: skip
    try:
        if mode.startswith("graph"):
            bare, mem, flops = bare_graph(cfg, device, args.steps, args.warmup)
        else:
            bare, mem, flops = bench.bare_step(cfg, device, args.steps, args.warmup)
        full, full_mem, summary = pipeline(cfg, args.warmup, profile)
    except DimError as err:
        return {**head, "skipped": str(err)}
    except Exception as err:  # noqa: BLE001 - the other rows still run; the log has the trace
        traceback.print_exc()
        return {**head, "skipped": f"failed: {type(err).__name__}: {str(err).strip()[:300]}"}
    tflops = flops * full / 1e12
    return {
        **head, "bare_img_s": round(bare, 1), "pipeline_img_s": round(full, 1),
        "ratio": round(full / bare, 3), "peak_mem_mb": round(mem, 1),
        "pipeline_peak_mem_mb": round(full_mem, 1), "gflop_per_img": round(flops / 1e9, 3),
        "pipeline_tflop_s": round(tflops, 2),
        "peak_bf16_tflop_s": None if peak is None else round(peak, 1),
        "share_of_peak": None if not peak else round(tflops / peak, 4),
        "cifar10_1000_epochs_min": round(50000 * 1000 / full / 60, 1), "profile": summary,
    }  # fmt: skip


COLUMNS = [
    ("mode", 15), ("batch", 5), ("bare_img_s", 10), ("pipeline_img_s", 14), ("ratio", 6),
    ("cifar10_1000_epochs_min", 8), ("pipeline_tflop_s", 8), ("share_of_peak", 8),
    ("launches_per_step", 8), ("gpu_busy_share", 8),
]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain table (profile columns where profiled; skipped rows say why)."""
    lines = [" ".join(f"{name[:w]:>{w}}" for name, w in COLUMNS)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['mode']:>15} {r['batch']:>5} skipped: {r['skipped']}")
            continue
        values = {**r, **(r.get("profile") or {})}
        lines.append(" ".join(f"{values.get(name)!s:>{w}}" for name, w in COLUMNS))
    return "\n".join(lines)


def merge(paths: list[Path]) -> dict[str, Any]:
    """Row files -> one document: every row, the measured peak, the table."""
    rows: list[dict[str, Any]] = []
    peaks = []
    for path in paths:
        if not path.is_file():
            print(f"gpu_bench: {path} is missing (its stage did not finish)", file=sys.stderr)
            continue
        doc = json.loads(path.read_text())
        rows += doc["rows"]
        if doc.get("peak_bf16_tflop_s"):
            peaks.append(doc["peak_bf16_tflop_s"])
    return {"peak_bf16_tflop_s": max(peaks) if peaks else None, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--steps", type=int, default=200, help="timed steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (capture, compile)")
    p.add_argument("--profile-batch", type=int, default=256, help="profile this batch's rows")
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--no-peak", action="store_true", help="skip the bf16 peak measurement")
    p.add_argument("--commit", default=None, help="the commit measured (recorded in each row)")
    p.add_argument("--set", nargs="*", default=[], help="dim-train overrides for every row")
    p.add_argument("--merge", type=Path, nargs="+", default=None, help="row files to join")
    p.add_argument("--out", type=Path, required=True, help="JSON written here")
    args = p.parse_args(argv)
    if args.merge:
        doc = merge(args.merge)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        peak = None if args.no_peak else measure_peak_tflops(device)
        doc = {"peak_bf16_tflop_s": None if peak is None else round(peak, 1), "rows": []}
        for mode in args.modes:
            for batch in args.batch_sizes:
                doc["rows"].append(row(mode, batch, args, peak))
                print(json.dumps(doc["rows"][-1]), file=sys.stderr, flush=True)
                args.out.write_text(json.dumps(doc, indent=2) + "\n")  # each row as it comes
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"bf16 peak measured: {doc['peak_bf16_tflop_s']} TFLOP/s")
    print(table(doc["rows"]))


if __name__ == "__main__":
    main()
