"""Decode once: the images of a folder dataset as one uint8 array at the training resolution.

Decoding a PNG or JPEG and resizing it costs more than a small encoder's step, so a folder read
file by file every epoch trains several times slower than the same images held as arrays.  With
``data.cache=true`` (the default) the first run decodes every image once, through the geometry of
the data config (``channels``, ``center_crop``, ``resize``: the steps before the crop to
``image_size``), into a ``(N, C, S, S)`` uint8 ``.npy`` file under ``data.cache_dir``, ``S`` the
resized side (``data.resize``, else ``image_size``).  Every later run memory-maps that file: the
training crops, flips, views and normalisation then run on arrays, as for CIFAR or MNIST, and
``data_on_device=true`` works; a dataset larger than memory is paged in from the file.

The cache is keyed by the ordered file list (the training files, then the validation files),
each file's size and modification time, and the geometry: an added, removed, replaced or touched
file rebuilds it.  A build writes temporary files and renames them into place, under a lock, so a
half-built or concurrently built cache is never read.  Images that fail to decode are counted and
skipped (``data.on_error=skip``) or stop the run naming the first (``fail``), as without a cache.

The stored image is the center ``S x S`` square of the resized image: for square images, and for
any image when ``resize`` is ``image_size`` (the default), what the training and evaluation
transforms see is exactly what they see without the cache; a random crop of a non-square image
moves within that square only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dim.errors import DimError

#: bump when the stored format or the geometry's meaning changes (old caches are then rebuilt)
VERSION = 1
CHUNK = 256  # images per work item of a build


@dataclass(frozen=True)
class Geometry:
    """What a cached image is: ``channels`` x ``side`` x ``side`` after ``center_crop`` and the
    resize of the shorter side to ``side``."""

    channels: int
    side: int
    center_crop: int | None = None

    def transform(self) -> Any:
        """PIL image -> PIL image of the stored geometry (the same torchvision steps as
        :func:`dim.data.transforms.image_transform`, then the center square)."""
        from torchvision import transforms as T

        from dim.data.transforms import ToMode

        steps: list[Any] = [ToMode(self.channels)]
        if self.center_crop:
            steps.append(T.CenterCrop(self.center_crop))
        steps += [T.Resize(self.side, antialias=True), T.CenterCrop(self.side)]
        return T.Compose(steps)


@dataclass
class Decoded:
    """A built cache: ``file`` holds rows for ``paths[kept[i]]``; ``failed`` the others."""

    file: Path
    kept: list[int]
    failed: list[tuple[str, str]]  # (path, why)
    built_s: float | None  # seconds the build took; None when an existing cache was used


def stamps_digest(paths: list[str], geometry: Geometry) -> str:
    """sha256 of the ordered files' (path, size, mtime) and the geometry: the cache's validity."""
    h = hashlib.sha256(json.dumps([VERSION, geometry.__dict__]).encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as err:
            raise DimError(f"cannot read {p} ({err.strerror}); is the folder changing?") from None
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_name(roots: list[Path], geometry: Geometry) -> str:
    """A readable, stable file name for the cache of ``roots`` at ``geometry``."""
    key = json.dumps([[str(r.resolve()) for r in roots], geometry.__dict__])
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{roots[0].resolve().name or 'root'}-{geometry.channels}x{geometry.side}-{tag}"


# ---- the build ------------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _init_worker(file: str, geometry: Geometry) -> None:
    _worker["array"] = np.load(file, mmap_mode="r+")
    _worker["transform"] = geometry.transform()


def _decode_chunk(job: tuple[int, list[str]]) -> tuple[int, list[tuple[int, str]]]:
    """Decode ``paths`` into rows ``start...`` of the array; return the failures' (row, why)."""
    from dim.data.folders import open_image

    start, paths = job
    array, transform = _worker["array"], _worker["transform"]
    failed = []
    for k, path in enumerate(paths):
        try:
            img = np.asarray(transform(open_image(path)), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as err:  # PIL's decode errors
            failed.append((start + k, f"{type(err).__name__}: {err}"))
            continue
        array[start + k] = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return len(paths), failed


def _pool(workers: int, file: Path, geometry: Geometry) -> Any:
    # fork: the workers inherit the imported modules (spawn would import torch again in each)
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ctx.Pool(workers, initializer=_init_worker, initargs=(str(file), geometry))


def _decode_all(
    file: Path, paths: list[str], geometry: Geometry, workers: int, what: str
) -> list[tuple[int, str]]:
    shape = (len(paths), geometry.channels, geometry.side, geometry.side)
    np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=shape).flush()
    jobs = [(s, paths[s : s + CHUNK]) for s in range(0, len(paths), CHUNK)]
    failed: list[tuple[int, str]] = []
    with Progress(len(paths), f"decoding {what} once into the image cache") as bar:
        if workers > 0 and len(jobs) > 1:
            with _pool(min(workers, len(jobs)), file, geometry) as pool:
                for n, bad in pool.imap_unordered(_decode_chunk, jobs):
                    failed += bad
                    bar.advance(n)
        else:
            _init_worker(str(file), geometry)
            try:
                for job in jobs:
                    n, bad = _decode_chunk(job)
                    failed += bad
                    bar.advance(n)
            finally:
                _worker["array"].flush()
                _worker.clear()
    return sorted(failed)


