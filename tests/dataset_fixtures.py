"""Tiny datasets written in each dataset's real on-disk format, for the real loading code.

Each ``write_*`` function returns a :class:`Written`: the data root plus the checksums torchvision
must know for the generated files.  ``written.register(monkeypatch)`` puts them into torchvision's
md5 lists for the duration of one test, so production code keeps torchvision's integrity checks.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision import datasets

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


@dataclass
class Written:
    root: Path
    patches: list[tuple[Any, str, Any]] = field(default_factory=list)

    def register(self, monkeypatch) -> Path:
        """Register the generated files' checksums with torchvision (undone after the test)."""
        for target, name, value in self.patches:
            monkeypatch.setattr(target, name, value)
        return self.root


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save_image(path: Path, h: int, w: int, rng: np.random.Generator, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)


def write_cifar10(root: Path, n_per_batch: int = 8) -> Written:
    """``cifar-10-batches-py``: five train batches, a test batch and ``batches.meta`` (pickles)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n_per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    )
    cls = datasets.CIFAR10
    return Written(
        root,
        [
            (cls, "train_list", [[n, md5(folder / n)] for n in names[:5]]),
            (cls, "test_list", [[names[5], md5(folder / names[5])]]),
            (cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")}),
        ],
    )


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 8) -> Written:
    """``cifar-100-python``: ``train``, ``test`` (fine + coarse labels) and ``meta`` pickles."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        split = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, 100, n).tolist(),
            "coarse_labels": rng.integers(0, 20, n).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(split))
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    cls = datasets.CIFAR100
    return Written(
        root,
        [
            (cls, "train_list", [["train", md5(folder / "train")]]),
            (cls, "test_list", [["test", md5(folder / "test")]]),
            (cls, "meta", {**cls.meta, "md5": md5(folder / "meta")}),
        ],
    )


def write_stl10(root: Path, n_train: int = 6, n_unlabeled: int = 10, n_test: int = 6) -> Written:
    """``stl10_binary``: raw uint8 96x96 images (column-major) and 1-based uint8 labels."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(2)
    arrays = {
        "train_X.bin": rng.integers(0, 256, (n_train, 3, 96, 96), dtype=np.uint8),
        "train_y.bin": rng.integers(1, 11, n_train, dtype=np.uint8),
        "unlabeled_X.bin": rng.integers(0, 256, (n_unlabeled, 3, 96, 96), dtype=np.uint8),
        "test_X.bin": rng.integers(0, 256, (n_test, 3, 96, 96), dtype=np.uint8),
        "test_y.bin": rng.integers(1, 11, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        (folder / name).write_bytes(array.tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    cls = datasets.STL10
    return Written(
        root,
        [
            (cls, "train_list", [[n, md5(folder / n)] for n in list(arrays)[:3]]),
            (cls, "test_list", [[n, md5(folder / n)] for n in list(arrays)[3:]]),
        ],
    )


def _idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format): magic (0x08 = uint8, number of dims), big-endian sizes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 12, n_test: int = 6) -> Written:
    """``MNIST/raw``: the four uncompressed IDX files torchvision reads."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = _rng(3)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return Written(root)  # torchvision checks that the raw files exist (no md5 for them)


def write_fashion_mnist(
    root: Path, n_train: int = 40, n_test: int = 10, gz: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``FashionMNIST/raw``: the four IDX files, gzipped as the Debian package ships them (with
    other md5 sums than torchvision's list) or unpacked.  Returns the train images and labels."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = _rng(5)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10
        out[prefix] = images, labels
        for name, array in (
            (f"{prefix}-images-idx3-ubyte", images),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            _idx(raw / name, array)
            if gz:
                path = raw / name
                path.with_name(name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
    return out["train"]


def write_celeba(root: Path, n: int = 9) -> Written:
    """``celeba``: 178x218 aligned-face JPEGs and the five annotation files (md5-checked)."""
    base = root / "celeba"
    rng = _rng(4)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name in names:
        _save_image(base / "img_align_celeba" / name, 218, 178, rng)
    partition = [0] * (n - 2 * (n // 3)) + [1] * (n // 3) + [2] * (n // 3)
    attrs = rng.choice([-1, 1], (n, len(CELEBA_ATTRIBUTES)))
    files = {
        "list_eval_partition.txt": [f"{f} {p}" for f, p in zip(names, partition)],
        "identity_CelebA.txt": [f"{f} {i % 3 + 1}" for i, f in enumerate(names)],
        "list_bbox_celeba.txt": [str(n), "image_id x_1 y_1 width height"]
        + [f"{f}    95  71 226 313" for f in names],
        "list_landmarks_align_celeba.txt": [
            str(n),
            "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
            "rightmouth_x rightmouth_y",
        ]
        + [f"{f} 69 109 106 113 77 142 73 152 108 154" for f in names],
        "list_attr_celeba.txt": [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
        + [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(names, attrs)],
    }
    for name, lines in files.items():
        (base / name).write_text("\n".join(lines) + "\n")
    file_list = [
        (fid, md5(base / name) if (base / name).exists() else digest, name)
        for fid, digest, name in datasets.CelebA.file_list
    ]
    return Written(root, [(datasets.CelebA, "file_list", file_list)])


def write_tiny_imagenet(
    root: Path, n_classes: int = 4, n_train: int = 3, n_val: int = 2, n_test: int = 2
) -> Written:
    """``tiny-imagenet-200`` in the standard layout (JPEGs, wnids.txt, val_annotations.txt)."""
    base = root / "tiny-imagenet-200"
    rng = _rng(5)
    wnids = [f"n{1443537 + 17 * i:08d}" for i in range(n_classes)]
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    for w in wnids:
        for i in range(n_train):
            _save_image(base / "train" / w / "images" / f"{w}_{i}.JPEG", 64, 64, rng)
        boxes = "".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(n_train))
        (base / "train" / w / f"{w}_boxes.txt").write_text(boxes)
    lines = []
    for i in range(n_val * n_classes):
        _save_image(base / "val" / "images" / f"val_{i}.JPEG", 64, 64, rng)
        lines.append(f"val_{i}.JPEG\t{wnids[i % n_classes]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    for i in range(n_test):
        _save_image(base / "test" / "images" / f"test_{i}.JPEG", 64, 64, rng)
    return Written(root)


def write_image_folder(root: Path, classes: dict[str, int], size=(40, 30), nested=True) -> Path:
    """``root/<class>/[sub/]img_<i>.{png,jpg}`` with mixed sizes and modes."""
    rng = _rng(6)
    for c, count in classes.items():
        for i in range(count):
            sub = "deeper/" if nested and i % 2 else ""
            ext, mode = (".png", "L") if i % 3 == 0 else (".jpg", "RGB")
            _save_image(root / c / f"{sub}img_{i}{ext}", size[1] + i, size[0], rng, mode)
    return root
