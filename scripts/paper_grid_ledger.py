"""The paper grid's ledger: one JSON file with the record of every finished step.

A ledger belongs to one grid (dataset, split and shared settings); ``paper_grid.py`` refuses one
of other settings, holds a kernel lock on it while it runs (a second grid on the same file would
rewrite it without the first one's records) and rewrites it atomically after every step.  A grid
split across processes or machines gives each part its own ``--ledger`` and merges them back
(``--merge``): records are keyed by (cell, seed, step), and a step the target already has is kept
as it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
from pathlib import Path
from typing import IO, Any

KEYS = ("data", "split", "settings")  # what makes two ledgers the same grid


def grid_of(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in KEYS}


def key(record: dict[str, Any]) -> tuple[str, int, str]:
    """What identifies a step: one (cell, seed, step) per ledger."""
    return record["cell"], record["seed"], record["step"]


class Ledger:
    """The JSON record of every finished step, rewritten (atomically) after each one."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self._lock: IO[str] | None = None
        self._load()

    def _load(self) -> None:
        path, meta = self.path, self.meta
        if path.is_file():
            self.doc = json.loads(path.read_text())
            old, new = grid_of(self.doc["meta"]), grid_of(meta)
            if old != new:
                sys.exit(
                    f"error: {path} holds a grid with other settings ({json.dumps(old)}); give "
                    "another --ledger or the same --data/--split/--epochs/--set/--eval-budget"
                )
        else:
            self.doc = {"meta": meta, "records": []}

    def hold(self) -> None:
        """One grid per ledger: each rewrites the whole file after every step, so a second
        would silently drop the first one's records.  The kernel lock ends with the process."""
        lock = self.path.with_name(self.path.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        held = open(lock, "a+")  # kept open (and locked) until release() or the process's end
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.seek(0)
            holder = held.read().strip() or "another process"
            held.close()
            sys.exit(
                f"error: {self.path} is being written by {holder}; wait for it to end (the same "
                "command then skips what it did) or give another --runs / --ledger"
            )
        self._lock = held
        self._load()  # as the last holder left it (it may have written since it was read)
        held.truncate(0)
        held.write(f"paper_grid.py pid {os.getpid()} on {platform.node()}\n")
        held.flush()

    def release(self) -> None:
        """Give the lock back (the process's end does too; this is for callers that go on)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def find(self, cell: str, seed: int, step: str) -> dict[str, Any] | None:
        for rec in self.doc["records"]:
            if key(rec) == (cell, seed, step):
                return rec
        return None

    def add(self, record: dict[str, Any]) -> None:
        self.add_all([record])

    def add_all(self, records: list[dict[str, Any]]) -> None:
        self.doc["records"].extend(records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
        os.replace(tmp, self.path)

    def merge(self, other: Path) -> tuple[int, int]:
        """Add ``other``'s records that this ledger lacks; (added, already here).

        Call with the lock held.  ``other`` must be a ledger of the same grid; its lock is not
        taken, so merge a part after its grid has ended (a running one may still add steps).
        """
        if not other.is_file():
            sys.exit(f"error: --merge {other}: no such ledger")
        try:
            doc = json.loads(other.read_text())
            theirs = grid_of(doc["meta"])
            records = [(key(r), r) for r in doc["records"]]
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"error: --merge {other}: not a paper_grid ledger ({e})")
        if theirs != grid_of(self.doc["meta"]):
            sys.exit(
                f"error: --merge {other}: a grid with other settings ({json.dumps(theirs)}); "
                "only parts of the same grid (--data/--split/--epochs/--set/--eval-budget) merge"
            )
        have = {key(r) for r in self.doc["records"]}
        new = [r for k, r in records if k not in have]
        self.add_all(new)
        return len(new), len(records) - len(new)
