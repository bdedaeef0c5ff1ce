"""Datasets through the real loading code: digits (shipped) and CIFAR-10 in its on-disk format."""

import pytest
import torch
from dataset_fixtures import write_cifar10

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


def test_cifar10_loads_real_format_through_torchvision(tmp_path, monkeypatch):
    # torchvision verifies every file's md5: register the generated files' checksums.
    write_cifar10(tmp_path, n_per_batch=20).register(monkeypatch)
    cfg = {"name": "cifar10", "data_dir": str(tmp_path), "download": False, "batch_size": 16}
    dm = ImageDataModule(cfg)
    assert len(dm.splits.train) == 100 and len(dm.splits.val) == 20
    x, y = dm.splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert dm.info["num_classes"] == 10


def test_cifar10_with_wrong_checksums_is_refused(tmp_path):
    write_cifar10(tmp_path, n_per_batch=20)  # not registered: the real md5s do not match
    with pytest.raises(DimError, match="not found under"):
        ImageDataModule({"name": "cifar10", "data_dir": str(tmp_path), "download": False})


def test_unknown_dataset_and_tiny_batch():
    with pytest.raises(DimError, match="choose one of"):
        ImageDataModule({"name": "imagenet21k"})
    with pytest.raises(DimError, match="batch_size must be >= 2"):
        ImageDataModule({"name": "digits", "batch_size": 1})


def test_evaluation_and_the_dataset_registry_do_not_import_lightning():
    """dim-eval / dim-embed start in seconds: only training needs pytorch_lightning."""
    import subprocess
    import sys

    code = (
        "import sys, dim.data.sources, dim.eval.runner, dim.cli.eval, dim.cli.embed; "
        "dim.data.sources.build_splits({'name': 'digits'}); "
        "print('pytorch_lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_normalisation_comes_from_the_data_config_or_the_dataset_config_file():
    """An older run's data config (or a dict built in Python) without mean/std still loads."""
    from conftest import compose_train

    from dim.data.transforms import normalisation

    shipped = compose_train(["data=stl10"]).data
    expected = (tuple(shipped.mean), tuple(shipped.std))
    assert normalisation({"channels": 3}, "stl10") == expected
    assert normalisation({"channels": 3, "mean": None, "std": None}, "stl10") == expected
    assert normalisation({"channels": 1, "mean": [0.5], "std": [0.25]}, "stl10") == (
        (0.5,),
        (0.25,),
    )
    with pytest.raises(DimError, match="data.std must be > 0"):
        normalisation({"channels": 3, "std": [0, 1, 1]}, "cifar10")
