"""The GPU path on CUDA: speed options, device-resident data, NCCL DDP, checkpoints moving
between GPU and CPU, and dim-mine.  Marked ``gpu``: skipped on machines without CUDA (the CPU
suite covers the same code paths there); ``pytest -m gpu`` runs only these.

Tolerances.  The fp32 reference runs with TF32 off (true fp32, relative rounding ~6e-8), so a
different but exact-in-fp32 computation (channels-last cuDNN kernels, inductor's fused kernels)
differs by summation order only: 1e-3 on losses of order 1 after five Adam steps leaves room for
the 5 steps' drift.  Mixed precision rounds every matmul/conv input: bf16 keeps 8 significant bits
(relative rounding 2^-9 ~ 2e-3 per operand), fp16 11 bits (2^-12 ~ 2.4e-4); through five layers,
a softmax over the score matrix and five steps, the loss moves by a few times the per-operand
error, so the curves must agree within 3e-2 (bf16) and 1e-2 (fp16).
"""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, dim_module, run_cli
from dataset_fixtures import write_cifar10

from dim.data.device import DeviceDataModule
from dim.data.images import ImageDataModule
from dim.methods.dim import DIMModule

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
# TINY on one GPU in fp32 (trainer=gpu defaults to bf16-mixed)
GPU_TINY = [a for a in TINY if not a.startswith("trainer=")] + [
    "trainer=gpu",
    "trainer.precision=32-true",
]


