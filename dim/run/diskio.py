"""Writing outputs so that a full disk or an I/O error is one line naming the file, never a
traceback or a half-written file.

Every file dim writes itself (checkpoints, ``encoder.pt``, ``metrics.json``, ``eval.json``,
``mi.json``, ``dim-embed``'s ``.npz``) goes through :func:`atomic_write`: a temporary file in the
same folder, fsynced, then renamed over the target, so the previous version stays intact when the
write fails.  A failure becomes :class:`WriteError` (a :class:`~dim.errors.DimError` with exit
code 1), which the command-line entry points print as ``error: cannot write <path>: <cause>``.

TensorBoard writes its event files in a background thread; an error there is re-raised by the
next logging call as a bare ``OSError`` without a file name.  :func:`write_failure` names the
TensorBoard folder for those, and :func:`quiet_tensorboard_thread_errors` keeps that thread from
printing its own traceback (the error reaches the user once, as one line, from the main thread).
"""

from __future__ import annotations

import errno
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dim.errors import DimError

EXIT_WRITE_ERROR = 1  # not the user's input (2): the disk, the filesystem or the device
PARTIAL = ".tmp-"  # a file being written: .<name>.tmp-<pid>, removed on failure

# errno values that mean "the storage refused the write" (as opposed to a bug in the caller)
DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EIO,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EFBIG,
    errno.ENAMETOOLONG,
    errno.ESTALE,
}
# ... of those, the ones that mean "this path cannot be used" (the user's to fix: exit 2)
PATH_ERRNOS = {
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
}


def cause(err: BaseException) -> str:
    """``No space left on device (ENOSPC)`` for an OSError, else the error's first line."""
    if isinstance(err, OSError) and err.errno is not None:
        name = errno.errorcode.get(err.errno, str(err.errno))
        return f"{err.strerror or os.strerror(err.errno)} ({name})"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class WriteError(DimError):
    """Writing ``path`` failed (no space, quota, I/O error, read-only filesystem, ...)."""

    exit_code = EXIT_WRITE_ERROR

    def __init__(self, path: str | Path, err: BaseException | str, hint: str = "") -> None:
        self.path = Path(path)
        self.cause = err if isinstance(err, str) else cause(err)
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        return f"cannot write {self.path}: {self.cause}" + (f"; {self.hint}" if self.hint else "")

    def with_hint(self, hint: str) -> WriteError:
        """The same failure with advice on what to do (e.g. how to resume)."""
        return WriteError(self.path, self.cause, hint)


class _RecordingFile:
    """A file whose write errors are remembered: torch's zip writer turns the ``OSError`` of a
    failed write into a RuntimeError (``unexpected pos ...``) that no longer says why."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file, fsync, rename over ``path``.

    Raises :class:`WriteError` naming ``path`` when the storage refuses (the previous file stays
    as it was, the temporary file is removed); other errors of ``write`` propagate unchanged.
    """
    path = Path(path)
    tmp = partial_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as raw:
            f = _RecordingFile(raw)
            try:
                write(f)
                raw.flush()
            except RuntimeError:
                if f.error is None:
                    raise
                raise f.error from None
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(path, err) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only filesystem: nothing was created
            pass
    return path


def write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a storage ``OSError`` raised inside the block into :class:`WriteError` on ``path``
    (for writes that a library makes: TensorBoard's projector files, Hydra's config copy)."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        raise WriteError(err.filename or path, err) from None


def disk_error_in(exc: BaseException | None) -> BaseException | None:
    """The storage failure behind ``exc``: a :class:`WriteError` (it names its file) or else a
    storage ``OSError``, the earliest in the chain of errors raised while handling one another
    (Lightning's teardown after a failed write often fails on the same disk again)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    found: list[BaseException] = [e for e in chain if isinstance(e, WriteError)]
    found = found or [e for e in chain if isinstance(e, OSError) and e.errno in DISK_ERRNOS]
    return found[-1] if found else None


def _from_tensorboard(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return any("tensorboard" in f.filename.replace("\\", "/").split("/") for f in frames)


def write_failure(err: BaseException, out_dir: Path | None, hint: str = "") -> WriteError:
    """A :class:`WriteError` for a storage error found by :func:`disk_error_in`."""
    if isinstance(err, WriteError):
        return err.with_hint(hint) if hint and not err.hint else err
    path: Path | str | None = getattr(err, "filename", None)
    if path is None:
        if out_dir is not None and _from_tensorboard(err):
            path = Path(out_dir) / "tensorboard"
            path = f"TensorBoard events under {path}"
        else:
            path = out_dir if out_dir is not None else "an output file"
    return WriteError(path, err, hint)


def quiet_tensorboard_thread_errors() -> None:
    """Keep TensorBoard's event-writer thread from printing a traceback for a storage error:
    the same exception is raised again by the next logging call in the main thread, where the
    command turns it into one line.  Any other thread error is reported as before."""
    previous = threading.excepthook
    if getattr(previous, "_dim_quiet", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(
            args.exc_value, OSError
        ):
            return
        previous(args)

    hook._dim_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook
