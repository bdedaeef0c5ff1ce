"""AMDIM's training step in ``dim`` against the official code, side by side in one process.

    python scripts/benchmark_official.py --amdim ../amdim-public --batch-sizes 64 128 \
        --out docs/benchmarks/official-cpu-<date>.json
    python scripts/benchmark_official.py --amdim ../amdim-public --device cuda --batch-sizes 200
    python scripts/benchmark_official.py --dim-code ../DIM --batch-sizes 64 128  # DIM losses

AMDIM (``--amdim``, a clone of github.com/Philip-Bachman/amdim-public): both sides get the
``amdim_cifar10`` preset's encoder and loss (ndf 128, n_rkhs 1024, depth 3, no batch norm in the
residual units, the 1t5 + 1t7 + 5t5 InfoNCE terms, one random 5x5 source per image, tclip 20,
score penalty 0.05) and optimiser (Adam 2e-4, betas 0.8 / 0.999, weight decay 1e-5), batches of
B images as two 32x32 views each, the same input tensor.  A step is each side's own loop:

- ``dim``: :meth:`~dim.methods.base.MethodModule.training_step` run by a real Lightning Trainer
  (forward, online probes, one backward, fused Adam, the non-finite record, logging every
  ``trainer.log_every_n_steps``), timed from a block's first batch-start hook to its last
  batch-end hook;
- official: the body of ``task_self_supervised._train``'s loop: ``Model`` forward (its encoder,
  ``LossMultiNCE`` and online classifiers), ``zero_grad``, ``backward``, Adam ``step``, without
  the loop's statistics bookkeeping (7 ``.item()`` reads; leaving them out only helps it).

The official code is imported from the clone and patched at import time; scripts/official_code.py
lists each patch (an apex stand-in, boolean masks for current torch, no ``.cuda()``).  Rounds
alternate in one process (an official block and a ``dim`` block of ``--steps`` steps each, the
order flipped every round) after ``--warmup`` untimed steps of each; printed are the medians of
the rounds' img/s and their ratio.  Precisions (``--precision``): ``fp32``, both float32 (like for
like); ``default``, each side's default on the device: ``dim``'s ``trainer.precision=auto`` (bf16
autocast where the CPU or GPU computes bf16 natively, float32 elsewhere), the official code's
float32 (its fp16 needs apex and is off unless asked for).  Peak memory: on CUDA each side's
``max_memory_allocated``; on a CPU the peak RSS of a child process that builds that side alone
and runs two steps (``--no-memory`` skips it).  ``--profile DIR`` writes torch.profiler tables
of two more steps of each side.  ``--threads N`` sets torch's threads for both sides: on a
machine shared with other work (load above the cores), threads that wait for each other at every
parallel region make multi-thread timings swing by 2x between rounds; one thread per side gives
the steadier comparison there.

DIM (``--dim-code``, a clone of github.com/rdevon/DIM): its ``infonce_loss`` and
``fenchel_dual_loss`` (JSD, GAN, KL) against ``dim.objective.bounds`` on the same encoded
features (``l``: B x 2048 x 64 locations, ``m``: B x 2048 x 1, as DIM(L) on 32x32 images), forward
and backward timed (median of ``--repeats``), values compared (scripts/official_code.py pairs
them); the JSON's rows say ``"equal": true`` when they agree to 1e-5 relative.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
import official_code  # noqa: E402  (scripts/ is not a package)

from dim.errors import DimError  # noqa: E402
from dim.methods import build_method  # noqa: E402
from dim.run.precision import resolve_precision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # its banners about GPUs and tips


# ---- the two sides -----------------------------------------------------------------------------
def our_config(batch: int, precision: str) -> dict[str, Any]:
    """The ``amdim_cifar10`` preset composed as ``dim-train`` does, at ``batch`` and precision."""
    overrides = ["experiment=amdim_cifar10", f"data.batch_size={batch}"]
    overrides.append(f"trainer.precision={'32-true' if precision == 'fp32' else 'auto'}")
    with initialize_config_module("dim.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    groups = ("model", "bound", "objective", "optim", "data", "trainer")
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in groups}


def build_ours(c: dict[str, Any], device: torch.device) -> pl.LightningModule:
    torch.manual_seed(SEED)
    info = {"channels": 3, "image_size": 32, "num_classes": 10}
    return build_method(
        "amdim", model=c["model"], bound=c["bound"], objective=c["objective"],
        optim=c["optim"], data=info,
    ).to(device)  # fmt: skip


def build_official(clone: Path, c: dict[str, Any], device: torch.device):
    """The official ``Model`` with the preset's settings, and the step of its training loop."""
    model_mod, costs = official_code.load_amdim(clone)
    m, o = c["model"], c["optim"]
    if float(m["score_reg"]) != 0.05 or c["bound"]["name"] != "infonce":
        raise DimError("the official code fixes InfoNCE with score penalty 0.05; keep those")
    torch.manual_seed(SEED)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the encoder size
        model = model_mod.Model(
            ndf=m["ndf"], n_classes=10, n_rkhs=m["n_rkhs"], tclip=float(m["tclip"]),
            n_depth=m["n_depth"], encoder_size=32, use_bn=bool(m["use_bn"]),
        )  # fmt: skip
    model.init_weights(init_scale=1.0)  # as its train.py
    model = model.to(device)
    mods = model.info_modules + model.class_modules
    optimizer = torch.optim.Adam(  # as task_self_supervised.train_self_supervised
        [{"params": mod.parameters(), "lr": o["lr"]} for mod in mods],
        betas=tuple(o["betas"]), weight_decay=o["weight_decay"], eps=1e-8,
    )  # fmt: skip

    def step(x: torch.Tensor, labels: torch.Tensor) -> None:
        labels = torch.cat([labels, labels])
        res = model(x1=x[:, 0], x2=x[:, 1], class_only=False)
        lgt_glb_mlp, lgt_glb_lin = res["class"]
        loss_inf = res["g2l_1t5"] + res["g2l_1t7"] + res["g2l_5t5"] + res["lgt_reg"]
        loss_cls = costs.loss_xent(lgt_glb_mlp, labels) + costs.loss_xent(lgt_glb_lin, labels)
        optimizer.zero_grad()
        (loss_inf + loss_cls).backward()
        optimizer.step()

    return model, step


