"""``model.cuda_graph=true`` on CUDA: the captured step follows the eager one and resumes exactly.
Marked ``gpu`` (skipped without CUDA); the CPU half is tests/methods/test_graphed.py.

Tolerance: both runs train in bf16 with the same seeds, data and kernels; a replay runs the
kernels its capture recorded, so the curves should agree to the last bit or nearly.  They must
agree within bf16's 3e-2 (as the other speed options in test_cuda.py) over 20 steps."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, compose_train
from preemption_helpers import assert_same_training, curves

import dim.training as training

pytestmark = pytest.mark.gpu

GPU = [a for a in TINY if not a.startswith(("trainer=", "data.", "model."))] + [
    "trainer=gpu",  # bf16-mixed
    "data.batch_size=32",
    "data.val_size=32",
    "model.mi_units=256",
    "model.prior_hidden=[64,32]",
    "trainer.enable_progress_bar=false",
    "callbacks.knn.every_n_epochs=0",
]
# 20 steps of DIM with everything the graph holds: two variants (lazy penalty), extra D steps,
# clipping, the warm-up's tensor rate, the global term; data on the device
DIM = [
    *GPU,
    "data.num_samples=640",
    "data_on_device=true",
    "objective.alpha=0.5",
    "model.gp_every=2",
    "model.d_steps=2",
    "optim.grad_clip=1.0",
    "optim.warmup_steps=5",
]
# AMDIM (random 5t5 sources, an index backward) from the DataLoader (a host-to-device copy)
AMDIM = [*GPU, "data.num_samples=640", "method=amdim", "model=basic32", "data_on_device=false"]


@pytest.fixture
def runners(monkeypatch):
    """The GraphedStep of each module dim-train builds."""
    made = []
    build = training.build_method

    def build_method(*args, **kwargs):
        module = build(*args, **kwargs)
        made.append(module.graphed)
        return module

    monkeypatch.setattr(training, "build_method", build_method)
    return made


@pytest.mark.parametrize("overrides", [DIM, AMDIM], ids=["dim", "amdim"])
def test_captured_losses_follow_the_eager_ones_over_20_steps(tmp_path, runners, overrides):
    training.train(compose_train(overrides), tmp_path / "eager", None)
    training.train(compose_train([*overrides, "model.cuda_graph=true"]), tmp_path / "graph", None)
    eager, graph = curves(tmp_path / "eager"), curves(tmp_path / "graph")
    runner = runners[-1]
    assert runner is not None and runners[0] is None
    assert runner.graphs and runner.replays >= 20 - runner.warmup - len(runner.graphs)
    for tag in ("train/loss/encoder_total", "train/loss/prior_discriminator"):
        if tag not in eager:  # AMDIM has no prior
            continue
        (steps_e, e), (steps_g, g) = zip(*eager[tag]), zip(*graph[tag])
        assert steps_e == steps_g and len(e) == 20, tag
        diff = (torch.tensor(e) - torch.tensor(g)).abs().max().item()
        print(f"{tag}: max |eager - captured| = {diff:.3g}")  # 0 when the kernels are the same
        torch.testing.assert_close(torch.tensor(g), torch.tensor(e), rtol=3e-2, atol=3e-2)
        assert e[0] != e[-1]  # it trained
    eager_ckpt = torch.load(tmp_path / "eager/checkpoints/last.ckpt", weights_only=True)
    graph_ckpt = torch.load(tmp_path / "graph/checkpoints/last.ckpt", weights_only=True)
    assert graph_ckpt["global_step"] == eager_ckpt["global_step"] == 20
    for state in graph_ckpt["optimizer_states"]:  # Adam counted every replayed step
        assert all(float(s["step"]) >= 20 for s in state["state"].values())


@pytest.fixture
def deterministic():
    """Lightning's ``deterministic=True`` switches torch's deterministic algorithms on for the
    whole process; switch them off again for the tests that follow."""
    yield
    torch.use_deterministic_algorithms(False)


def test_a_captured_run_resumes_exactly(tmp_path, runners, deterministic):
    """Stopped at step 4 (mid-epoch) and resumed: the resumed run warms up eagerly again, then
    captures; weights, Adam moments and every logged value equal the straight run's, bit for bit
    (deterministic kernels where torch has them, so that eager and replayed steps compute the
    same bits; an op without one is named in a warning)."""
    overrides = [
        *GPU,
        "data.num_samples=192",  # 6 steps per epoch, 2 epochs
        "data_on_device=true",
        "trainer.max_epochs=2",
        "trainer.deterministic=warn",  # an op without a deterministic kernel: warned, named
        "model.gp_every=2",
        "model.cuda_graph=true",
        "callbacks.checkpoint.every_n_train_steps=1",
    ]
    training.train(compose_train(overrides), tmp_path / "straight", None)
    run = tmp_path / "resumed"
    training.train(compose_train([*overrides, "trainer.max_steps=4"]), run, None)
    training.train(compose_train(overrides), run, run / "checkpoints/last.ckpt")
    assert [r.replays for r in runners] == [12 - 3, 4 - 3, 8 - 3]
    assert_same_training(tmp_path / "straight", run, steps=12)
    straight = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=False)
    resumed = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    for a, b in zip(straight["rng_states"]["cuda"], resumed["rng_states"]["cuda"], strict=True):
        assert torch.equal(a, b)  # the replays advanced the generator as the eager steps did
