"""One writer per run directory, and run directories that can be written at all.

A training run holds ``<run_dir>/.lock`` from before it writes anything until it exits.  The lock
is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFS v3+,
Lustre, GPFS, BeeGFS), naming its holder: pid, host, start time, the kernel's boot id and the
process start time (so a recycled pid is not mistaken for the holder).  While it is held, a
heartbeat thread touches the file every ``lease / 4`` seconds.

A lock is *stale*, and taken over with a note on stderr, when

- its holder ran on this host and that process is gone (also after SIGKILL: no clean-up needed),
  or the host has rebooted since;
- its holder ran on another host and the file has not been touched for longer than its lease
  (the holder's host, filesystem and this host's clocks are assumed to agree to well within the
  lease, as NTP keeps them on a cluster).

A stale lock is moved aside with ``rename`` before a new one is created, and the moved file is
checked to be the one judged stale, so two processes that find the same stale lock cannot both
end up holding the run.  Only the rank-0 process of a job takes the lock (``dim.cli.train``).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dim.errors import DimError
from dim.run.diskio import PATH_ERRNOS, WriteError, cause

LOCK_NAME = ".lock"
LEASE_S = 120.0  # another host's lock is stale after this long without a heartbeat
_GARBLED_GRACE_S = 10.0  # an unreadable lock younger than this is probably being written


@dataclass
class Holder:
    """What a lock file says about the process that holds the run dir."""

    pid: int
    host: str
    started: str  # ISO time, the holder's clock
    token: str  # unique per acquisition
    lease_s: float
    command: str = "dim-train"
    boot_id: str | None = None
    pid_start: int | None = None  # the process's start time in clock ticks after boot (Linux)

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid} on host {self.host}, started {self.started})"


class RunDirBusy(DimError):
    """Another live process holds the run dir (exit code 2)."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name in (...) may hold spaces
    return int(fields[19]) if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return True


def stale_reason(holder: Holder, age_s: float) -> str | None:
    """Why the lock of ``holder``, last touched ``age_s`` seconds ago, no longer holds; None if
    it does."""
    if holder.host == socket.gethostname():
        boot = _boot_id()
        if holder.boot_id and boot and holder.boot_id != boot:
            return "the host has rebooted since"
        if not _alive(holder.pid):
            return "its process is gone"
        start = _pid_start(holder.pid)
        if holder.pid_start is not None and start is not None and start != holder.pid_start:
            return "its process is gone (the pid now belongs to another process)"
        return None
    if age_s > holder.lease_s:
        return f"no heartbeat for {age_s:.0f} s (lease {holder.lease_s:.0f} s)"
    return None


def read_holder(path: Path) -> Holder | None:
    """The lock's holder, or None when the file is unreadable or not a lock."""
    try:
        doc = json.loads(path.read_text())
        return Holder(**doc)
    except (OSError, ValueError, TypeError):
        return None


def first_file_on_path(path: Path) -> Path | None:
    """The first component of ``path`` that exists and is not a directory."""
    for parent in (*reversed(path.parents), path):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def unusable(path: Path, err: OSError, what: str) -> DimError:
    """One line for a directory that cannot be created or written: a :class:`DimError` (exit 2)
    for a path the user must change, a :class:`WriteError` (exit 1) for a full or failing disk."""
    blocker = first_file_on_path(path)
    if blocker is not None:
        return DimError(f"cannot use {what} {path}: {blocker} is a file, not a directory")
    if err.errno not in PATH_ERRNOS:
        return WriteError(path, err)
    return DimError(f"cannot write to {what} {path}: {cause(err)}")


def check_writable_dir(path: Path, what: str = "output folder", create: bool = True) -> None:
    """Check that files can be created in ``path`` (a read-only filesystem, no permission, a file
    in the way are one line), before any work starts.  ``create``: make the folder if needed;
    otherwise probe its nearest existing ancestor and leave nothing behind."""
    path = Path(path).expanduser()
    target = path
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        else:
            while not target.exists() and target != target.parent:
                target = target.parent
            if not target.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
        probe = target / f".write-test-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise unusable(path, err, what) from None