def parameter_counts(ours: torch.nn.Module, official: Any) -> dict[str, Any]:
    """Parameters that a step trained (a gradient after the last step): the official code also
    registers the batch norms of its residual units, which ``use_bn=False`` leaves unused."""

    def count(params) -> int:
        return sum(p.numel() for p in params if p.grad is not None)

    info = [p for mod in official.info_modules for p in mod.parameters()]
    probes = getattr(ours, "probes", None)
    ssl = [p for n, p in ours.named_parameters() if not n.startswith("probes.")]
    return {
        "dim_encoder_and_embeddings": count(ssl),
        "official_encoder_and_embeddings": count(info),
        "dim_probes": count(probes.parameters()) if probes is not None else 0,
        "official_classifiers": count(official.evaluator.parameters()),
    }


class SameBatch(Dataset):
    """``n`` times the same batch (already on its device): both sides read one input."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch


def make_batch(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, 2, 3, 32, 32, generator=g)
    return x.to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


def _trainer(c: dict[str, Any], device: torch.device, steps: int, callbacks) -> pl.Trainer:
    precision: Any = resolve_precision(str(c["trainer"]["precision"]), device.type == "cpu")
    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, log_every_n_steps=int(c["trainer"]["log_every_n_steps"]),
        callbacks=callbacks,
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Rounds(pl.Callback):
    """Alternates blocks of official steps with the Trainer's own steps (see the docstring)."""

    def __init__(self, official, batch, device, warmup, steps, rounds, profile: Path | None):
        self.official, self.batch, self.device = official, batch, device
        self.warmup, self.steps, self.rounds = warmup, steps, rounds
        self.ours: list[float] = []
        self.theirs: list[float] = []
        self.peak = {"dim": 0.0, "official": 0.0}
        self.profile = profile
        self.prof: torch.profiler.profile | None = None
        self.tables: dict[str, str] = {}
        self.t0 = 0.0

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _note_peak(self, side: str) -> None:
        if self.device.type == "cuda":
            mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak[side] = max(self.peak[side], mb)

    def _official_block(self) -> None:
        self._reset_peak()
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(self.steps):
            self.official(*self.batch)
        _sync(self.device)
        self.theirs.append(time.perf_counter() - t0)
        self._note_peak("official")

    def on_train_start(self, trainer, module) -> None:
        for _ in range(self.warmup):
            self.official(*self.batch)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        i = batch_idx - self.warmup
        if i == self.rounds * self.steps and self.profile is not None:
            self.prof = torch.profiler.profile(activities=_activities(self.device))
            self.prof.__enter__()
        if i < 0 or i >= self.rounds * self.steps or i % self.steps:
            return
        if (i // self.steps) % 2 == 0:
            self._official_block()
        self._reset_peak()
        _sync(self.device)
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        i = batch_idx - self.warmup
        if self.prof is not None and batch_idx == trainer.max_steps - 1:
            _sync(self.device)
            self.prof.__exit__(None, None, None)
            self.tables = {"dim": _table(self.prof, self.device)}
            self.prof = None
        if i < 0 or i >= self.rounds * self.steps or (i + 1) % self.steps:
            return
        _sync(self.device)
        self.ours.append(time.perf_counter() - self.t0)
        self._note_peak("dim")
        if (i // self.steps) % 2 == 1:
            self._official_block()


def _activities(device: torch.device) -> list[torch.profiler.ProfilerActivity]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def _table(prof: torch.profiler.profile, device: torch.device) -> str:
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=40)


PROFILED_STEPS = 2


def amdim_row(args, batch: int, precision: str, device: torch.device) -> dict[str, Any]:
    """One side-by-side measurement of ``batch`` at ``precision`` (fp32 | default)."""
    c = our_config(batch, precision)
    data = make_batch(batch, device)
    official_model, official_step = build_official(args.amdim, c, device)
    ours = build_ours(c, device)
    profile = args.profile / f"amdim-b{batch}-{precision}" if args.profile else None
    rounds = Rounds(official_step, data, device, args.warmup, args.steps, args.rounds, profile)
    total = args.warmup + args.rounds * args.steps + (PROFILED_STEPS if profile else 0)
    loader = DataLoader(SameBatch(data, total), batch_size=None)
    load_before = os.getloadavg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes about logger=False, workers ...
        _trainer(c, device, total, [rounds]).fit(ours, loader)
    load_after = os.getloadavg()
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "dim.txt").write_text(rounds.tables["dim"])
        with torch.profiler.profile(activities=_activities(device)) as prof:
            for _ in range(PROFILED_STEPS):
                official_step(*data)
            _sync(device)
        (profile / "official.txt").write_text(_table(prof, device))
    ours_rates = [batch * args.steps / t for t in rounds.ours]
    theirs_rates = [batch * args.steps / t for t in rounds.theirs]
    row = {
        "kind": "amdim", "batch": batch, "precision": precision,
        "dim_precision": resolve_precision(str(c["trainer"]["precision"]), device.type == "cpu"),
        "official_precision": "32-true",
        "dim_img_s": round(statistics.median(ours_rates), 2),
        "official_img_s": round(statistics.median(theirs_rates), 2),
        "dim_rounds_img_s": [round(r, 2) for r in ours_rates],
        "official_rounds_img_s": [round(r, 2) for r in theirs_rates],
        "round_ratios": [round(a / b, 3) for a, b in zip(ours_rates, theirs_rates, strict=True)],
        "params": parameter_counts(ours, official_model),
        "load_avg_1min": [round(load_before[0], 2), round(load_after[0], 2)],
    }  # fmt: skip
    row["ratio"] = round(row["dim_img_s"] / row["official_img_s"], 3)
    row["median_round_ratio"] = round(statistics.median(row["round_ratios"]), 3)
    if device.type == "cuda":
        row["peak_mb"] = {k: round(v, 1) for k, v in rounds.peak.items()}
    elif args.memory:
        official = "fp32"  # the official code runs float32 in both rows: measured once
        row["peak_rss_mb"] = {
            "dim": peak_rss_child(args, "dim", batch, precision),
            "official": peak_rss_child(args, "official", batch, official),
        }
    return row


