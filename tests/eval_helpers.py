"""Fixtures of the eval / embed / export tests (loaded with ``pytest_plugins``).

``digits_run`` is one short quickstart training on the real digits through the real ``dim-train``
console script, made once per test session and shared by every module that uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import run_cli

# One epoch of the quickstart (digits, basic32, DIM(L) + InfoNCE): ~25 s on 2 quiet CPU cores.
DIGITS_TRAIN = ["experiment=quickstart", "trainer.max_epochs=1"]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run dir: .hydra/config.yaml, checkpoints/last.ckpt, encoder.pt, metrics.json."""
    run = tmp_path_factory.mktemp("eval_runs") / "digits"
    proc = run_cli("dim-train", *DIGITS_TRAIN, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process torch on one thread (small tensors: more threads only add overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_line_error(proc) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), proc.stderr[-2000:]
    return lines[-1]


@pytest.fixture
def one_line_error():
    """A checker: the command failed without a traceback; returns its ``error: ...`` line."""
    return _one_line_error
