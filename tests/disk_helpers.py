"""A folder whose filesystem can be filled up on demand (``full_disk`` fixture).

Where a small tmpfs can be mounted (root with CAP_SYS_ADMIN, as on the project's machines), the
folder *is* one: ``fill()`` writes a filler file until the kernel answers ENOSPC, ``free()``
deletes it, so every writer (torch's zip writer, TensorBoard's event thread, numpy, Hydra) meets
a real full disk.  Elsewhere the fall-back injects the fault: while full, every file opened for
writing under the folder (``open`` / ``io.open``, which torch, TensorBoard's gfile, numpy, pathlib
and Hydra all go through) raises ``OSError(ENOSPC)`` on write, as the kernel would
(``DIM_TEST_FAKE_ENOSPC=1`` selects it everywhere).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ENOSPC_TEXT = "No space left on device (ENOSPC)"


def _mount_tmpfs(path: Path, size: str, options: str = "") -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    opts = f"size={size}" + (f",{options}" if options else "")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    return proc.returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


class _FullFile:
    """A file opened for writing on the simulated full filesystem: writes fail with ENOSPC."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class FullDisk:
    """See the module docstring; ``real`` says which of the two it is."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, size: str = "256m") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # DIM_TEST_FAKE_ENOSPC=1: the fall-back even where a tmpfs could be mounted
        self.real = os.environ.get("DIM_TEST_FAKE_ENOSPC") != "1" and _mount_tmpfs(root, size)
        self.full = False
        self._filler = root / f".filler-{uuid.uuid4().hex}"
        if not self.real:
            real_open = builtins.open

            def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
                f = real_open(file, mode, *args, **kwargs)
                writing = any(c in mode for c in "wax+")
                if self.full and writing and isinstance(file, str | bytes | os.PathLike):
                    if Path(os.path.abspath(os.fsdecode(file))).is_relative_to(self.root):
                        return _FullFile(f)
                return f

            monkeypatch.setattr(builtins, "open", fake_open)
            monkeypatch.setattr(io, "open", fake_open)

    def fill(self) -> None:
        """From now on, writes under ``root`` fail with ENOSPC."""
        self.full = True
        if self.real:
            chunk = b"\0" * (1 << 20)
            fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, chunk)  # unbuffered: nothing is left to fail again on close
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
            finally:
                os.close(fd)

    def free(self) -> None:
        """Space again."""
        self.full = False
        if self.real:
            self._filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.real:
            _unmount(self.root)


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FullDisk]:
    disk = FullDisk(tmp_path / "disk", monkeypatch)
    try:
        yield disk
    finally:
        disk.close()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only filesystem (a read-only tmpfs holding an empty ``run`` folder);
    skipped where no tmpfs can be mounted: a read-only filesystem cannot be faked for every
    writer, and root ignores permission bits, so chmod would not make one."""
    path = tmp_path / "ro"
    path.mkdir()
    if not _mount_tmpfs(path, "1m"):
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN (here: not available)")
    try:
        (path / "run").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        _unmount(path)