def _compact(src: Path, dst: Path, kept: list[int]) -> None:
    """Copy the decodable rows of ``src`` into a new ``dst`` (only when some image failed)."""
    rows = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(
        dst, mode="w+", dtype=np.uint8, shape=(len(kept),) + rows.shape[1:]
    )
    for s in range(0, len(kept), 4096):
        out[s : s + 4096] = rows[kept[s : s + 4096]]
    out.flush()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (processes building one cache wait for each other)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic renames alone keep readers safe
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_meta(meta: Path, digest: str, n: int) -> dict[str, Any] | None:
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if info.get("version") != VERSION or info.get("digest") != digest or info.get("count") != n:
        return None
    file = meta.parent / str(info.get("file"))
    if not file.is_file():
        return None
    return info


def decode_cache(
    paths: list[str],
    roots: list[Path],
    geometry: Geometry,
    cache_dir: Path,
    workers: int = 0,
) -> Decoded:
    """The cache of ``paths`` (in this order) at ``geometry``: reused when valid, else built."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DimError(
            f"data.cache_dir: cannot create {cache_dir} ({err.strerror}); set data.cache_dir to a "
            "writable folder or data.cache=false"
        ) from None
    name = cache_name(roots, geometry)
    meta = cache_dir / f"{name}.json"
    digest = stamps_digest(paths, geometry)
    with _locked(cache_dir / f"{name}.lock"):
        info = _read_meta(meta, digest, len(paths))
        if info is None:
            info = _build(paths, roots, geometry, cache_dir, name, digest, workers)
            built: float | None = info["built_s"]
        else:
            built = None
    failed_rows = {int(i): why for i, why in info["failed"]}
    kept = [i for i in range(len(paths)) if i not in failed_rows]
    failed = [(paths[i], why) for i, why in sorted(failed_rows.items())]
    return Decoded(cache_dir / info["file"], kept, failed, built)


def _build(
    paths: list[str],
    roots: list[Path],
    geometry: Geometry,
    cache_dir: Path,
    name: str,
    digest: str,
    workers: int,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    tmp = cache_dir / f".{name}.{os.getpid()}.tmp.npy"
    final = cache_dir / f"{name}-{digest[:12]}.npy"
    old = _previous_file(cache_dir / f"{name}.json")
    try:
        failed = _decode_all(tmp, paths, geometry, workers, f"{len(paths)} images of {roots[0]}")
        if failed:
            bad = {i for i, _ in failed}
            compact = tmp.with_name(f".{name}.{os.getpid()}.compact.npy")
            _compact(tmp, compact, [i for i in range(len(paths)) if i not in bad])
            os.replace(compact, tmp)
        os.replace(tmp, final)
        info = {
            "version": VERSION, "digest": digest, "count": len(paths), "file": final.name,
            "geometry": geometry.__dict__, "roots": [str(r) for r in roots],
            "failed": [[i, why] for i, why in failed],
            "built_s": round(time.perf_counter() - t0, 2),
        }  # fmt: skip
        meta_tmp = cache_dir / f".{name}.{os.getpid()}.tmp.json"
        meta_tmp.write_text(json.dumps(info))
        os.replace(meta_tmp, cache_dir / f"{name}.json")  # the switch: readers see old or new
    except BaseException:
        for leftover in cache_dir.glob(f".{name}.{os.getpid()}.*"):
            leftover.unlink(missing_ok=True)
        raise
    if old is not None and old != final:
        old.unlink(missing_ok=True)  # the data of the previous file list
    return info


def _previous_file(meta: Path) -> Path | None:
    try:
        return meta.parent / str(json.loads(meta.read_text())["file"])
    except (OSError, ValueError, KeyError):
        return None


class Progress:
    """A bar with ETA while a cache builds: rich in a terminal, a line every 10 s otherwise."""

    def __init__(self, total: int, what: str, every_s: float = 10.0) -> None:
        self.total, self.what, self.every_s, self.done = total, what, every_s, 0
        self._rich: Any = None

    def __enter__(self) -> Progress:
        self.t0 = self.last = time.perf_counter()
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                transient=False,
            )  # fmt: skip
            self._rich.__enter__()
            self._task = self._rich.add_task(self.what, total=self.total)
        else:
            print(f"{self.what}: {self.total} images", file=sys.stderr, flush=True)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(
                f"  {self.done}/{self.total} ({100 * self.done // self.total}%), "
                f"{rate:.0f} img/s, ETA {int(eta) // 60}:{int(eta) % 60:02d}",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
        elif exc[0] is None:
            took = time.perf_counter() - self.t0
            print(
                f"  {self.done} images in {took:.1f} s ({self.done / max(took, 1e-9):.0f} img/s)",
                file=sys.stderr,
                flush=True,
            )


class CachedImages(Dataset):
    """``(transform(image), label)`` for rows ``start:stop`` of a cache file (a map-style
    dataset).  ``data`` (uint8 ``N, C, S, S``) and ``targets`` are what
    :func:`dim.data.device.materialize` takes, as from torchvision's CIFAR or MNIST; the file is
    opened in each process on first use (a DataLoader worker maps it rather than receiving a
    pickled copy).  ``resized``: the stored images already went through resize and center crop.
    """

    resized = True

    def __init__(
        self, file: Path, start: int, stop: int, labels: list[int], paths: list[str], transform
    ) -> None:
        if stop - start != len(labels):
            raise ValueError("rows and labels differ in length")
        self.file, self.start, self.stop = Path(file), start, stop
        self.targets = torch.as_tensor(labels, dtype=torch.int64)
        self.paths, self.transform = list(paths), transform
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:  # copy-on-write: writable for torch, nothing written back
            self._data = np.load(self.file, mmap_mode="c")[self.start : self.stop]
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        row = self.data[index]
        img = Image.fromarray(row[0] if row.shape[0] == 1 else row.transpose(1, 2, 0))
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])