@functools.cache
def _peak_rss_child(amdim: Path, side: str, batch: int, precision: str) -> float:
    cmd = [sys.executable, __file__, "--amdim", str(amdim), "--peak-of", side]
    cmd += ["--batch-sizes", str(batch), "--precision", precision, "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DimError(f"the peak-memory child failed: {done.stderr.strip().splitlines()[-1]}")
    return float(done.stdout.strip().splitlines()[-1])


def peak_rss_child(args, side: str, batch: int, precision: str) -> float:
    """Peak RSS (MB) of a child process that builds one side alone and runs two steps (the
    second allocates nothing new: Adam's state exists after the first)."""
    return _peak_rss_child(args.amdim, side, batch, precision)


def run_peak_of(args) -> None:
    device, batch, precision = torch.device("cpu"), args.batch_sizes[0], args.precision[0]
    c, data = our_config(batch, precision), make_batch(batch, torch.device("cpu"))
    if args.peak_of == "official":
        _, step = build_official(args.amdim, c, device)
        for _ in range(2):
            step(*data)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = DataLoader(SameBatch(data, 2), batch_size=None)
            _trainer(c, device, 2, []).fit(build_ours(c, device), loader)
    print(round(peak_rss_mb(), 1))


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM of /proc/self/status (Linux), which starts
    afresh at exec; ``ru_maxrss`` keeps the parent's peak across fork and exec, so a child of a
    big benchmark process would report the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


# ---- DIM's loss functions ----------------------------------------------------------------------
def dim_rows(args, batch: int, device: torch.device) -> list[dict[str, Any]]:
    losses = official_code.load_dim_losses(args.dim_code)
    units, locations = 2048, 64
    g = torch.Generator().manual_seed(SEED)
    scale = units**-0.25  # scores of about unit spread
    local = (torch.randn(batch, units, locations, generator=g) * scale).to(device)
    glob = (torch.randn(batch, units, 1, generator=g) * scale).to(device)
    rows = []
    for name, (theirs, ours) in official_code.dim_loss_pairs(losses).items():
        values, times = {}, {}
        for side, fn in (("official", theirs), ("dim", ours)):
            samples = []
            for _ in range(args.repeats + 1):  # the first one warms up
                lg, mg = local.clone().requires_grad_(), glob.clone().requires_grad_()
                _sync(device)
                t0 = time.perf_counter()
                loss = fn(lg, mg)
                loss.backward()
                _sync(device)
                samples.append(time.perf_counter() - t0)
                values[side] = float(loss.detach())
            times[side] = statistics.median(samples[1:]) * 1e3
        diff = abs(values["dim"] - values["official"])
        rows.append(
            {
                "kind": "dim_loss", "loss": name, "batch": batch,
                "shape_l": list(local.shape), "shape_m": list(glob.shape),
                "official_value": values["official"], "dim_value": values["dim"],
                "rel_diff": diff / max(abs(values["official"]), 1e-12),
                "equal": diff <= 1e-5 * max(abs(values["official"]), 1.0),
                "official_ms": round(times["official"], 2), "dim_ms": round(times["dim"], 2),
                "speedup": round(times["official"] / times["dim"], 2),
            }
        )  # fmt: skip
    failure = official_code.official_dv_fails(losses, local, glob)
    rows.append({"kind": "dim_loss", "loss": "dv", "batch": batch, "official_error": failure})
    return rows


# ---- main --------------------------------------------------------------------------------------
def header(args, device: torch.device) -> dict[str, Any]:
    def commit(path: Path | None) -> str | None:
        if path is None:
            return None
        done = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() or None

    cpu = official_code_cpu_name()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "dim_commit": commit(ROOT), "amdim_public_commit": commit(args.amdim),
        "rdevon_dim_commit": commit(args.dim_code),
        "warmup": args.warmup, "steps_per_block": args.steps, "rounds": args.rounds,
    }  # fmt: skip