class RunLock:
    """The lock of one run dir (see the module docstring)."""

    def __init__(self, run_dir: str | Path, lease_s: float = LEASE_S, command: str = "dim-train"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.lease_s = float(lease_s)
        self.command = command
        self.holder: Holder | None = None
        self.lost: str | None = None  # set by the heartbeat when another process took the run
        self.created_dir = False
        self.created: list[Path] = []
        # a training step has run: what the run wrote since (TensorBoard curves) is a result, kept
        # however the run ends (set by dim.run.reliability.LockWatch)
        self.trained = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- acquire ----
    def acquire(self) -> RunLock:
        """Take the lock; :class:`RunDirBusy` names the live holder; a stale lock is taken over
        (one ``note:`` line on stderr); a directory that cannot hold it is a one-line error."""
        # the run dir and the folders above it that do not exist yet, deepest first: removed
        # again on release while empty (a refused command leaves no folder behind)
        self.created = [
            folder for folder in (self.run_dir, *self.run_dir.parents) if not folder.exists()
        ]
        self.created_dir = bool(self.created)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise unusable(self.run_dir, err, "run dir") from None
        me = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
            lease_s=self.lease_s,
            command=self.command,
            boot_id=_boot_id(),
            pid_start=_pid_start(os.getpid()),
        )
        for _ in range(50):
            if self._create(me):
                self.holder = me
                self._start_heartbeat()
                return self
            theirs = read_holder(self.path)
            age = self._age()
            if theirs is None:
                if age is not None and age < _GARBLED_GRACE_S:
                    time.sleep(0.1)  # being written by its holder right now
                    continue
                why = "it is unreadable"
            else:
                reason = stale_reason(theirs, age if age is not None else 0.0)
                if reason is None:
                    raise RunDirBusy(
                        f"run dir {self.run_dir} is in use by {theirs.describe()}: one writer per "
                        f"run; wait for it to end, or stop it first (its lock: {self.path})"
                    )
                why = reason
            if self._break(theirs):
                who = theirs.describe() if theirs else "an unknown process"
                print(f"note: took over the stale lock of {who}: {why}", file=sys.stderr)
        raise RunDirBusy(f"run dir {self.run_dir}: could not take its lock {self.path}")

    def _create(self, me: Holder) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as err:
            raise unusable(self.run_dir, err, "run dir") from None
        try:
            os.write(fd, (json.dumps(asdict(me), indent=1) + "\n").encode())
            os.fsync(fd)
        except OSError as err:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise unusable(self.run_dir, err, "run dir") from None
        os.close(fd)
        return True

    def _age(self) -> float | None:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def _break(self, stale: Holder | None) -> bool:
        """Move the stale lock aside; False when another process got there first."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another process moved it; try to create ours
        moved = read_holder(aside)
        if moved is not None and (stale is None or moved.token != stale.token):
            # Between reading and renaming, another process replaced the stale lock with its
            # own live one: put it back (link fails if yet another lock exists meanwhile).
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    # ---- heartbeat and release ----
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="dim-run-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            if not self.still_mine():
                theirs = read_holder(self.path)
                self.lost = theirs.describe() if theirs else "nobody (the lock file is gone)"
                print(
                    f"warning: the lock of run dir {self.run_dir} now names {self.lost}; this "
                    "process no longer holds the run",
                    file=sys.stderr,
                    flush=True,
                )
                return
            try:
                os.utime(self.path)
            except OSError:
                pass  # a transient filesystem error: the next beat tries again

    def still_mine(self) -> bool:
        theirs = read_holder(self.path)
        return self.holder is not None and theirs is not None and theirs.token == self.holder.token

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours (and the run dir and the
        folders above it that this lock created, while nothing else was written there)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if self.holder is not None and self.still_mine():
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
        self.holder = None
        for folder in self.created:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


# ---- the locks this process holds (the CLI takes one early and releases it at exit) ----
_HELD: dict[Path, RunLock] = {}


def lock_run_dir(run_dir: str | Path, command: str = "dim-train", **kw: Any) -> RunLock:
    """Hold ``run_dir`` for this process (a no-op when it already does)."""
    key = Path(run_dir).resolve()
    if key not in _HELD:
        _HELD[key] = RunLock(key, command=command, **kw).acquire()
    return _HELD[key]


def release_run_dir(run_dir: str | Path) -> None:
    lock = _HELD.pop(Path(run_dir).resolve(), None)
    if lock is not None:
        lock.release()


def release_all() -> None:
    for key in list(_HELD):
        release_run_dir(key)


def held(run_dir: str | Path) -> RunLock | None:
    return _HELD.get(Path(run_dir).resolve())


atexit.register(release_all)  # also on sys.exit after a signal; SIGKILL leaves a stale lock
