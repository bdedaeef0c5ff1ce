"""Our bounds against the official DIM and AMDIM code on the same tensors: equal values and
gradients.  The official code is read from clones (never copied into this repository) named by
DIM_OFFICIAL_DIM (github.com/rdevon/DIM) and DIM_OFFICIAL_AMDIM (Philip-Bachman/amdim-public);
without them these tests are skipped.  scripts/official_code.py pairs the functions and lists
what it patches in the AMDIM code to run on a CPU and a current torch."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).parents[2] / "scripts"
DIM_CLONE = os.environ.get("DIM_OFFICIAL_DIM")
AMDIM_CLONE = os.environ.get("DIM_OFFICIAL_AMDIM")


def official_code():
    if "official_code" in sys.modules:
        return sys.modules["official_code"]
    spec = importlib.util.spec_from_file_location("official_code", SCRIPTS / "official_code.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["official_code"] = module
    spec.loader.exec_module(module)
    return module


def values_and_grads(fn, *inputs: torch.Tensor):
    leaves = [t.clone().requires_grad_() for t in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach(), [t.grad for t in leaves]


@pytest.mark.skipif(not DIM_CLONE, reason="DIM_OFFICIAL_DIM: a clone of rdevon/DIM")
@pytest.mark.parametrize("name", ["infonce", "jsd", "gan", "kl"])
def test_dim_losses_equal_the_official_ones(name):
    code = official_code()
    theirs, ours = code.dim_loss_pairs(code.load_dim_losses(DIM_CLONE))[name]
    g = torch.Generator().manual_seed(0)
    local = torch.randn(12, 32, 9, generator=g) * 0.4  # 12 images, 32 units, 9 locations
    glob = torch.randn(12, 32, 1, generator=g) * 0.4
    value, grads = values_and_grads(ours, local, glob)
    ref_value, ref_grads = values_and_grads(theirs, local, glob)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not AMDIM_CLONE, reason="DIM_OFFICIAL_AMDIM: a clone of amdim-public")
@pytest.mark.parametrize("locations", [1, 25, 49], ids=["1x1", "5x5", "7x7"])
def test_an_amdim_term_equals_the_official_one(locations):
    """One direction of a term: the official NCE_MI_MULTI (tclip 20, penalty 0.05) and
    view_nce give the same loss and gradients for the sources and the target map."""
    code = official_code()
    _, costs = code.load_amdim(AMDIM_CLONE)
    official, ours = code.amdim_term_pair(costs)
    side = int(locations**0.5)
    g = torch.Generator().manual_seed(0)
    source = torch.randn(10, 64, generator=g) * 3  # scores large enough for tclip to act
    target = torch.randn(10, 64, side, side, generator=g) * 3
    value, grads = values_and_grads(ours, source, target)
    ref_value, ref_grads = values_and_grads(official, source, target)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-7)