@contextlib.contextmanager
def exact_fp32():
    """TF32 off for cuBLAS and cuDNN (both default to allowing it for convolutions)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _module(**model) -> DIMModule:
    torch.manual_seed(0)
    return dim_module(mi_units=256, prior_hidden=[64, 32], **model).to(CUDA)


def _curve(module: DIMModule, dtype: torch.dtype | None = None, steps: int = 5) -> torch.Tensor:
    """Encoder loss over ``steps`` Adam steps of every optimiser on fixed batches."""
    optimizers, _ = module.configure_optimizers()
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    g = torch.Generator(device=CUDA).manual_seed(1)
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 3, 32, 32, device=CUDA, generator=g)
        y = torch.randint(0, 10, (32,), device=CUDA, generator=g)
        torch.manual_seed(2)  # the prior samples
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = module.compute_losses(x, y)
        total = out["encoder_loss"] + out["prior_discriminator_loss"] + out["probe_loss"]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        (scaler.scale(total) if scaler else total).backward()
        for opt in optimizers:
            scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()
        losses.append(out["encoder_loss"].detach().float())
    return torch.stack(losses).cpu()


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    with exact_fp32():
        return _curve(_module())


@pytest.mark.parametrize(
    "option, dtype, tol",
    [
        ("channels_last", None, 1e-3),
        ("compile", None, 1e-3),
        ("bf16", torch.bfloat16, 3e-2),
        ("fp16", torch.float16, 1e-2),
    ],
)
def test_speed_option_follows_the_fp32_eager_curve(reference, option, dtype, tol):
    model = {option: True} if option in ("channels_last", "compile") else {}
    with exact_fp32():
        curve = _curve(_module(**model), dtype)
    assert torch.isfinite(curve).all()
    torch.testing.assert_close(curve, reference, rtol=tol, atol=tol)
    assert not torch.equal(curve[0], curve[-1])  # it trained


@pytest.mark.parametrize(
    "options",
    [
        ["trainer.precision=bf16-mixed"],
        ["trainer.precision=16-mixed"],
        ["model.compile=true"],
        ["model.compile=true", "model.compile_mode=reduce-overhead"],
        ["model.compile=true", "model.compile_mode=reduce-overhead", "model.gp_every=2"],
        ["model.cuda_graph=true"],
        ["model.cuda_graph=true", "trainer.precision=bf16-mixed", "data_on_device=true"],
        ["model.channels_last=true"],
        ["data_on_device=true"],
        [
            "trainer.precision=bf16-mixed",
            "model.compile=true",
            "model.channels_last=true",
            "data_on_device=true",
        ],
    ],  # fmt: skip
    ids=lambda o: "+".join(a.split(".")[-1] for a in o),
)
def test_each_speed_option_trains_through_the_cli(tmp_path, options):
    run = tmp_path / "run"
    proc = run_cli("dim-train", *GPU_TINY, *options, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    losses = {k: v for k, v in metrics["metrics"].items() if "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if "trainer.precision=16-mixed" in options:  # the GradScaler ran and was saved
        assert ckpt["MixedPrecision"]["scale"] > 0


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    write_cifar10(tmp_path, n_per_batch=20).register(monkeypatch)

    def make(**augment) -> ImageDataModule:
        cfg = {"name": "cifar10", "data_dir": str(tmp_path), "download": False, "batch_size": 10}
        return ImageDataModule({**cfg, "augment": augment})

    return make


def _on_cuda(base: ImageDataModule) -> DeviceDataModule:
    dev = DeviceDataModule(base)
    dev.setup()
    dev.tensors = {k: (x.to(CUDA), y.to(CUDA)) for k, (x, y) in dev.tensors.items()}
    assert dev.stats is not None
    dev.stats = (dev.stats[0].to(CUDA), dev.stats[1].to(CUDA))
    return dev


def test_device_batches_equal_the_cpu_dataloaders(cifar):
    base, dev = cifar(), _on_cuda(cifar())  # outside a Trainer each pass is the next epoch
    for split in ("val", "train"):  # no augmentation: the same images in the same order
        ours = list(getattr(dev, f"{split}_dataloader")())
        theirs = list(getattr(base, f"{split}_dataloader")())
        assert len(ours) == len(theirs) > 1
        for (xd, yd), (xc, yc) in zip(ours, theirs, strict=True):
            assert xd.device.type == "cuda"
            torch.testing.assert_close(xd.cpu(), xc, rtol=1e-5, atol=1e-5)
            assert torch.equal(yd.cpu(), yc)


def test_device_augmentation_crops_and_flips_on_the_gpu(cifar):
    plain = next(iter(_on_cuda(cifar()).train_dataloader()))[0]
    aug_dev = _on_cuda(cifar(crop_padding=4, hflip=True))
    aug = next(iter(aug_dev.train_dataloader()))[0]
    assert aug.device.type == "cuda" and aug.shape == plain.shape
    background = (0 - aug_dev.stats[0]) / aug_dev.stats[1]  # zero padding, normalised
    flipped = 0
    for a, p in zip(aug.cpu(), plain.cpu(), strict=True):  # each: a window of the padded image
        padded = F.pad(p - background[0].cpu(), (4, 4, 4, 4)) + background[0].cpu()
        hits = [
            (flip, r, c)
            for flip in (False, True)
            for r in range(9)
            for c in range(9)
            if torch.allclose(
                (padded.flip(-1) if flip else padded)[:, r : r + 32, c : c + 32], a, atol=1e-5
            )
        ]
        assert hits, "an augmented image is no window of its padded source"
        flipped += hits[0][0]
    assert 0 < flipped < len(aug)  # both flipped and unflipped images in a batch of 10


def test_nccl_ddp_one_process_end_to_end(tmp_path):
    run = tmp_path / "ddp"
    proc = run_cli(
        "dim-train", *GPU_TINY, "trainer=ddp", "trainer.devices=1", f"hydra.run.dir={run}",
        real=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    assert "nccl" in (proc.stdout + proc.stderr).lower(), proc.stderr[-3000:]  # the backend
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "tensorboard").iterdir())


@pytest.mark.parametrize(
    "first, second",
    [
        (["trainer.accelerator=gpu"], ["trainer.accelerator=cpu"]),
        (["trainer.accelerator=cpu"], ["trainer.accelerator=gpu"]),
    ],
    ids=["gpu-then-cpu", "cpu-then-gpu"],
)
def test_checkpoint_resumes_on_the_other_device(tmp_path, first, second):
    run = tmp_path / "run"
    base = [a for a in GPU_TINY if not a.startswith("trainer=")] + ["data.num_samples=32"]
    proc = run_cli("dim-train", *base, *first, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2
    proc = run_cli("dim-train", f"resume={run}", "trainer.max_epochs=2", *second)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4
    adam = resumed["optimizer_states"][0]["state"]
    assert all(float(s["step"]) == 4 for s in adam.values())  # continued, not restarted
    changed = [
        k for k, v in saved["state_dict"].items()
        if v.is_floating_point() and not torch.equal(v, resumed["state_dict"][k])
    ]  # fmt: skip
    assert changed  # the resumed steps trained


def test_dim_mine_on_cuda(tmp_path):
    run = tmp_path / "mine"
    proc = run_cli(
        "dim-mine", "data=gaussian", "data.mi=1", "device=cuda", "train.max_steps=600",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "mi.json").read_text())
    assert record["settings"]["device"].startswith("cuda")
    assert record["mi_nats"] == pytest.approx(1.0, abs=0.1)
