"""Shared helpers: run the real console scripts, compose configs with Hydra's compose API."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
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


# The console scripts of pyproject.toml: name -> module whose ``main`` it calls.
SCRIPTS = {
    name: f"dim.cli.{name[4:]}"
    for name in ("dim-train", "dim-eval", "dim-embed", "dim-export", "dim-mine", "dim-compare")
}


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker is one of as many
    processes as cores: one torch thread each, so the workers do not oversubscribe the CPU."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses the tests start
    else:
        temporary_files_in_memory()
    if not os.environ.get("DIM_CACHE_DIR"):  # folder datasets' decode caches: never ~/.cache
        global _CACHE_DIR
        _CACHE_DIR = tempfile.mkdtemp(prefix="dim-test-cache-")
        os.environ["DIM_CACHE_DIR"] = _CACHE_DIR


_CACHE_DIR: str | None = None  # the decode-cache folder this process made (removed at the end)


def pytest_unconfigure(config) -> None:
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


#: free space a RAM-backed /dev/shm needs before the suite puts its temporary files there
SHM_FREE = 8 * 2**30


def temporary_files_in_memory(shm: Path = Path("/dev/shm")) -> None:
    """The suite writes hundreds of checkpoints (tens of MB each, every one fsynced): in memory
    they cost a fraction of a disk write, which took about a tenth of ``make test``'s time.  Only
    where ``/dev/shm`` is writable with room to spare and the user set no ``TMPDIR``; the workers
    and the processes the tests start inherit it.  Passed tests' directories are removed as
    they end (``tmp_path_retention_policy``), so the suite holds little at a time."""
    if os.environ.get("TMPDIR") or not shm.is_dir() or not os.access(shm, os.W_OK):
        return
    if shutil.disk_usage(shm).free < SHM_FREE:
        return
    os.environ["TMPDIR"] = str(shm)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` need CUDA: skipped (with the reason) on machines without it.  Tests
    marked ``slow`` (minutes of training) run only when selected: ``make test-slow``."""
    import torch

    # The multi-process tests are the long poles of the suite (up to a minute each): started
    # first, the other worker takes the short tests meanwhile instead of waiting at the end.
    first = ("test_distributed.py", "test_reliability.py", "test_diskio.py")
    items.sort(key=lambda item: item.path.name not in first)  # stable: file order otherwise
    if "slow" not in (config.option.markexpr or ""):
        later = pytest.mark.skip(reason="a minute or more: make test-slow (marker slow)")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(later)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """Tiny per-step ops (dim.mine's critics): one thread avoids OpenMP synchronisation cost
    (4x less CPU measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def own_bound_options():
    """Forget the ``bound`` options registered meanwhile in Hydra's process-wide ConfigStore
    (dim-mine registers its estimators there; a console script is a process of its own)."""
    from hydra.core.config_store import ConfigStore

    group = ConfigStore.instance().repo.setdefault("bound", {})
    before = set(group)
    try:
        yield
    finally:
        for name in set(group) - before:
            del group[name]


def run_cli(
    cmd: str, *args: str, cwd: Path | None = None, timeout: int = 600, real: bool = False
) -> subprocess.CompletedProcess:
    """Run a console script; returns a CompletedProcess (never raises on failure).

    By default its ``main`` runs in this process (argv, working directory and output captured,
    then restored): the same code path without 3-5 s of interpreter start-up.  ``real=True`` runs
    the installed script as a subprocess, for what only a process shows: signals, DDP launchers,
    the entry point itself.
    """
    if real:
        env = {**os.environ, "PYTHONHASHSEED": "0", "HYDRA_FULL_ERROR": "0"}
        return subprocess.run(
            [str(BIN / cmd), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    import torch

    main = importlib.import_module(SCRIPTS[cmd]).main
    argv, here, threads = sys.argv, os.getcwd(), torch.get_num_threads()
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [cmd, *args]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), own_bound_options():
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([cmd, *args], code, out.getvalue(), err.getvalue())


def dim_module(**model):
    """A small DIM(L+G) module with a prior term, for 32x32 RGB images of 10 classes."""
    from dim.methods.dim import DIMModule

    base = dict(encoder="basic32", mi_units=32, prior_hidden=[32, 16])
    return DIMModule(
        base | model,
        dict(name="infonce"),
        dict(alpha=0.5, beta=1.0, gamma=0.1),
        dict(lr=1e-4),
        dict(channels=3, image_size=32, num_classes=10),
    )


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