def official_code_cpu_name() -> str:
    from dim.run.precision import cpuinfo_field

    return cpuinfo_field("model name") or platform.processor() or "cpu"


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["kind"] == "amdim":
            mem = r.get("peak_mb") or r.get("peak_rss_mb") or {}
            print(
                f"AMDIM batch {r['batch']:>4} {r['precision']:>7} (dim {r['dim_precision']}): "
                f"dim {r['dim_img_s']:7.2f} img/s, official {r['official_img_s']:7.2f} img/s, "
                f"ratio {r['ratio']:.2f} (rounds: {r['round_ratios']}), peak MB {mem}, "
                f"params {r['params']}, load {r['load_avg_1min']}"
            )
        elif "official_error" in r:
            print(f"DIM loss dv batch {r['batch']}: official code fails: {r['official_error']}")
        else:
            print(
                f"DIM loss {r['loss']:>7} batch {r['batch']:>4}: official "
                f"{r['official_value']:.6f} ({r['official_ms']:.1f} ms), dim "
                f"{r['dim_value']:.6f} ({r['dim_ms']:.1f} ms), equal {r['equal']}, "
                f"speed-up {r['speedup']:.2f}x"
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amdim", type=Path, help="clone of Philip-Bachman/amdim-public")
    p.add_argument("--dim-code", type=Path, help="clone of rdevon/DIM")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument(
        "--precision", nargs="+", choices=["fp32", "default"], default=["fp32", "default"]
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, the cores)"
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per block")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="DIM losses: timed calls per side")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--profile", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="JSON file (e.g. docs/benchmarks/...)")
    p.add_argument("--peak-of", choices=["dim", "official"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.amdim is None and args.dim_code is None:
        p.error("give --amdim (a clone of amdim-public) and/or --dim-code (a clone of rdevon/DIM)")
    if args.out is not None and args.out.is_dir():
        p.error(f"--out {args.out} is a directory; give a .json file")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        if args.peak_of:
            run_peak_of(args)
            return
        head, rows = header(args, device), []

        def add(new: list[dict[str, Any]]) -> None:  # printed, and written after every row
            rows.extend(new)
            print_rows(new)
            if args.out is not None:
                args.out.write_text(json.dumps({**head, "rows": rows}, indent=2) + "\n")

        for batch in args.batch_sizes:
            if args.amdim is not None:
                for precision in args.precision:
                    add([amdim_row(args, batch, precision, device)])
            if args.dim_code is not None:
                add(dim_rows(args, batch, device))
    except DimError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.out is not None:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
