"""Datasets read by torchvision's own classes: CIFAR-10/100, STL-10, MNIST, Fashion-MNIST, CelebA.

torchvision verifies its files (md5 checksums) and downloads them when ``data.download=true``; any
failure (absent, corrupt, no network) becomes one :func:`missing_data_error` line that names the
expected path and files and how to obtain them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dim.data.base import Splits, data_root, missing_data_error, register, with_transform
from dim.data.transforms import split_transforms
from dim.errors import DimError

# Errors torchvision raises for absent / corrupt files (RuntimeError), failed downloads (URLError is
# an OSError; a truncated .gz an EOFError) and CelebA's optional downloader (gdown: ImportError).
_LOAD_ERRORS = (RuntimeError, OSError, EOFError, ImportError)


def _open(
    display: str, path: Path, download: bool, layout: str, how: str, make: Callable[[], Any]
) -> Any:
    try:
        return make()
    except _LOAD_ERRORS as err:
        raise missing_data_error(
            display, path, err, layout=layout, how=how, download=download
        ) from None


def _cifar(cfg: dict[str, Any], name: str) -> Splits:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root, download = data_root(cfg), bool(cfg.get("download", True))
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    layout = f"{cls.base_folder}/{{{','.join(files)}}}"
    how = f"download {cls.url} and extract it into {root}"
    train_tf, eval_tf = split_transforms(cfg, name)

    def make():
        train = cls(str(root), train=True, download=download, transform=train_tf)
        return train, cls(str(root), train=False, download=download, transform=eval_tf)

    train, val = _open(name.upper(), root / cls.base_folder, download, layout, how, make)
    return Splits(
        train,
        val,
        channels=int(cfg.get("channels", 3)),
        image_size=int(cfg["image_size"]),
        num_classes=10 if name == "cifar10" else 100,
        eval_train=with_transform(train, eval_tf),
    )


@register("cifar10")
def cifar10(cfg: dict[str, Any]) -> Splits:
    """CIFAR-10: 50k train / 10k test 32x32 images, 10 classes."""
    return _cifar({"image_size": 32, **cfg}, "cifar10")


@register("cifar100")
def cifar100(cfg: dict[str, Any]) -> Splits:
    """CIFAR-100: 50k train / 10k test 32x32 images, 100 (fine) classes."""
    return _cifar({"image_size": 32, **cfg}, "cifar100")


STL10_SPLITS = ("train+unlabeled", "unlabeled", "train")


@register("stl10")
def stl10(cfg: dict[str, Any]) -> Splits:
    """STL-10: DIM trains on ``train_split`` (the 100k unlabeled + 5k train images by default).

    As in the paper, training takes random 64x64 crops (+ flips) of the 96x96 images; evaluation
    uses the 64x64 center crop, with the 5k labelled train images (``eval_train``) and the 8k test
    images (``val``).
    """
    from torchvision import datasets

    cfg = {"image_size": 64, **cfg}
    split = str(cfg.get("train_split", "train+unlabeled"))
    if split not in STL10_SPLITS:
        raise DimError(f"data.train_split must be one of {', '.join(STL10_SPLITS)}, got '{split}'")
    root, download = data_root(cfg), bool(cfg.get("download", True))
    cls = datasets.STL10
    files = [f for f, _ in cls.train_list + cls.test_list]
    layout = f"{cls.base_folder}/{{{','.join(files)}}}"
    how = f"download {cls.url} and extract it into {root}"
    train_tf, eval_tf = split_transforms(cfg, "stl10")

    def make():
        train = cls(str(root), split=split, download=download, transform=train_tf)
        return train, cls(str(root), split="test", download=download, transform=eval_tf)

    train, val = _open("STL-10", root / cls.base_folder, download, layout, how, make)
    if split == "unlabeled":
        labelled = _open(
            "STL-10",
            root / cls.base_folder,
            download,
            layout,
            how,
            lambda: cls(str(root), split="train", transform=eval_tf),
        )
    else:  # torchvision puts the labelled train images first: a view, not a copy
        n = int((train.labels >= 0).sum())
        labelled = with_transform(train, eval_tf)
        labelled.data, labelled.labels = train.data[:n], train.labels[:n]
    return Splits(
        train,
        val,
        channels=int(cfg.get("channels", 3)),
        image_size=int(cfg["image_size"]),
        num_classes=10,
        eval_train=labelled,
    )


DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"


def _idx_splits(cfg: dict[str, Any], name: str, display: str, cls: Any, how: str) -> Splits:
    """MNIST-format data (``<root>/<folder>/raw``, IDX files gzipped or not), padded to 32x32."""
    cfg = {"image_size": 32, "channels": 1, **cfg}
    root, download = data_root(cfg), bool(cfg.get("download", True))
    stems = [Path(f).stem for f, _ in cls.resources]  # the IDX files, each also read as .gz
    layout = f"{cls.folder}/raw/{{{','.join(stems)}}}[.gz]"
    train_tf, eval_tf = split_transforms(cfg, name)

    def make():
        train = cls(str(root), train=True, download=download, transform=train_tf)
        return train, cls(str(root), train=False, download=download, transform=eval_tf)

    train, val = _open(display, root / cls.folder / "raw", download, layout, how, make)
    return Splits(
        train,
        val,
        channels=int(cfg["channels"]),
        image_size=int(cfg["image_size"]),
        num_classes=10,
        eval_train=with_transform(train, eval_tf),
    )


@register("mnist")
def mnist(cfg: dict[str, Any]) -> Splits:
    """MNIST: 60k train / 10k test 28x28 greyscale digits, zero-padded to 32x32 by default."""
    from dim.data.idx import MNISTFiles

    raw = data_root(cfg) / "MNIST" / "raw"
    how = f"download the four files of {MNISTFiles.mirrors[0]} into {raw}"
    return _idx_splits(cfg, "mnist", "MNIST", MNISTFiles, how)


@register("fashion_mnist")
def fashion_mnist(cfg: dict[str, Any]) -> Splits:
    """Fashion-MNIST: 60k train / 10k test 28x28 greyscale product photos, 10 classes, padded to
    32x32 like MNIST."""
    from dim.data.idx import FashionMNISTFiles

    raw = data_root(cfg) / "FashionMNIST" / "raw"
    how = (
        "offline: apt-get download dataset-fashion-mnist && dpkg-deb -x "
        f"dataset-fashion-mnist_*.deb deb && mkdir -p {raw} && cp deb{DEBIAN_FASHION}/*.gz "
        f"{raw} (or, where the package is installed, cp {DEBIAN_FASHION}/*.gz {raw}); online: "
        f"data.download=true or the four files of {FashionMNISTFiles.mirrors[0]}"
    )
    return _idx_splits(cfg, "fashion_mnist", "Fashion-MNIST", FashionMNISTFiles, how)


class AttributeLabel:
    """CelebA target: one of the 40 binary attributes as a 0/1 class label (-1: unlabelled)."""

    def __init__(self, index: int | None) -> None:
        self.index = index

    def __call__(self, attributes: Any) -> int:
        return -1 if self.index is None else int(attributes[self.index])


def _attribute_index(names: list[str], wanted: Any) -> int | None:
    if wanted is None or wanted == "none":
        return None
    if isinstance(wanted, int) or str(wanted).isdigit():
        index = int(wanted)
        if not 0 <= index < len(names):
            raise DimError(f"data.attribute={wanted}: CelebA has attributes 0..{len(names) - 1}")
        return index
    if wanted not in names:
        raise DimError(
            f"data.attribute='{wanted}' is not a CelebA attribute; choose one of: "
            f"{', '.join(names)} (or an index 0..{len(names) - 1}, or null for unlabelled)"
        )
    return names.index(wanted)


CELEBA_SPLITS = ("valid", "test")


@register("celeba")
def celeba(cfg: dict[str, Any]) -> Splits:
    """CelebA (aligned faces): train split for DIM, ``val_split`` (test) for evaluation.

    Faces are center-cropped (``center_crop``, 140 px) and resized to 64x64.  CelebA labels are 40
    binary attributes; probes need one class label per image, so ``data.attribute`` (a name such
    as ``Smiling`` or an index 0..39) picks one attribute as a 2-class label; ``null`` makes the
    data unlabelled (label -1, no probes).
    """
    from torchvision import datasets

    cfg = {"image_size": 64, "center_crop": 140, **cfg}
    cfg["resize"] = cfg.get("resize") or cfg["image_size"]
    val_split = str(cfg.get("val_split", "test"))
    if val_split not in CELEBA_SPLITS:
        raise DimError(f"data.val_split must be valid or test, got '{val_split}'")
    root, download = data_root(cfg), bool(cfg.get("download", False))
    cls = datasets.CelebA
    files = ", ".join(f for _, _, f in cls.file_list if not f.endswith(".zip"))
    layout = f"celeba/img_align_celeba/*.jpg and celeba/{{{files}}}"
    how = (
        "download them from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into "
        f"{root}/celeba and unzip img_align_celeba.zip there (data.download=true needs gdown)"
    )
    train_tf, eval_tf = split_transforms(cfg, "celeba")

    def make():
        train = cls(str(root), split="train", download=download, transform=train_tf)
        return train, cls(str(root), split=val_split, download=download, transform=eval_tf)

    train, val = _open("CelebA", root / cls.base_folder, download, layout, how, make)
    names = [n for n in train.attr_names if n]
    index = _attribute_index(names, cfg.get("attribute", "Smiling"))
    for ds in (train, val):
        ds.target_transform = AttributeLabel(index)
    return Splits(
        train,
        val,
        channels=int(cfg.get("channels", 3)),
        image_size=int(cfg["image_size"]),
        num_classes=None if index is None else 2,
        eval_train=with_transform(train, eval_tf),
    )
