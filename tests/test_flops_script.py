"""scripts/flops.py: the FLOPs per image of a preset's training step (docs/gpu.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

SCRIPT = Path(__file__).parents[1] / "scripts" / "flops.py"
SMALL = ["model.mi_units=32", "model.prior_hidden=[32,16]"]


@pytest.fixture(scope="module")
def flops():
    spec = importlib.util.spec_from_file_location("flops_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_what_flop_counter_mode_counts_and_follows_autograd_grad(flops):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 30 * 30, 5),
    )
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    with FlopCounterMode(display=False) as reference:
        net(x).sum().backward()
    with flops.FlopCount() as ours:
        net(x).sum().backward()
    assert ours.flops == reference.get_total_flops() > 0
    with flops.FlopCount() as penalised:  # a gradient penalty: FlopCounterMode fails here
        (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        (net(x).sum() + grad.pow(2).sum()).backward()
    assert penalised.flops > 2 * ours.flops


def test_the_step_counts_the_penalty_of_the_prior_game(flops):
    cfg = flops.compose_preset("dim_cifar10", SMALL)
    without = flops.step_flops(cfg, 4, penalty=False)
    with_penalty = flops.step_flops(cfg, 4, penalty=True)
    assert without / 4 > 0.1e9  # the basic32 encoder, forward + backward: ~0.13 GFLOP per image
    assert with_penalty > without  # the double backward of D's input gradient


def test_protocol_time_and_the_lazy_penalty(flops, tmp_path):
    out = tmp_path / "flops.json"
    flops.main(["--batch-sizes", "4", "--json", str(out), "--set", *SMALL])
    every = tmp_path / "lazy.json"
    flops.main(["--batch-sizes", "4", "--json", str(every), "--set", *SMALL, "model.gp_every=4"])
    row, lazy = json.loads(out.read_text())["rows"][0], json.loads(every.read_text())["rows"][0]
    assert row["images"] == 1000 * (50_000 // 4) * 4
    # time = FLOPs / (50 % of 989 TFLOP/s)
    seconds = row["gflop_per_image"] * 1e9 * row["images"] / (0.5 * 989e12)
    assert row["minutes"] == pytest.approx(seconds / 60, abs=0.005)  # rounded to 0.01
    assert lazy["penalty_gflop_per_image"] == pytest.approx(
        row["penalty_gflop_per_image"] / 4, rel=0.02
    )
    assert lazy["gflop_per_image"] < row["gflop_per_image"]
