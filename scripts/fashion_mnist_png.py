"""Write Fashion-MNIST's IDX files out as a folder of PNG images, one sub-folder per class.

What a user's own labelled images look like to ``data=folder data.labels=folder``; the decode
cache benchmark (``scripts/benchmark.py --folder``) trains on it beside the IDX arrays.

    python scripts/fashion_mnist_png.py data/FashionMNIST/raw fmnist_png
    # -> fmnist_png/train/<class>/<index>.png (60k) and fmnist_png/test/<class>/<index>.png (10k)

The raw folder holds the four IDX files, gzipped (``.gz``, as the Debian package
``dataset-fashion-mnist`` ships them, docs/datasets.md#fashion-mnist-offline) or unpacked.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip
SPLITS = {"train": "train", "test": "t10k"}


def read_idx(raw: Path, stem: str) -> np.ndarray:
    """``<stem>`` or ``<stem>.gz`` under ``raw`` as a uint8 array of its declared shape."""
    for path in (raw / stem, raw / f"{stem}.gz"):
        if path.is_file():
            data = path.read_bytes()
            data = gzip.decompress(data) if path.suffix == ".gz" else data
            ndim = data[3]
            shape = tuple(int(d) for d in np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4"))
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    raise SystemExit(f"error: neither {stem} nor {stem}.gz in {raw}")


def write_split(raw: Path, out: Path, split: str) -> int:
    prefix = SPLITS[split]
    images = read_idx(raw, f"{prefix}-images-idx3-ubyte")
    labels = read_idx(raw, f"{prefix}-labels-idx1-ubyte")
    for name in CLASSES:
        (out / split / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image, mode="L").save(out / split / CLASSES[label] / f"{i:05d}.png")
    return len(images)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw", type=Path, help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("out", type=Path, help="where train/ and test/ are written (must not exist)")
    args = p.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; give a new folder")
    for split in SPLITS:
        n = write_split(args.raw, args.out, split)
        print(f"{n} images -> {args.out / split}", file=sys.stderr)


if __name__ == "__main__":
    main()
