"""FLOPs per image of a preset's training step, and the time of its protocol at a given rate.

    python scripts/flops.py                                   # experiment=dim_cifar10, batch 64
    python scripts/flops.py --batch-sizes 64 256 --json flops.json --set model.gp_every=4

Counts the matrix products and convolutions (the rules of ``torch.utils.flop_counter``) of one
training step's forward and backward on the CPU: the encoder, the critics and, when the preset
has a prior term, the prior discriminator with its gradient penalty (a double backward) and its
extra ``model.d_steps``; the online probes and the optimisers' element-wise updates are left out
(under 0.1 % of the step).  The protocol's images are ``epochs x floor(train images / batch) x
batch``; its time is at ``--utilisation`` of ``--peak-tflops`` (default: 50 % of an H100 SXM's
989 dense bf16 TFLOP/s).  The table is in docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from dim.methods import build_method
from dim.objective.terms import prior_discriminator_loss

H100_SXM_BF16_DENSE_TFLOPS = 989.0


class FlopCount(TorchDispatchMode):
    """FlopCounterMode's counting rules without its module tracker, which cannot follow the
    ``autograd.grad`` of the gradient penalty ("A leaf node was passed to
    _will_engine_execute_node ..."): the same registry, applied to every op."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += int(count(*args, **kwargs, out_val=out))
        return out


def compose_preset(experiment: str, overrides: list[str]):
    with initialize_config_module("dim.configs", version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *overrides])


def step_flops(cfg, batch: int, penalty: bool = True) -> int:
    """FLOPs of one training step (forward + backward) at ``batch`` images, with or without the
    prior's gradient penalty."""
    c: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    data = c["data"]
    info = {"channels": data["channels"], "image_size": data["image_size"], "num_classes": None}
    module = build_method(
        c["method"]["name"], model=c["model"], bound=c["bound"], objective=c["objective"],
        optim=c["optim"], data=info,
    )  # fmt: skip
    module.train()
    if not penalty:
        module.gp_weight = 0.0
    size = int(data["image_size"])
    views = c["method"].get("views")  # AMDIM: a pair of views per image
    shape = (batch, 2) if views else (batch,)
    x = torch.randn(*shape, int(data["channels"]), size, size)
    with FlopCount() as counter:
        out = module.compute_losses(x, None)
        total = sum(v for k, v in out.items() if k.endswith("_loss") and k != "probe_loss")
        total.backward()
        for _ in range(int(getattr(module, "d_steps", 1)) - 1):  # the extra D updates
            extra = prior_discriminator_loss(
                module.prior_disc, module._prior_y, module.gp_weight, gp_on=module.gp_on,
                space=module.prior_space,
            )  # fmt: skip
            extra.loss.backward()
    return counter.flops


def protocol(
    cfg, batch: int, epochs: int, train_images: int, peak_tflops: float, utilisation: float
) -> dict[str, Any]:
    with_gp = step_flops(cfg, batch, penalty=True)
    has_prior = float(cfg.objective.get("gamma", 0.0)) > 0
    without_gp = step_flops(cfg, batch, penalty=False) if has_prior else with_gp
    gp_every = int(cfg.model.get("gp_every", 1)) if has_prior else 1
    per_step = without_gp + (with_gp - without_gp) / gp_every  # the lazy penalty's average
    images = epochs * (train_images // batch) * batch
    total = per_step / batch * images
    seconds = total / (peak_tflops * 1e12 * utilisation)
    return {
        "batch": batch,
        "gflop_per_image": round(per_step / batch / 1e9, 4),
        "penalty_gflop_per_image": round((with_gp - without_gp) / gp_every / batch / 1e9, 4),
        "gp_every": gp_every,
        "images": images,
        "total_pflop": round(total / 1e15, 1),
        "minutes": round(seconds / 60, 2),
        "img_per_s": round(peak_tflops * 1e12 * utilisation / (per_step / batch)),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="dim_cifar10")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: preset's")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--train-images", type=int, default=50_000, help="CIFAR-10's training split")
    p.add_argument("--peak-tflops", type=float, default=H100_SXM_BF16_DENSE_TFLOPS)
    p.add_argument("--utilisation", type=float, default=0.5)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--set", nargs="*", default=[], help="dim-train overrides, e.g. model.gp_every=4"
    )
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = compose_preset(args.experiment, args.set)
    rows = [
        protocol(cfg, b, args.epochs, args.train_images, args.peak_tflops, args.utilisation)
        for b in (args.batch_sizes or [int(cfg.data.batch_size)])
    ]
    rate = f"{args.utilisation:.0%} of {args.peak_tflops:g} TFLOP/s"
    print(f"experiment={args.experiment} {' '.join(args.set)}: {args.epochs} epochs at {rate}")
    print("| batch | GFLOP/img | of it penalty | img/s | PFLOP | minutes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['gflop_per_image']:.3f} | {r['penalty_gflop_per_image']:.4f} "
            f"| {r['img_per_s']:,} | {r['total_pflop']:,} | {r['minutes']:.1f} |"
        )
    if args.json:
        meta = {"experiment": args.experiment, "overrides": args.set, "epochs": args.epochs}
        meta |= {"peak_tflops": args.peak_tflops, "utilisation": args.utilisation}
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
