"""The decode cache of folder datasets (dim/data/cache.py) on tiny real PNG / JPEG folders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import compose_train, run_cli
from dataset_fixtures import write_image_folder
from omegaconf import OmegaConf
from PIL import Image

import dim.data.cache as cache_module
from dim.data.cache import CachedImages
from dim.data.device import DeviceDataModule
from dim.data.folders import ImageList, UnreadableImageWarning
from dim.data.images import ImageDataModule
from dim.errors import DimError


@pytest.fixture(scope="module")
def folder_cfg():
    cfg = compose_train(["data=folder", "data.labels=folder", "data.image_size=32"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.update(num_workers=0, pin_memory=False, batch_size=4, val_fraction=0.25)
    return data


def setup(tmp_path, folder_cfg, **overrides):
    root = write_image_folder(tmp_path / "imgs", {"cats": 6, "dogs": 6})
    cfg = {**folder_cfg, "root": str(root), "cache_dir": str(tmp_path / "cache"), **overrides}
    return root, cfg


def cache_file(cfg):
    files = [p for p in os.scandir(cfg["cache_dir"]) if p.name.endswith(".npy")]
    assert len(files) == 1, [f.name for f in files]  # one cache per folder: stale ones removed
    return files[0]


def build(cfg, capfd):
    dm = ImageDataModule(cfg)
    return dm, "decoding" in capfd.readouterr().err


def test_built_once_then_reused_with_the_same_images_and_labels(tmp_path, folder_cfg, capfd):
    root, cfg = setup(tmp_path, folder_cfg)
    dm, decoded = build(cfg, capfd)
    assert decoded and isinstance(dm.splits.train, CachedImages)
    first = cache_file(cfg)
    stat = os.stat(first.path)
    again, decoded = build(cfg, capfd)
    assert not decoded  # reused: no decoding, the very same file
    assert (
        cache_file(cfg).name == first.name and os.stat(first.path).st_mtime_ns == stat.st_mtime_ns
    )
    plain = ImageDataModule({**cfg, "cache": False})
    assert isinstance(plain.splits.train, ImageList)
    for cached, files in ((again.splits.eval_train, plain.splits.eval_train),
                          (again.splits.val, plain.splits.val)):  # fmt: skip
        assert cached.paths == files.paths  # same split, same order
        for i in range(len(files)):
            (x, y), (x0, y0) = cached[i], files[i]
            assert y == y0 and torch.equal(x, x0)  # labels kept, pixels exactly the uncached ones
    assert sorted(int(y) for y in again.splits.train.targets) == [0] * 4 + [1] * 5
    assert again.info == {"channels": 3, "image_size": 32, "num_classes": 2}


def test_an_added_or_changed_file_rebuilds(tmp_path, folder_cfg, capfd):
    root, cfg = setup(tmp_path, folder_cfg, val_root=None)
    dm, _ = build(cfg, capfd)
    n = len(dm.splits.train) + len(dm.splits.val)
    old = cache_file(cfg).name
    Image.new("RGB", (33, 35), (200, 10, 10)).save(root / "dogs" / "new.png")
    dm, decoded = build(cfg, capfd)
    assert decoded and len(dm.splits.train) + len(dm.splits.val) == n + 1
    assert cache_file(cfg).name != old  # the stale cache was removed
    # a touched file (same bytes, new mtime): rebuilt
    target = root / "cats" / "img_0.png"
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, decoded = build(cfg, capfd)
    assert decoded
    # a replaced file of another size: rebuilt, and the new pixels are what is read
    Image.new("L", (50, 44), 255).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # even with the old mtime
    dm, decoded = build(cfg, capfd)
    assert decoded
    for ds in (dm.splits.train, dm.splits.val):
        if str(target) in ds.paths:
            assert ds.data[ds.paths.index(str(target))].min() == 255
    # another geometry is another cache, beside the first
    ImageDataModule({**cfg, "image_size": 16})
    assert len([p for p in os.scandir(cfg["cache_dir"]) if p.name.endswith(".npy")]) == 2


def test_unreadable_images_are_counted_and_skipped_or_fail(tmp_path, folder_cfg, capfd):
    root, cfg = setup(tmp_path, folder_cfg)
    (root / "cats" / "broken.jpg").write_text("this is not a jpeg")
    good = root / "dogs" / "deeper" / "img_1.jpg"  # a header that parses, pixels that do not
    (root / "dogs" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    for _ in range(2):  # when built, and again when the cache is reused
        with pytest.warns(UnreadableImageWarning, match="skipping 2 unreadable image.s. of 14"):
            dm = ImageDataModule(cfg)
        assert len(dm.splits.train) + len(dm.splits.val) == 12
        assert not any("broken" in p or "truncated" in p for p in dm.splits.train.paths)
        assert len(dm.splits.train.targets) == len(dm.splits.train) == dm.splits.train.data.shape[0]
    with pytest.raises(DimError, match="2 unreadable image.s. under .*data.on_error=skip"):
        ImageDataModule({**cfg, "on_error": "fail"})


def test_an_interrupted_build_leaves_no_cache(tmp_path, folder_cfg, monkeypatch, capfd):
    _, cfg = setup(tmp_path, folder_cfg)
    monkeypatch.setattr(cache_module, "CHUNK", 4)
    real = cache_module._decode_chunk
    calls = []

    def interrupted(job):
        calls.append(job[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cache_module, "_decode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ImageDataModule(cfg)
    assert [p for p in os.listdir(cfg["cache_dir"]) if not p.endswith(".lock")] == []
    monkeypatch.setattr(cache_module, "_decode_chunk", real)
    dm, decoded = build(cfg, capfd)
    assert decoded and len(dm.splits.train) == 9


def test_worker_processes_build_the_same_bytes(tmp_path, folder_cfg, monkeypatch):
    _, cfg = setup(tmp_path, folder_cfg)
    monkeypatch.setattr(cache_module, "CHUNK", 3)
    serial = ImageDataModule(cfg).splits.train.data.copy()
    parallel = ImageDataModule({**cfg, "num_workers": 2, "cache_dir": str(tmp_path / "c2")})
    assert np.array_equal(serial, parallel.splits.train.data)


def test_off_switch_reads_the_files(tmp_path, folder_cfg):
    _, cfg = setup(tmp_path, folder_cfg, cache=False)
    dm = ImageDataModule(cfg)
    assert isinstance(dm.splits.train, ImageList) and not (tmp_path / "cache").exists()
    with pytest.raises(DimError, match="data_on_device=false or data.cache=true"):
        DeviceDataModule(dm).setup()


def test_data_on_device_trains_on_a_cached_folder_with_one_or_two_views(tmp_path, folder_cfg):
    _, cfg = setup(tmp_path, folder_cfg, augment={"hflip": True, "crop_padding": 2})
    device = DeviceDataModule(ImageDataModule(cfg))
    device.setup()
    x, y = device.tensors["train"]
    assert x.dtype == torch.uint8 and x.shape == (9, 3, 32, 32)
    plain = ImageDataModule({**cfg, "cache": False})
    xv, yv = next(iter(device.val_dataloader()))
    ref = torch.stack([plain.splits.val[i][0] for i in range(len(yv))])
    assert torch.allclose(xv, ref, atol=1e-6)  # the device path's eval batch = the files' one
    assert yv.tolist() == [plain.splits.val[i][1] for i in range(len(yv))]
    xb, yb = next(iter(device.train_dataloader()))
    assert xb.shape == (4, 3, 32, 32) and set(yb.tolist()) <= {0, 1}
    views = DeviceDataModule(ImageDataModule(cfg, views={"translate": 2}))
    views.setup()
    xb, _ = next(iter(views.train_dataloader()))
    assert xb.shape == (4, 2, 3, 32, 32)  # the two-view methods' batches, unchanged
    cpu = ImageDataModule(cfg, views={"translate": 2})  # and through the CPU loader
    xb, _ = next(iter(cpu.train_dataloader()))
    assert xb.shape == (4, 2, 3, 32, 32)


def test_dim_train_on_a_folder_with_data_on_device(tmp_path):
    root = write_image_folder(tmp_path / "imgs", {"cats": 12, "dogs": 12})
    args = [
        "data=folder", f"data.root={root}", "data.labels=folder", "data.image_size=32",
        "data.batch_size=8", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}",
        "data_on_device=true", "model.mi_units=32", "trainer=cpu", "trainer.max_epochs=1",
        "logger.histogram_every_n_steps=0", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = run_cli("dim-train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "decoding 24 images" in proc.stderr
    assert any(p.suffix == ".npy" for p in (tmp_path / "cache").iterdir())


def test_an_unusable_cache_dir_is_one_line(tmp_path, folder_cfg):
    (tmp_path / "file").write_text("not a folder")
    _, cfg = setup(tmp_path, folder_cfg, cache_dir=str(tmp_path / "file" / "cache"))
    with pytest.raises(DimError, match=r"data.cache_dir: cannot create .*data.cache=false") as err:
        ImageDataModule(cfg)
    assert "\n" not in str(err.value)
