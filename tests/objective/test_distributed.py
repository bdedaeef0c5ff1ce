"""DDP correctness: 2 CPU processes on a batch split in two == 1 process on the whole batch.

Every process gathers the critic's encoded features of the global batch (with gradients) and
computes the same loss; parameter gradients are then averaged over processes, as DDP does.
Tolerance 1e-5 (relative, float32): the two computations differ only in summation order.
"""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import BIN, TINY, compose_train
from omegaconf import OmegaConf
from preemption_helpers import assert_same_training, torchrun

from dim.nets.critics import DotLocalCritic, GlobalCritic
from dim.objective.bounds import get_bound
from dim.objective.distributed import gather_with_grad
from dim.objective.terms import global_mi, local_mi
from dim.run.hparams import EXPERIMENT_SUFFIX

B, C, H, Y = 8, 6, 3, 5


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, C, H, H, generator=g), torch.randn(B, Y, generator=g)


def _critics():
    torch.manual_seed(1)
    local = DotLocalCritic(C, Y, units=16).eval()  # BN as a fixed affine map: batch stats are
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C * H * H, 16))
    glob = GlobalCritic(head, Y, units=16).eval()  # per process unless sync_batchnorm=true
    return local, glob


def _loss_and_grads(bound_name, local_map, y, gather):
    local_map = local_map.clone().requires_grad_()
    y = y.clone().requires_grad_()
    lc, gc = _critics()
    loss = local_mi(lc, local_map, y, get_bound(bound_name), gather=gather).loss
    loss = loss + global_mi(gc, local_map, y, get_bound(bound_name), gather=gather).loss
    loss.backward()
    params = [p.grad.clone() for p in [*lc.parameters(), *gc.parameters()]]
    return loss.detach(), params, local_map.grad, y.grad


BOUNDS = ("infonce", "jsd", "dv")


def _amdim_loss_and_grads(views):
    """AMDIM's loss over a batch of view pairs and its parameter gradients (eval mode: batch
    norm is a fixed map and every 5x5 location is a source, so nothing random differs)."""
    from dim.methods.amdim import AMDIMModule

    torch.manual_seed(2)
    model = dict(encoder="amdim", ndf=4, n_rkhs=8, y_dim=8, n_depth=1, tclip=20.0, score_reg=0.05)
    data = dict(channels=1, image_size=32, num_classes=None)
    module = AMDIMModule(model, dict(name="infonce"), {}, dict(lr=1e-3), data).eval()
    loss = module.compute_losses(views, None)["encoder_loss"]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]


def _amdim_views():
    return torch.randn(B, 2, 1, 32, 32, generator=torch.Generator().manual_seed(3))


