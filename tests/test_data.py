"""Datasets through the real loading code: digits (shipped) and CIFAR-10 in its on-disk format."""

import hashlib
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets

from dim.data.images import ImageDataModule
from dim.errors import DimError


def test_digits_is_real_upsampled_and_split():
    dm = ImageDataModule({"name": "digits", "batch_size": 64})
    assert len(dm.splits.train) == 1500 and len(dm.splits.val) == 297
    x, y = dm.splits.train[0]
    assert x.shape == (1, 32, 32) and 0 <= int(y) <= 9
    assert dm.info == {"channels": 1, "image_size": 32, "num_classes": 10}
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (64, 1, 32, 32)


def _write_cifar10(root, n_per_batch=20):
    """Tiny CIFAR-10 in torchvision's python-pickle layout, with md5s registered for the test."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    return [[n, md5(n)] for n in names[:5]], [[names[5], md5(names[5])]], md5("batches.meta")


def test_cifar10_loads_real_format_through_torchvision(tmp_path, monkeypatch):
    train_list, test_list, meta_md5 = _write_cifar10(tmp_path)
    # torchvision verifies every file's md5: register the generated files' checksums.
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": meta_md5})
    cfg = {"name": "cifar10", "data_dir": str(tmp_path), "download": False, "batch_size": 16}
    dm = ImageDataModule(cfg)
    assert len(dm.splits.train) == 100 and len(dm.splits.val) == 20
    x, y = dm.splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert dm.info["num_classes"] == 10


def test_cifar10_with_wrong_checksums_is_refused(tmp_path):
    _write_cifar10(tmp_path)  # real torchvision md5 list: the generated files do not match
    with pytest.raises(DimError, match="not found under"):
        ImageDataModule({"name": "cifar10", "data_dir": str(tmp_path), "download": False})


def test_unknown_dataset_and_tiny_batch():
    with pytest.raises(DimError, match="choose one of"):
        ImageDataModule({"name": "imagenet21k"})
    with pytest.raises(DimError, match="batch_size must be >= 2"):
        ImageDataModule({"name": "digits", "batch_size": 1})
