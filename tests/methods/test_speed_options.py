"""Single-device speed options, each checked for correctness on CPU: bf16, channels_last,
torch.compile and device-resident data (same batches, augmentation and normalisation)."""

import json

import pytest
import torch
from conftest import TINY, dim_module, run_cli
from dataset_fixtures import write_cifar10
from omegaconf import OmegaConf

from dim.data.device import DeviceDataModule, random_crop
from dim.data.images import ImageDataModule
from dim.methods.dim import DIMModule

DATA = dict(channels=3, image_size=32, num_classes=10)


_module = dim_module


def test_bf16_channels_last_and_device_data_train_through_the_cli(tmp_path):
    run = tmp_path / "fast"
    args = ["trainer.precision=bf16-mixed", "model.channels_last=true", "data_on_device=true"]
    proc = run_cli("dim-train", *TINY, *args, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    assert all(v is not None for k, v in metrics["metrics"].items() if k.startswith("train/loss"))


def test_channels_last_gives_the_same_losses():
    torch.manual_seed(0)
    plain = _module()
    fast = _module(channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.manual_seed(1)
    a = plain.compute_losses(x, y)
    torch.manual_seed(1)
    b = fast.compute_losses(x, y)
    torch.testing.assert_close(a["local_loss"], b["local_loss"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a["global_loss"], b["global_loss"], rtol=1e-4, atol=1e-4)


def _check_compiled(backend: str) -> None:
    torch.manual_seed(0)
    eager = _module()
    compiled = _module(compile=True, compile_backend=backend)
    compiled.load_state_dict(eager.state_dict())  # same keys: no "_orig_mod." prefix
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        eager.eval(), compiled.eval()
        torch.testing.assert_close(
            compiled.encoder(x)["y"], eager.encoder(x)["y"], rtol=1e-3, atol=1e-4
        )
    out = compiled.train().compute_losses(x, torch.randint(0, 10, (4,)))
    out["encoder_loss"].backward()
    assert torch.isfinite(out["encoder_loss"])
    assert all(p.grad is not None for p in compiled.encoder.parameters())


def test_compiled_encoder_matches_eager_and_keeps_checkpoint_keys():
    """Dynamo's graphs through AOTAutograd (forward and backward), without inductor's code
    generation, which costs about a minute of cold C++ compilation (the slow test below)."""
    _check_compiled("aot_eager")


@pytest.mark.slow
def test_inductor_compiled_encoder_matches_eager():
    _check_compiled("inductor")


def test_compile_mode_and_backend_reach_torch_compile(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    m = _module(compile=True, compile_mode="max-autotune")
    assert all(kw == {"backend": "inductor", "mode": "max-autotune"} for kw in seen)
    critics = [*m.local_critic.children(), *m.global_critic.children()]
    assert len(seen) == 1 + len(critics) > 2  # the encoder and the critics' nets, not the prior
    seen.clear()
    _module(compile=True, compile_backend="aot_eager")
    assert all(kw == {"backend": "aot_eager"} for kw in seen)


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    write_cifar10(tmp_path, n_per_batch=20).register(monkeypatch)
    cfg = {"name": "cifar10", "data_dir": str(tmp_path), "download": False, "batch_size": 10}
    return ImageDataModule(cfg)


def test_device_data_normalises_exactly_like_the_dataloader(cifar):
    dev = DeviceDataModule(cifar)
    dev.setup()
    assert dev.tensors["train"][0].dtype == torch.uint8  # stored compactly
    x_dev, y_dev = next(iter(dev.val_dataloader()))
    x_ref, y_ref = next(iter(cifar.val_dataloader()))
    torch.testing.assert_close(x_dev, x_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(y_dev, y_ref)
    assert len(dev.train_dataloader()) == len(cifar.train_dataloader()) == 10


def test_device_data_shards_disjointly_across_processes(cifar):
    def images(rank, world_size):  # the first epoch of a fresh DataModule
        dev = DeviceDataModule(ImageDataModule(cifar.cfg))
        dev.setup()
        dev.rank, dev.world_size = rank, world_size
        return {tuple(x.flatten().tolist()) for xb, _ in dev.train_dataloader() for x in xb}

    shards = [images(rank, 2) for rank in range(2)]
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 50
    # together they hold exactly the images of one process's epoch (same permutation)
    assert shards[0] | shards[1] == images(0, 1)


def test_random_crop_takes_windows_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    out = random_crop(x, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_device_data_pads_like_center_crop_and_refuses_what_it_cannot_reproduce():
    from dim.data.device import center_crop, check_reproducible
    from dim.errors import DimError

    x = torch.ones(2, 1, 28, 28)
    out = center_crop(x, 32)  # MNIST 28 -> 32 as torchvision's CenterCrop does: zero border
    assert (
        out.shape == (2, 1, 32, 32) and out[:, :, 2:30, 2:30].eq(1).all() and out.sum() == 2 * 784
    )
    big = torch.arange(96.0).expand(1, 3, 96, 96)
    assert torch.equal(center_crop(big, 64)[0, 0, 0], torch.arange(16.0, 80.0))
    cfg = {"name": "celeba", "center_crop": 140}
    with pytest.raises(DimError, match="data_on_device=false"):
        check_reproducible(cfg, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), {"channels": 3})
    with pytest.raises(DimError, match="channels=1"):
        check_reproducible(
            {"name": "cifar10"}, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), {"channels": 1}
        )


@pytest.mark.parametrize("name", ["mnist", "stl10"])
def test_device_data_matches_the_dataloader_on_mnist_and_stl10(name, tmp_path, monkeypatch):
    from conftest import compose_train
    from dataset_fixtures import write_mnist, write_stl10

    if name == "mnist":
        write_mnist(tmp_path)
    else:
        write_stl10(tmp_path, n_train=6, n_unlabeled=10, n_test=6).register(monkeypatch)
    cfg = OmegaConf.to_container(compose_train([f"data={name}"]).data, resolve=True)
    base = ImageDataModule(
        {**cfg, "data_dir": str(tmp_path), "download": False, "batch_size": 4, "num_workers": 0}
    )
    dev = DeviceDataModule(base)
    dev.setup()
    x_dev, y_dev = next(iter(dev.val_dataloader()))  # evaluation transform: deterministic
    x_ref, y_ref = next(iter(base.val_dataloader()))
    torch.testing.assert_close(x_dev, x_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(y_dev, y_ref)
    x_train, _ = next(iter(dev.train_dataloader()))
    assert x_train.shape[1:] == x_ref.shape[1:]  # random crops come out at the training size


def _fit_fp16(init_scale: float):
    """Lightning turns ``precision=16-mixed`` on CPU into bf16; an explicit plugin keeps fp16."""
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.precision import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    scales, update = [], scaler.update
    scaler.update = lambda *a, **k: (scales.append(scaler.get_scale()), update(*a, **k))[1]
    module = DIMModule(
        dict(encoder="basic32", mi_units=32, prior_hidden=[32, 16]),
        dict(name="infonce"),
        dict(alpha=0.5, beta=1.0, gamma=0.1),
        dict(lr=1e-3, grad_clip=1.0),
        DATA,
    )
    # 2 steps: fp16 is emulated on CPU (seconds a step)
    data = ImageDataModule({"name": "synthetic", "num_samples": 32, "batch_size": 16})
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    return trainer, scales


def test_fp16_steps_every_optimizer_with_one_scaler_update_per_step():
    trainer, scales = _fit_fp16(init_scale=2.0**10)
    assert trainer.global_step == 2 and len(scales) == 2  # one GradScaler.update() per step
    assert len(trainer.optimizers) == 3  # encoder + critics, prior discriminator, probes
    for opt in trainer.optimizers:  # every one of them stepped
        assert all(float(st["step"]) == 2 for st in opt.state.values())


def test_fp16_overflow_lowers_the_scale_instead_of_stopping_the_run():
    trainer, scales = _fit_fp16(init_scale=2.0**60)  # the scaled gradients overflow fp16
    assert trainer.global_step == 2  # no NonFiniteLossError: skipping is the scaler's business
    assert scales[0] == 2.0**60 and trainer.precision_plugin.scaler.get_scale() < 2.0**60