def _worker(rank, world, port, out_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    local_map, y = _inputs()
    shard = slice(rank * B // world, (rank + 1) * B // world)
    results = {}
    for bound_name in BOUNDS:  # one pair of processes for every bound: start-up is the cost
        loss, params, g_local, g_y = _loss_and_grads(
            bound_name, local_map[shard], y[shard], gather_with_grad
        )
        for p in params:  # what DDP does to parameter gradients
            dist.all_reduce(p)
            p /= world
        results[bound_name] = {
            "loss": loss, "params": params, "g_local": g_local / world, "g_y": g_y / world
        }  # fmt: skip
    loss, params = _amdim_loss_and_grads(_amdim_views()[shard])
    for p in params:
        dist.all_reduce(p)
        p /= world
    results["amdim"] = {"loss": loss, "params": params}
    torch.save(results, f"{out_file}.{rank}")
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    """For each bound (in one pair of processes): loss, parameter and input gradients; and
    AMDIM's multiscale loss and its gradients (negatives from both processes' views)."""
    out = str(tmp_path / "r")
    # fork: the children need no fresh interpreter and imports (seconds each); they start with
    # one torch thread and no process group, so nothing unsafe is inherited
    mp.start_processes(_worker, (2, _free_port(), out), nprocs=2, start_method="fork")
    local_map, y = _inputs()
    for bound_name in BOUNDS:
        loss, params, g_local, g_y = _loss_and_grads(bound_name, local_map, y, lambda t: t)
        for rank in range(2):
            r = torch.load(f"{out}.{rank}")[bound_name]
            shard = slice(rank * B // 2, (rank + 1) * B // 2)
            torch.testing.assert_close(
                r["loss"], loss, rtol=1e-5, atol=1e-6, msg=lambda m, b=bound_name: f"{b}: {m}"
            )
            for a, b in zip(r["params"], params, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
            # Input gradients reach the encoder; DDP's averaging then divides the factor out.
            torch.testing.assert_close(r["g_local"], g_local[shard], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(r["g_y"], g_y[shard], rtol=1e-5, atol=1e-6)
    loss, params = _amdim_loss_and_grads(_amdim_views())
    assert len(params) > 20  # encoder and both embedding nets
    for rank in range(2):
        r = torch.load(f"{out}.{rank}")["amdim"]
        torch.testing.assert_close(r["loss"], loss, rtol=1e-5, atol=1e-6)
        for a, b in zip(r["params"], params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


DDP_RUN = [
    *TINY,
    "trainer=ddp_cpu",
    "trainer.max_epochs=-1",
    "trainer.max_steps=6",  # 3 epochs: a run resumed at step 1 still crosses two epoch ends
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
]


def _event_files(tb: Path, recursive: bool = False) -> list[Path]:
    """The run's scalar event files (not the HParams experiment record written beside them)."""
    found = (tb.rglob if recursive else tb.glob)("events.out.tfevents.*")
    return [p for p in found if not p.name.endswith(EXPERIMENT_SUFFIX)]


def _ddp_console_run(run: Path) -> None:
    """``trainer=ddp_cpu`` through the real console script (Lightning's launcher)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    cmd = [str(BIN / "dim-train"), *DDP_RUN, f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grad strides do not match bucket view strides" not in proc.stderr  # no extra copy


@pytest.mark.slow  # two processes through Lightning's launcher (about 33 s): make test-slow
def test_ddp_end_to_end_through_the_console_script(tmp_path):
    """One run dir, written by rank zero only; the kNN monitor gathers across processes."""
    straight = tmp_path / "ddp"
    _ddp_console_run(straight)
    # 64 images, batch 16 per process, 2 processes: 2 steps per epoch.
    assert json.loads((straight / "metrics.json").read_text())["global_step"] == 6
    # rank zero's one event file (and its HParams experiment record, written at the end)
    assert len(_event_files(straight / "tensorboard")) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]  # exactly one run dir
    assert not list(straight.glob("*ddp_process*"))  # only rank zero writes files
    _assert_knn_equals_one_process(straight)


@pytest.mark.slow  # three 2-process launches (about 30 s of 2 cores): make test-slow
def test_ddp_exact_resume_after_a_signal_on_rank_zero(tmp_path):
    """The console-script DDP run, repeated under torchrun, stopped by SIGTERM on rank 0 only at
    step 1 and resumed, ends bit-identical to it (weights, Adam moments, every curve)."""
    straight = tmp_path / "ddp"
    _ddp_console_run(straight)
    args = tmp_path / "overrides.json"
    args.write_text(json.dumps(DDP_RUN))
    stopped = torchrun(args, tmp_path / "run", False, "step", "1")
    assert stopped.returncode != 0 and "Stopped by SIGTERM at step 1" in stopped.stderr
    done = torchrun(args, tmp_path / "run", True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(straight, tmp_path / "run", steps=6)


def _assert_knn_equals_one_process(run):
    """The kNN monitor splits the encoding across the 2 processes and gathers the features: its
    numbers equal one process encoding everything with the final encoder."""
    from dim.data.sources import build_splits
    from dim.eval.features import extract_features
    from dim.eval.knn import knn_accuracy
    from dim.run.checkpoints import load_encoder

    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    cfg = compose_train(TINY)
    encoder = load_encoder(run / "encoder.pt")
    splits = build_splits(OmegaConf.to_container(cfg.data, resolve=True))
    knn = cfg.callbacks.knn
    bank = extract_features(encoder, splits.eval_train, 256, "cpu", knn.max_train).labelled()
    queries = extract_features(encoder, splits.val, 256, "cpu", knn.max_val).labelled()
    for tap in ("conv", "fc", "y"):
        expected = knn_accuracy(
            bank.flat(tap),
            bank.labels,
            queries.flat(tap),
            queries.labels,
            knn.k,
            int(splits.num_classes),
            knn.temperature,
            "cpu",
        )
        assert metrics[f"val/knn/acc_{tap}"] == pytest.approx(float(expected), abs=1e-6), tap


def test_strided_shards_interleave_back_into_dataset_order():
    from dim.monitor.visuals import interleave

    n, world = 7, 3  # rank r holds r, r + 3, ...; padded to 3 rows each
    shards = [list(range(r, n, world)) + [-1] * (3 - len(range(r, n, world))) for r in range(3)]
    assert interleave(torch.tensor(shards), n).tolist() == list(range(n))


@pytest.mark.slow  # two torchrun launches (about 26 s): make test-slow; the 2-process gradient
# equality above stays in make test
def test_multinode_preset_as_two_nodes_matches_one_process_on_the_global_batch(tmp_path):
    """``trainer=multinode`` for real: two torchrun "nodes" of one gloo process each on
    127.0.0.1, the same command on both.  One run dir, written by the node-0 process alone; the
    validation loss it logs (eval mode, negatives gathered from both nodes) equals one process's
    on the global batch of 2 x 8 images with the final checkpoint."""
    run = tmp_path / "run"
    overrides = [
        *TINY, "trainer=multinode", "trainer.accelerator=cpu", "trainer.devices=1",
        "trainer.precision=32-true", "trainer.sync_batchnorm=false", "data.batch_size=8",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={run}",
    ]  # fmt: skip
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    nodes = [
        subprocess.Popen(
            [
                str(BIN / "torchrun"),
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "--no-python",
                str(BIN / "dim-train"),
                *overrides,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # node 1 made no outputs/ of its own
    assert {p.name for p in run.iterdir()} == {
        ".hydra", "checkpoints", "tensorboard", "metrics.json", "encoder.pt", "train.log"
    }  # fmt: skip
    assert len(_event_files(run / "tensorboard", recursive=True)) == 1
    assert "run dir:" in outputs[0][0] and "run dir:" not in outputs[1][0]  # rank 0 reports
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4  # 64 images, 32 per node, 8 per step

    from dim.data.images import ImageDataModule
    from dim.methods.dim import DIMModule

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    module = DIMModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    data = ImageDataModule({**OmegaConf.to_container(cfg.data), "batch_size": 16}, seed=cfg.seed)
    module.eval()
    with torch.no_grad():
        losses = [module.compute_losses(x, y)["local_loss"] for x, y in data.val_dataloader()]
    assert len(losses) == 2  # the 32 validation images as two global batches of 16
    one_process = torch.stack(losses).mean().item()
    assert metrics["metrics"]["val/loss/local"] == pytest.approx(one_process, rel=1e-5)
