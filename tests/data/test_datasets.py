"""Every dataset of `data=` through its real loading code, on tiny files in the real on-disk format.

torchvision's md5 checks stay on: the tests register the generated files' checksums
(``Written.register``), exactly as a user's real files are checked against torchvision's list.
"""

from __future__ import annotations

from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import compose_train, run_cli
from dataset_fixtures import (
    CELEBA_ATTRIBUTES,
    write_celeba,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_image_folder,
    write_mnist,
    write_stl10,
    write_tiny_imagenet,
)
from omegaconf import OmegaConf

from dim.data.folders import UnreadableImageWarning
from dim.data.images import ImageDataModule
from dim.data.sources import SOURCES, build_splits
from dim.errors import DimError
from dim.nets.encoders import check_image_shape

DATASETS = [
    "cifar10",
    "cifar100",
    "stl10",
    "tiny_imagenet",
    "celeba",
    "mnist",
    "fashion_mnist",
    "folder",
]


def data_cfg(name: str, **overrides) -> dict:
    """The shipped `configs/data/<name>.yaml`, resolved, with overrides (as dim-train sees it)."""
    cfg = compose_train([f"data={name}"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.update(num_workers=0, pin_memory=False, batch_size=4, **overrides)
    return data


@pytest.fixture(scope="module")
def configs():
    return {name: data_cfg(name) for name in DATASETS}


def test_every_design_dataset_is_registered_and_configured(configs):
    assert set(DATASETS) | {"digits", "synthetic"} <= set(SOURCES)
    defaults = compose_train([])
    for name, cfg in configs.items():
        assert cfg["name"] == name
        assert cfg["data_dir"] == defaults.paths.data_dir  # from paths.data_dir
        assert {"image_size", "channels", "mean", "std", "augment"} <= set(cfg)
        if name != "folder":
            assert isinstance(cfg["download"], bool)


def _check(dm: ImageDataModule, channels: int, size: int, classes: int | None) -> None:
    assert dm.info == {"channels": channels, "image_size": size, "num_classes": classes}
    for ds in (dm.splits.train, dm.splits.val, dm.splits.eval_train):
        x, y = ds[0]
        assert x.shape == (channels, size, size) and x.dtype == torch.float32
        assert isinstance(int(y), int)
    check_image_shape("basic32" if size == 32 else "alex64", channels, size)  # fits its encoder
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (dm.batch_size, channels, size, size) and y.dtype == torch.int64


def test_cifar10(tmp_path, monkeypatch, configs):
    write_cifar10(tmp_path, n_per_batch=4).register(monkeypatch)
    dm = ImageDataModule({**configs["cifar10"], "data_dir": str(tmp_path), "download": False})
    assert len(dm.splits.train) == 20 and len(dm.splits.val) == 4
    _check(dm, 3, 32, 10)


def test_cifar100_and_train_augmentations(tmp_path, monkeypatch, configs):
    write_cifar100(tmp_path).register(monkeypatch)
    aug = {"hflip": True, "crop_padding": 4, "random_crop": False}
    cfg = {**configs["cifar100"], "data_dir": str(tmp_path), "download": False, "augment": aug}
    dm = ImageDataModule(cfg)
    assert len(dm.splits.train) == 40 and len(dm.splits.val) == 8
    _check(dm, 3, 32, 100)
    torch.manual_seed(0)
    views = torch.stack([dm.splits.train[0][0] for _ in range(6)])
    assert (views - views[0]).abs().amax() > 0  # random crops / flips
    clean = dm.splits.eval_train[0][0]
    assert torch.equal(clean, dm.splits.eval_train[0][0])  # evaluation: deterministic


def test_stl10_trains_on_unlabeled_plus_train_with_random_64_crops(tmp_path, monkeypatch, configs):
    write_stl10(tmp_path, n_train=6, n_unlabeled=10, n_test=6).register(monkeypatch)
    dm = ImageDataModule({**configs["stl10"], "data_dir": str(tmp_path), "download": False})
    s = dm.splits
    assert len(s.train) == 16 and len(s.val) == 6 and len(s.eval_train) == 6
    labels = [int(s.train[i][1]) for i in range(16)]
    assert labels.count(-1) == 10 and all(0 <= v < 10 for v in labels[:6])
    assert all(int(s.eval_train[i][1]) >= 0 for i in range(6))
    _check(dm, 3, 64, 10)
    # evaluation = the exact 64x64 center crop of the 96x96 image, normalised
    raw = np.transpose(s.val.data[0], (1, 2, 0))[16:80, 16:80].astype(np.float32) / 255
    mean, std = configs["stl10"]["mean"], configs["stl10"]["std"]
    expected = (torch.tensor(raw).permute(2, 0, 1) - torch.tensor(mean)[:, None, None]) / (
        torch.tensor(std)[:, None, None]
    )
    assert torch.allclose(s.val[0][0], expected, atol=1e-5)
    torch.manual_seed(0)
    crops = torch.stack([s.train[0][0] for _ in range(6)])
    assert (crops - crops[0]).abs().amax() > 0  # random crops of the training images


def test_mnist_is_padded_to_32(tmp_path, configs):
    write_mnist(tmp_path)
    dm = ImageDataModule({**configs["mnist"], "data_dir": str(tmp_path), "download": False})
    assert len(dm.splits.train) == 12 and len(dm.splits.val) == 6
    _check(dm, 1, 32, 10)
    x = dm.splits.val[0][0]
    background = (0 - 0.1307) / 0.3081
    assert torch.allclose(x[:, :2], torch.full_like(x[:, :2], background))  # 2-pixel zero border
    up = ImageDataModule({**configs["mnist"], "data_dir": str(tmp_path), "resize": 32})
    assert up.splits.val[0][0].shape == (1, 32, 32)
    rgb = ImageDataModule({**configs["mnist"], "data_dir": str(tmp_path), "channels": 3})
    assert rgb.info["channels"] == 3 and rgb.splits.val[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_gzipped_or_unpacked_files(tmp_path, configs, gz):
    images, labels = write_fashion_mnist(tmp_path, gz=gz)
    dm = ImageDataModule({**configs["fashion_mnist"], "data_dir": str(tmp_path), "download": False})
    assert len(dm.splits.train) == 40 and len(dm.splits.val) == 10
    _check(dm, 1, 32, 10)
    x, label = dm.splits.eval_train[3]
    expected = (torch.tensor(images[3], dtype=torch.float32) / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[0, 2:30, 2:30], expected, atol=1e-5)  # the image inside a 2-px border
    assert torch.allclose(x[0, :2], torch.full_like(x[0, :2], -0.2860 / 0.3530))
    assert label == labels[3]
    # gzipped files are read in place: nothing is unpacked into the (maybe read-only) data folder
    assert sorted(p.suffix for p in (tmp_path / "FashionMNIST" / "raw").iterdir()) == (
        [".gz"] * 4 if gz else [""] * 4
    )


def test_fashion_mnist_truncated_file_is_one_line(tmp_path, configs):
    write_fashion_mnist(tmp_path, gz=False)
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DimError, match="Fashion-MNIST .*truncated"):
        build_splits({**configs["fashion_mnist"], "data_dir": str(tmp_path), "download": False})


def test_holdout_is_carved_from_train_and_never_reads_the_test_split(tmp_path, configs):
    images, labels = write_fashion_mnist(tmp_path, n_train=40, n_test=10)
    cfg = {**configs["fashion_mnist"], "data_dir": str(tmp_path), "download": False}
    held = build_splits({**cfg, "holdout": 8})
    assert len(held.train) == len(held.eval_train) == 32 and len(held.val) == 8
    val_images = {bytes(np.asarray(held.val.data[i])) for i in range(8)}
    train_images = {bytes(np.asarray(held.train.data[i])) for i in range(32)}
    assert not val_images & train_images  # disjoint ...
    assert val_images | train_images == {bytes(a.astype(np.uint8)) for a in images}  # ... and whole
    assert held.val.transform is held.eval_train.transform  # validation: no augmentation
    again = build_splits({**cfg, "holdout": 8})  # the same draw for training and evaluation
    assert torch.equal(torch.as_tensor(again.val.targets), torch.as_tensor(held.val.targets))
    with pytest.raises(DimError, match="data.holdout must lie in 1..39"):
        build_splits({**cfg, "holdout": 40})


def test_celeba_one_attribute_is_the_label(tmp_path, monkeypatch, configs):
    write_celeba(tmp_path, n=9).register(monkeypatch)
    cfg = {**configs["celeba"], "data_dir": str(tmp_path), "batch_size": 2}
    dm = ImageDataModule(cfg)
    assert len(dm.splits.train) == 3 and len(dm.splits.val) == 3  # partition 0 / 2
    _check(dm, 3, 64, 2)
    smiling = CELEBA_ATTRIBUTES.index("Smiling")
    rows = (tmp_path / "celeba" / "list_attr_celeba.txt").read_text().splitlines()[2:]
    first = int(rows[0].split()[1 + smiling])
    assert dm.splits.train[0][1] == (first + 1) // 2
    by_index = ImageDataModule({**cfg, "attribute": smiling})
    assert by_index.splits.train[0][1] == dm.splits.train[0][1]
    unlabelled = ImageDataModule({**cfg, "attribute": None})
    assert unlabelled.info["num_classes"] is None and unlabelled.splits.train[0][1] == -1
    with pytest.raises(DimError, match="not a CelebA attribute; choose one of: 5_o_Clock"):
        ImageDataModule({**cfg, "attribute": "Smiley"})


def test_tiny_imagenet_standard_layout_200_classes(tmp_path, configs):
    write_tiny_imagenet(tmp_path, n_classes=200, n_train=1, n_val=1, n_test=1)
    cfg = {**configs["tiny_imagenet"], "data_dir": str(tmp_path), "download": False}
    dm = ImageDataModule(cfg)
    assert len(dm.splits.train) == 200 and len(dm.splits.val) == 200
    _check(dm, 3, 64, 200)
    base = tmp_path / "tiny-imagenet-200"
    wnids = sorted((base / "wnids.txt").read_text().split())
    name, wnid = (base / "val" / "val_annotations.txt").read_text().splitlines()[7].split()[:2]
    assert dm.splits.val.paths[7].endswith(name)
    assert dm.splits.val[7][1] == wnids.index(wnid)  # val labels from val_annotations.txt
    (base / "val" / "images" / name).unlink()
    with pytest.raises(DimError, match=f"incomplete: .*{name} is missing"):
        ImageDataModule(cfg)


def test_folder_labels_none_reads_every_image_unlabelled(tmp_path, configs):
    root = write_image_folder(tmp_path / "imgs", {"cats": 5, "dogs": 5})
    (root / "notes.txt").write_text("not an image")
    (root / "loose.png").write_bytes((root / "cats" / "img_0.png").read_bytes())
    cfg = {**configs["folder"], "root": str(root), "val_fraction": 0.2}
    dm = ImageDataModule(cfg)
    assert len(dm.splits.train) + len(dm.splits.val) == 11  # nested images too, .txt ignored
    assert dm.info["num_classes"] is None
    assert {int(dm.splits.train[i][1]) for i in range(len(dm.splits.train))} == {-1}
    _check(dm, 3, 64, None)
    grey = ImageDataModule({**cfg, "channels": 1, "image_size": 32, "mean": [0.5], "std": [0.5]})
    _check(grey, 1, 32, None)


def test_folder_labels_from_sub_folders_and_its_errors(tmp_path, configs):
    root = write_image_folder(tmp_path / "imgs", {"cats": 6, "dogs": 4})
    val = write_image_folder(tmp_path / "val", {"cats": 2, "dogs": 2}, nested=False)
    cfg = {**configs["folder"], "root": "imgs", "data_dir": str(tmp_path), "labels": "folder"}
    dm = ImageDataModule({**cfg, "val_root": str(val)})  # relative root: under data_dir
    assert len(dm.splits.train) == 10 and len(dm.splits.val) == 4
    labels = sorted(int(dm.splits.train[i][1]) for i in range(10))
    assert labels == [0] * 6 + [1] * 4 and dm.info["num_classes"] == 2
    _check(dm, 3, 64, 2)
    (root / "stray.jpg").write_bytes((root / "cats" / "img_2.jpg").read_bytes())
    with pytest.raises(DimError, match="1 image.s. lie directly in it"):
        ImageDataModule(cfg)
    single = write_image_folder(tmp_path / "one", {"cats": 4})
    with pytest.raises(DimError, match="single class folder.*data.labels=none"):
        ImageDataModule({**cfg, "root": str(single)})
    with pytest.raises(DimError, match="data.labels must be none or folder"):
        ImageDataModule({**cfg, "labels": "classes"})
    with pytest.raises(DimError, match="no such folder"):
        ImageDataModule({**cfg, "root": "nowhere"})
    with pytest.raises(DimError, match="needs data.root"):
        ImageDataModule(configs["folder"])


def test_folder_unreadable_images_skip_with_a_count_or_fail(tmp_path, configs):
    root = write_image_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    (root / "a" / "broken.jpg").write_text("this is not a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    cfg = {**configs["folder"], "root": str(root), "val_fraction": 0.25}
    with pytest.warns(UnreadableImageWarning, match="skipping 2 unreadable image.s. of 10"):
        dm = ImageDataModule(cfg)
    assert len(dm.splits.train) + len(dm.splits.val) == 8
    with pytest.raises(DimError, match="2 unreadable image.s. under .*data.on_error=skip"):
        ImageDataModule({**cfg, "on_error": "fail"})
    # without the decode cache (tests/data/test_cache.py), a file that breaks only when decoded:
    # skipped at load time (or fails, naming it)
    good = root / "a" / "deeper" / "img_1.jpg"
    good.write_bytes(good.read_bytes()[:200])
    cfg = {**cfg, "cache": False}
    lazy = ImageDataModule({**cfg, "check_images": False, "val_fraction": 0.5})
    splits = [lazy.splits.train, lazy.splits.val]
    ds = next(d for d in splits if str(good) in d.paths)
    with pytest.warns(UnreadableImageWarning, match="img_1.jpg"):
        x, _ = ds[ds.paths.index(str(good))]
    assert x.shape == (3, 64, 64)
    strict = ImageDataModule(
        {**cfg, "check_images": False, "on_error": "fail", "val_fraction": 0.5}
    )
    ds = next(d for d in [strict.splits.train, strict.splits.val] if str(good) in d.paths)
    with pytest.raises(DimError, match="cannot read image .*img_1.jpg"):
        ds[ds.paths.index(str(good))]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py/{data_batch_1"),
        ("cifar100", "cifar-100-python/{train,test,meta}"),
        ("stl10", "stl10_binary/{train_X.bin"),
        ("tiny_imagenet", "tiny-imagenet-200/{wnids.txt"),
        ("celeba", "celeba/img_align_celeba/"),
        ("mnist", "MNIST/raw/{train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/{train-images-idx3-ubyte"),
    ],
)
def test_missing_data_is_one_line_naming_path_layout_and_source(tmp_path, configs, name, expected):
    cfg = {**configs[name], "data_dir": str(tmp_path / "empty"), "download": False}
    with pytest.raises(DimError) as err:
        build_splits(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "not found under" in msg and str(tmp_path / "empty") in msg
    assert expected in msg and "data.download=false" in msg and "data=digits" in msg
    if name == "fashion_mnist":  # the offline way in: the Debian package's files
        assert "apt-get download dataset-fashion-mnist" in msg and "dpkg-deb -x" in msg


def test_failed_download_says_so(tmp_path, configs, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    from torchvision.datasets import utils as tv_utils

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    for name in ("cifar10", "tiny_imagenet"):
        cfg = {**configs[name], "data_dir": str(tmp_path), "download": True}
        with pytest.raises(DimError, match="download failed .*name resolution.*https?://"):
            build_splits(cfg)


def test_cli_missing_dataset_is_one_line_exit_2(tmp_path):
    proc = run_cli(
        "dim-train",
        "data=stl10",
        "model=alex64",
        f"data.data_dir={tmp_path}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: STL-10 not found under") and "Traceback" not in proc.stderr
    assert "stl10_binary" in err[-1] and not (tmp_path / "run").exists()


def test_image_size_mismatch_names_the_matching_encoder(tmp_path, monkeypatch):
    from dim.training import train

    write_stl10(tmp_path).register(monkeypatch)
    cfg = compose_train(
        ["data=stl10", f"data.data_dir={tmp_path}", "data.batch_size=4", "model=basic32"]
    )
    with pytest.raises(DimError, match="expects 32x32 images but the data gives 64x64; use model="):
        train(cfg, tmp_path / "run", None)
