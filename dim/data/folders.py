"""Datasets that are folders of image files: any folder of your own, and Tiny ImageNet.

``data=folder`` never guesses whether sub-folders are classes: ``data.labels=none`` (default) reads
every image below ``data.root`` as unlabelled, ``data.labels=folder`` takes the first-level
sub-folder of each image as its class (and refuses images lying directly in the root).  Unreadable
images are skipped with a warning that counts them (``data.on_error=skip``) or stop the run with
the first one's path (``data.on_error=fail``).

With ``data.cache=true`` (the default) the images are decoded and resized once into a uint8 file
under ``data.cache_dir`` (:mod:`dim.data.cache`), and every later epoch and run reads arrays.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from dim.data.base import Splits, data_root, missing_data_error, register
from dim.data.cache import CachedImages, Geometry, decode_cache
from dim.data.transforms import split_transforms
from dim.errors import DimError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ON_ERROR = ("skip", "fail")
LABELS = ("none", "folder")


class UnreadableImageWarning(UserWarning):
    """Some image files could not be read and were skipped (``data.on_error=skip``)."""


def open_image(path: str | Path) -> Any:
    """Decode an image file fully (so a truncated file fails here, not inside a transform)."""
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    return img


class ImageList(Dataset):
    """``(transform(image), label)`` over a list of image files.

    With ``on_error="skip"`` an image that fails to decode is replaced by the next readable one
    (a warning names it once); with ``"fail"`` it raises a :class:`DimError` naming the file.
    """

    def __init__(
        self,
        paths: list[str],
        labels: list[int],
        transform: Any = None,
        on_error: str = "fail",
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths, self.labels = list(paths), torch.as_tensor(labels, dtype=torch.int64)
        self.transform, self.on_error = transform, on_error
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for k in range(len(self.paths)):
            j = (index + k) % len(self.paths)
            try:
                img = open_image(self.paths[j])
            except (OSError, ValueError, SyntaxError) as err:  # PIL's decode errors
                if self.on_error != "skip":
                    raise DimError(
                        f"cannot read image {self.paths[j]} ({err}); remove it or set "
                        "data.on_error=skip"
                    ) from None
                if self.paths[j] not in self._warned:
                    self._warned.add(self.paths[j])
                    warnings.warn(
                        f"skipping unreadable image {self.paths[j]} ({err})",
                        UnreadableImageWarning,
                        stacklevel=2,
                    )
                continue
            if self.transform is not None:
                img = self.transform(img)
            return img, int(self.labels[j])
        raise DimError("no image of this dataset can be read")


def find_images(root: Path) -> list[str]:
    """Every image file below ``root`` (recursive, following links, hidden entries skipped).

    Paths are strings: ``pathlib`` objects cost seconds for a folder of 100k images."""
    found = []
    for dirpath, dirnames, filenames in os.walk(str(root), followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def check_readable(paths: list[str], on_error: str, where: Path) -> list[str]:
    """Drop files whose image header cannot be parsed, warning with their count (or fail)."""
    from PIL import Image

    good, bad = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.size  # noqa: B018 - parsing the header is the check
            good.append(p)
        except (OSError, ValueError, SyntaxError) as err:
            bad.append((p, err))
    report_unreadable(bad, len(paths), where, on_error)
    return good


def report_unreadable(bad: list[tuple[Any, Any]], total: int, where: Path, on_error: str) -> None:
    """Warn with the count of unreadable images ``(path, why)`` (or fail naming the first)."""
    if bad and on_error == "fail":
        path, why = bad[0]
        raise DimError(
            f"{len(bad)} unreadable image(s) under {where}, e.g. {path} ({why}); remove them or "
            "set data.on_error=skip"
        )
    if bad:
        warnings.warn(
            f"skipping {len(bad)} unreadable image(s) of {total} under {where} (e.g. {bad[0][0]})",
            UnreadableImageWarning,
            stacklevel=3,
        )


def _labelled_by_folder(root: Path, paths: list[str], classes: list[str] | None):
    prefix = len(os.path.join(str(root), ""))  # find_images' paths all start with it
    top = [p[prefix:].split(os.sep) for p in paths]
    loose = [os.path.basename(p) for p, parts in zip(paths, top) if len(parts) < 2]
    if loose:
        raise DimError(
            f"data.labels=folder needs one sub-folder per class under {root}, but {len(loose)} "
            f"image(s) lie directly in it (e.g. {loose[0]}); move them or use data.labels=none"
        )
    names = sorted({parts[0] for parts in top})
    if classes is None:
        classes = names
        if len(classes) < 2:
            raise DimError(
                f"data.labels=folder found a single class folder under {root} ('{classes[0]}'); "
                "a class label needs at least two, use data.labels=none for unlabelled images"
            )
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DimError(f"{root} has class folders absent from the training root: {unknown}")
    index = {c: i for i, c in enumerate(classes)}
    return [index[parts[0]] for parts in top], classes


def _scan(root: Path, cfg: dict[str, Any], classes: list[str] | None = None):
    """(paths, labels, classes) below ``root``; headers checked unless the cache decodes them."""
    if not root.is_dir():
        raise DimError(
            f"data.root: no such folder {root} (a relative data.root is taken under "
            f"data.data_dir={data_root(cfg)}; give an absolute path)"
        )
    paths = find_images(root)
    if not paths:
        raise DimError(f"no images ({', '.join(IMG_EXTENSIONS)}) found below {root}")
    if cfg.get("check_images", True) and not cfg.get("cache", True):
        paths = check_readable(paths, str(cfg.get("on_error", "skip")), root)
        if not paths:
            raise DimError(f"none of the images below {root} can be read")
    if str(cfg.get("labels", "none")) == "folder":
        labels, classes = _labelled_by_folder(root, paths, classes)
    else:
        labels = [-1] * len(paths)
    return paths, labels, classes


@register("folder")
def folder(cfg: dict[str, Any]) -> Splits:
    """Any folder of images (recursive); see the module docstring for labels and errors."""
    if not cfg.get("root"):
        raise DimError("data=folder needs data.root=<folder of images>")
    labels_mode, on_error = str(cfg.get("labels", "none")), str(cfg.get("on_error", "skip"))
    if labels_mode not in LABELS:
        raise DimError(f"data.labels must be none or folder, got '{labels_mode}'")
    if on_error not in ON_ERROR:
        raise DimError(f"data.on_error must be skip or fail, got '{on_error}'")
    cfg = {"image_size": 64, **cfg}
    cfg["resize"] = cfg.get("resize") or cfg["image_size"]  # any image size in, image_size out
    root = data_root(cfg) / Path(str(cfg["root"])).expanduser()
    paths, labels, classes = _scan(root, cfg)
    if cfg.get("val_root"):
        val_root = data_root(cfg) / Path(str(cfg["val_root"])).expanduser()
        val_paths, val_labels, _ = _scan(val_root, cfg, classes)
        train_idx = list(range(len(paths)))
    else:
        fraction = float(cfg.get("val_fraction", 0.1))
        if not 0 < fraction < 1:
            raise DimError(f"data.val_fraction must be in (0, 1), got {fraction}")
        g = torch.Generator().manual_seed(int(cfg.get("split_seed", 0)))
        perm = torch.randperm(len(paths), generator=g).tolist()
        n_val = max(1, round(fraction * len(paths)))
        if n_val >= len(paths):
            raise DimError(f"{root} has {len(paths)} image(s): too few to split off validation")
        val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
        val_paths, val_labels = [paths[i] for i in val_idx], [labels[i] for i in val_idx]
    train_paths, train_labels = [paths[i] for i in train_idx], [labels[i] for i in train_idx]
    if cfg.get("cache", True):
        roots = [root, val_root] if cfg.get("val_root") else [root]
        n_classes = len(classes) if classes else None
        train, val = (train_paths, train_labels), (val_paths, val_labels)
        return cached_splits(cfg, "folder", roots, train, val, n_classes)
    train_tf, eval_tf = split_transforms(cfg, "folder")
    return Splits(
        ImageList(train_paths, train_labels, train_tf, on_error),
        ImageList(val_paths, val_labels, eval_tf, on_error),
        channels=int(cfg.get("channels", 3)),
        image_size=int(cfg["image_size"]),
        num_classes=len(classes) if classes else None,
        eval_train=ImageList(train_paths, train_labels, eval_tf, on_error),
    )


def cache_dir(cfg: dict[str, Any]) -> Path:
    """``data.cache_dir``; for a config without one, ``$DIM_CACHE_DIR`` or ``~/.cache/dim``."""
    default = Path(os.environ.get("DIM_CACHE_DIR") or "~/.cache/dim") / "images"
    return Path(str(cfg.get("cache_dir") or default)).expanduser()


def cached_splits(
    cfg: dict[str, Any],
    name: str,
    roots: list[Path],
    train: tuple[list[str], list[int]],
    val: tuple[list[str], list[int]],
    num_classes: int | None,
) -> Splits:
    """The splits of a folder source over its decode cache (:mod:`dim.data.cache`): train rows
    first, then validation rows, of one uint8 file at ``data.resize`` (else ``image_size``)."""
    size = int(cfg["image_size"])
    geometry = Geometry(
        channels=int(cfg.get("channels", 3)),
        side=int(cfg.get("resize") or size),
        center_crop=int(cfg["center_crop"]) if cfg.get("center_crop") else None,
    )
    paths, labels = train[0] + val[0], train[1] + val[1]
    decoded = decode_cache(
        paths, roots, geometry, cache_dir(cfg), workers=int(cfg.get("num_workers") or 0)
    )
    report_unreadable(decoded.failed, len(paths), roots[0], str(cfg.get("on_error", "skip")))
    n_train = sum(1 for i in decoded.kept if i < len(train[0]))
    if n_train == 0 or n_train == len(decoded.kept):
        which = "training" if n_train == 0 else "validation"
        raise DimError(f"none of the {which} images under {', '.join(map(str, roots))} can be read")
    kept_paths = [paths[i] for i in decoded.kept]
    kept_labels = [labels[i] for i in decoded.kept]
    # the stored images went through center_crop and resize: the transforms only crop to size
    train_tf, eval_tf = split_transforms({**cfg, "center_crop": None, "resize": None}, name)

    def rows(start: int, stop: int, transform: Any) -> CachedImages:
        return CachedImages(
            decoded.file, start, stop, kept_labels[start:stop], kept_paths[start:stop], transform
        )

    n = len(decoded.kept)
    return Splits(
        rows(0, n_train, train_tf),
        rows(n_train, n, eval_tf),
        channels=geometry.channels,
        image_size=size,
        num_classes=num_classes,
        eval_train=rows(0, n_train, eval_tf),
    )


TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_LAYOUT = (
    "tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
    "val/val_annotations.txt}"
)


def _tiny_complete(base: Path) -> bool:
    return (
        (base / "wnids.txt").is_file()
        and (base / "train").is_dir()
        and (base / "val" / "val_annotations.txt").is_file()
    )


def _tiny_files(base: Path) -> tuple[list[str], list[int], list[str], list[int], int]:
    wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}  # sorted wnids: ImageFolder's class order
    train_paths, train_labels = [], []
    for w in wnids:
        images = find_images(base / "train" / w)
        if not images:
            raise DimError(f"Tiny ImageNet under {base} is incomplete: no images in train/{w}")
        train_paths += images
        train_labels += [index[w]] * len(images)
    val_paths, val_labels = [], []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DimError(f"{base}/val/val_annotations.txt: unexpected line '{line.strip()}'")
        path = base / "val" / "images" / fields[0]
        if not path.is_file():
            raise DimError(f"Tiny ImageNet under {base} is incomplete: {path} is missing")
        val_paths.append(str(path))
        val_labels.append(index[fields[1]])
    return train_paths, train_labels, val_paths, val_labels, len(wnids)


@register("tiny_imagenet")
def tiny_imagenet(cfg: dict[str, Any]) -> Splits:
    """Tiny ImageNet: 100k train / 10k val 64x64 images of 200 classes (labels of val from
    ``val/val_annotations.txt``; the unlabelled test split is not used)."""
    cfg = {"image_size": 64, **cfg}
    root, download = data_root(cfg), bool(cfg.get("download", True))
    base = root / "tiny-imagenet-200"
    how = f"download {TINY_URL} and unzip it into {root}"
    if not _tiny_complete(base) and download:
        from torchvision.datasets import utils as tv_utils

        try:
            tv_utils.download_and_extract_archive(TINY_URL, str(root), md5=TINY_MD5)
        except (RuntimeError, OSError) as err:
            raise missing_data_error(
                "Tiny ImageNet", root, err, layout=TINY_LAYOUT, how=how, download=True
            ) from None
    if not _tiny_complete(base):
        raise missing_data_error(
            "Tiny ImageNet", root, layout=TINY_LAYOUT, how=how, download=download
        )
    train_paths, train_labels, val_paths, val_labels, n_classes = _tiny_files(base)
    on_error = str(cfg.get("on_error", "fail"))
    if cfg.get("cache", True):  # decoded once (dim/data/cache.py), as data=folder
        cfg = {"on_error": on_error, **cfg}
        train, val = (train_paths, train_labels), (val_paths, val_labels)
        roots = [base / "train", base / "val"]
        return cached_splits(cfg, "tiny_imagenet", roots, train, val, n_classes)
    train_tf, eval_tf = split_transforms(cfg, "tiny_imagenet")
    return Splits(
        ImageList(train_paths, train_labels, train_tf, on_error),
        ImageList(val_paths, val_labels, eval_tf, on_error),
        channels=int(cfg.get("channels", 3)),
        image_size=int(cfg["image_size"]),
        num_classes=n_classes,
        eval_train=ImageList(train_paths, train_labels, eval_tf, on_error),
    )
