"""``model.cuda_graph``: the training step split into the part a CUDA graph holds and the host's
part around it (dim.methods.graphed).  On the CPU the runner runs eagerly (``capture=False``: the
graphs replaced by eager replays writing into fixed outputs), with the same static buffers,
warm-up, variants and bookkeeping; these tests check that it trains exactly as the normal step
does, resumes exactly, and that the option is refused in one line where it cannot run.  The
captured graphs themselves are tested on CUDA (tests/gpu/test_cuda_graphs.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, compose_train, dim_module, run_cli
from preemption_helpers import assert_same_training

import dim.training as training
from dim.errors import DimError
from dim.methods.graphed import EagerReplay, GraphedStep, StepOutputs, check_cuda_graph

# Everything the captured step holds: the prior game with the lazy penalty (two variants), extra
# D steps, the global term, gradient clipping, the warm-up's tensor rate, bf16 autocast; 2 epochs of
# 3 steps.
SPLIT = [
    *TINY,
    "data.num_samples=48",
    "trainer.max_epochs=2",
    "objective.alpha=0.5",
    "model.gp_every=2",
    "model.d_steps=2",
    "optim.grad_clip=1.0",
    "optim.warmup_steps=4",
    "trainer.precision=bf16-mixed",
    "trainer.enable_progress_bar=false",
    "callbacks.knn.every_n_epochs=0",
    "callbacks.checkpoint.every_n_train_steps=1",  # the stop at max_steps leaves step 2's
]


@pytest.fixture
def eager_graphs(monkeypatch):
    """dim-train's modules get a runner with ``capture=False``; returns the runners made."""
    runners: list[GraphedStep] = []
    build = training.build_method

    def build_method(*args, **kwargs):
        module = build(*args, **kwargs)
        module.graphed = GraphedStep(module, capture=False)
        runners.append(module.graphed)
        return module

    monkeypatch.setattr(training, "build_method", build_method)
    return runners


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The normal step's run of SPLIT."""
    run = tmp_path_factory.mktemp("straight") / "run"
    training.train(compose_train(SPLIT), run, None)
    return run


def test_the_split_step_trains_exactly_as_the_normal_step(straight, eager_graphs, tmp_path):
    training.train(compose_train(SPLIT), tmp_path, None)
    # same weights, Adam moments (so gradients), logged losses and probes at every step
    assert_same_training(straight, tmp_path, steps=6)
    (runner,) = eager_graphs
    # steps 0-2 eager (warm-up: both variants seen), then each variant recorded once, replayed
    assert runner.eager_steps.total() == 3 and len(runner.eager_steps) == 2
    assert len(runner.graphs) == 2 and runner.replays == 3


def test_a_run_with_the_option_resumes_exactly(straight, eager_graphs, tmp_path):
    """Stopped after step 2 (mid-epoch, warm-up unfinished) and resumed: the resumed runner warms
    up again and the run equals the straight one."""
    training.train(compose_train([*SPLIT, "trainer.max_steps=2"]), tmp_path, None)
    training.train(compose_train(SPLIT), tmp_path, tmp_path / "checkpoints/last.ckpt")
    assert_same_training(straight, tmp_path, steps=6)
    assert [r.replays for r in eager_graphs] == [0, 1]  # 2 eager; then 3 eager, 1 replay


def test_a_capture_cuda_refuses_stops_the_run_in_one_line(eager_graphs, tmp_path, monkeypatch):
    """A capture that fails (here: the penalty steps') stops the run naming the error, before
    any checkpoint after it; no silent fallback (the CUDA generator's state after a failed
    capture is not one to go on from)."""
    record = GraphedStep._record

    def refuse_penalty(self, optimizers, x, labels):
        if self.module.step_variant():  # the penalty's weight: the steps that take it
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        return record(self, optimizers, x, labels)

    monkeypatch.setattr(GraphedStep, "_record", refuse_penalty)
    message = r"CUDA refused to capture the training step \(2\.0, .*\(operation not permitted "
    with pytest.raises(DimError, match=message + r"when stream is capturing\); set model"):
        training.train(compose_train(SPLIT), tmp_path, None)
    (runner,) = eager_graphs
    assert len(runner.graphs) == 1 and runner.replays == 1  # step 3 replayed, step 4 refused
    ckpt = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # the steps before it, checkpointed each step


def test_a_replay_overwrites_its_fixed_outputs():
    counter = torch.zeros(())

    def step() -> StepOutputs:
        counter.add_(1)
        value = counter.clone()
        return StepOutputs({"encoder_loss": value * 2}, value, ["encoder_loss"], value[None], None)

    replay = EagerReplay(step)
    replay.replay()
    assert replay.outputs is not None
    first, loss = replay.outputs, replay.outputs.out["encoder_loss"]
    replay.replay()
    assert replay.outputs is first and replay.outputs.out["encoder_loss"] is loss  # same tensors
    assert loss.item() == 4.0 and first.total.item() == 2.0 and first.checks.tolist() == [2.0]


def test_static_inputs_are_one_buffer_pair_per_shape():
    runner = GraphedStep(object(), capture=False)
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    xs, ys = runner.static_inputs(x, y)
    assert torch.equal(xs, x) and torch.equal(ys, y) and xs is not x
    again = runner.static_inputs(x + 1, y + 1)
    assert again[0] is xs and again[1] is ys and torch.equal(xs, x + 1)  # refilled in place
    other = runner.static_inputs(torch.randn(2, 3, 8, 8), torch.arange(2))
    assert other[0] is not xs and other[0].shape[0] == 2
    assert runner.static_inputs(x, None)[1] is None


def test_without_a_gpu_the_option_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    proc = run_cli("dim-train", *TINY, "model.cuda_graph=true", f"hydra.run.dir={out}")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: model.cuda_graph=true"), last
    assert "needs" not in last and "this machine has none" in last and "trainer=gpu" in last
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    "model, optim, trainer, message",
    [
        ({}, {}, {"accelerator": "cpu"}, "trainer.accelerator=cpu"),
        ({}, {}, {"devices": 2}, "one process on one GPU"),
        ({}, {}, {"strategy": "ddp"}, "one process on one GPU"),
        ({}, {}, {"num_nodes": 2}, "one process on one GPU"),
        ({}, {}, {"precision": "16-mixed"}, "use trainer.precision=bf16-mixed"),
        ({}, {"on_nonfinite": "skip"}, {}, "use optim.on_nonfinite=stop"),
        ({"compile": True}, {}, {}, "choose one"),
    ],
)
def test_what_a_captured_step_cannot_run_is_refused(model, optim, trainer, message):
    settings = {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed", **trainer}
    with pytest.raises(DimError, match=message):
        check_cuda_graph({"cuda_graph": True, **model}, optim, settings, cuda=True)
    check_cuda_graph({"cuda_graph": False, **model}, optim, settings, cuda=True)  # option off


def test_a_single_gpu_in_bf16_or_fp32_is_accepted():
    for precision in ("bf16-mixed", "32-true"):
        trainer = {"accelerator": "gpu", "devices": 1, "precision": precision}
        check_cuda_graph({"cuda_graph": True}, {}, trainer, cuda=True)


def test_the_module_refuses_capture_with_compile():
    with pytest.raises(DimError, match="choose one"):
        dim_module(cuda_graph=True, compile=True)
    assert dim_module(cuda_graph=True).graphed is not None
    assert dim_module().graphed is None
