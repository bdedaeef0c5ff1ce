"""Shared helpers: run the real console scripts, compose configs with Hydra's compose API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

BIN = Path(sys.executable).parent
# A configuration small enough to train a few steps in seconds on 2 CPU cores.
TINY = [
    "data=synthetic",
    "data.num_samples=64",
    "data.val_size=32",
    "data.batch_size=16",
    "model.mi_units=32",
    "model.prior_hidden=[32,16]",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "logger.histogram_every_n_steps=2",
]


def run_cli(cmd: str, *args: str, cwd: Path | None = None, timeout: int = 600):
    """Run an installed console script; returns the CompletedProcess (never raises on failure)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [str(BIN / cmd), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def in_process(monkeypatch, capsys):
    """Run a console script's ``main`` in this process: ``(exit code, stdout, stderr)``.

    For bad-input cases, where a subprocess adds nothing but start-up time."""

    def run(main, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["dim", *args])
        code = 0
        try:
            main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def compose_train(overrides: list[str]):
    with initialize_config_module("dim.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One short training run through the real CLI, shared by the tests that inspect it."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    proc = run_cli("dim-train", *TINY, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc
