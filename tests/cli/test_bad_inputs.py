"""Bad input found by trying the commands as a new user would: each is one ``error:`` line (or,
for a torn run among good ones, one ``warning:`` line and the table of the rest), a non-zero
exit, no traceback, nothing written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, run_cli

from dim.run.diskio import PARTIAL


def _error_line(proc, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# ---- dim-mine: a CSV with a header and no rows; a directory as data.path ----
@pytest.mark.parametrize("cols", [[], ["data.x_cols=[a]", "data.y_cols=[b]"]])
def test_a_csv_with_only_a_header_is_one_line(tmp_path, cols):
    (tmp_path / "t.csv").write_text("a,b\n")
    out = tmp_path / "out"
    proc = run_cli("dim-mine", "data.path=t.csv", *cols, f"hydra.run.dir={out}", cwd=tmp_path)
    line = _error_line(proc)
    assert "t.csv holds a header line but no rows of data" in line, line
    assert not out.exists()


def test_a_directory_as_data_file_says_it_is_one(tmp_path):
    (tmp_path / "pairs").mkdir()
    out = tmp_path / "out"
    proc = run_cli("dim-mine", f"data.path={tmp_path}/pairs", f"hydra.run.dir={out}")
    line = _error_line(proc)
    assert "is a directory" in line and "pairs" in line
    assert not out.exists()


# ---- dim-compare: a run whose .hydra/config.yaml is torn ----
def _torn(src: Path, dest: Path, cut: str) -> Path:
    shutil.copytree(src, dest)
    text = (dest / ".hydra" / "config.yaml").read_text()
    if cut == "after_trainer":
        text = text[: text.index("\ntrainer:") + len("\ntrainer:\n")]
    else:
        text = text[: len(text) // 2]
    (dest / ".hydra" / "config.yaml").write_text(text)
    return dest


@pytest.mark.parametrize("cut", ["after_trainer", "half"])
def test_compare_names_a_torn_run(tiny_run, tmp_path, cut):
    torn = _torn(tiny_run[0], tmp_path / "torn", cut)
    line = _error_line(run_cli("dim-compare", str(torn)))
    assert str(torn) in line and "torn" in line and ".hydra/config.yaml" in line, line
    assert "no training runs found" not in line


@pytest.mark.parametrize("cut", ["after_trainer", "half"])
def test_compare_goes_on_with_the_readable_runs(tiny_run, tmp_path, cut):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_run[0], sweep / "0")
    torn = _torn(tiny_run[0], sweep / "1", cut)
    proc = run_cli("dim-compare", str(sweep))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    warning = proc.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: ") and str(torn) in warning[0]
    assert "finished" in proc.stdout  # the readable run's row


# ---- dim-train: a value of the wrong type names the key, the value and the type ----
@pytest.mark.parametrize(
    "override, message",
    [
        (
            "trainer.max_steps=abc",
            "trainer.max_steps='abc' is a string; trainer.max_steps takes an integer",
        ),
        (
            "trainer.max_epochs=1.5",
            "trainer.max_epochs=1.5 is a number; trainer.max_epochs takes an integer or null",
        ),
        (
            "optim.lr=fast",
            "optim.lr='fast' is a string; optim.lr takes a number, like its default 0.0005",
        ),
        (
            "model.prior_hidden=[a,b]",
            "model.prior_hidden=['a', 'b'] is a list of strings; model.prior_hidden takes a "
            "list of integers",
        ),
    ],
)
def test_a_wrong_type_names_key_value_and_type(tmp_path, override, message):
    out = tmp_path / "out"
    proc = run_cli("dim-train", "experiment=quickstart", override, f"hydra.run.dir={out}")
    line = _error_line(proc)
    assert message in line, line
    assert "choose trainer=" not in line
    assert not out.exists()


def test_a_value_lightning_refuses_is_named_without_the_wrong_advice(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "dim-train", "experiment=quickstart", "trainer.max_steps=-5", f"hydra.run.dir={out}"
    )
    line = _error_line(proc)
    assert line.startswith("error: trainer settings refused: trainer.max_steps=-5 (`max_steps`")
    assert "choose trainer=" not in line and not out.exists()


def test_the_reported_command_names_max_steps(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "dim-train", "experiment=quickstart", "trainer.max_steps=abc", f"hydra.run.dir={out}"
    )
    assert "trainer.max_steps='abc'" in _error_line(proc)


# ---- an accent in an unquoted path: quote it ----
@pytest.mark.parametrize("cmd", ["dim-train", "dim-eval", "dim-mine", "dim-embed"])
def test_an_unquoted_accent_says_quote_the_path(tmp_path, cmd):
    proc = run_cli(cmd, "hydra.run.dir=runs/été/r1", cwd=tmp_path)
    line = _error_line(proc)
    assert "quote it: hydra.run.dir='runs/été/r1'" in line, line
    assert os.listdir(tmp_path) == []


# ---- SIGTERM / Ctrl-C during dim-eval, dim-embed, dim-mine ----
def _interrupt_during(monkeypatch, target: str, signum: int) -> None:
    """Send ``signum`` to this process when ``target`` (module.function) is first called."""
    module, name = target.rsplit(".", 1)
    import importlib

    mod = importlib.import_module(module)
    original = getattr(mod, name)

    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(0.1)  # the handler runs here
        return original(*args, **kwargs)

    monkeypatch.setattr(mod, name, wrapped)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dim_mine_interrupted_says_so(monkeypatch, tmp_path, signum):
    _interrupt_during(monkeypatch, "dim.mine.run.estimate_from_config", signum)
    out = tmp_path / "out"
    proc = run_cli("dim-mine", "data=gaussian", "data.n=300", f"hydra.run.dir={out}")
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dim-mine interrupted by {name}"), lines
    assert "nothing was half-written" in lines[0]
    assert not (out / "mi.json").exists()


def test_dim_eval_interrupted_says_so(monkeypatch, tiny_run, tmp_path):
    _interrupt_during(monkeypatch, "dim.eval.runner.load_source", signal.SIGTERM)
    out = tmp_path / "out"
    proc = run_cli("dim-eval", f"run={tiny_run[0]}", "eval=knn", f"hydra.run.dir={out}")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dim-eval interrupted by SIGTERM"), lines
    assert not out.exists()  # it had written nothing yet: no run dir left behind


def test_dim_embed_interrupted_while_writing_leaves_no_file(monkeypatch, tiny_run, tmp_path):
    import dim.eval.embed as embed

    original = embed.atomic_write

    def write_then_interrupt(path, write):
        def interrupted(f):
            write(f)  # the arrays are in the temporary file, not yet renamed over out=
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # the handler runs here

        return original(path, interrupted)

    monkeypatch.setattr(embed, "atomic_write", write_then_interrupt)
    proc = run_cli("dim-embed", f"run={tiny_run[0]}", f"out={tmp_path}/e.npz", cwd=tmp_path)
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dim-embed interrupted by SIGINT"), lines
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_sigterm_to_a_real_dim_mine_process(tmp_path):
    """The installed script, signalled from outside while it trains."""
    out = tmp_path / "out"
    args = ["data=gaussian", "train.max_steps=1000000", "train.patience=1000000", "device=cpu"]
    proc = subprocess.Popen(
        [str(BIN / "dim-mine"), *args, f"hydra.run.dir={out}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    deadline = time.time() + 60
    while not (out / "tensorboard").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the training loop
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("dim-mine interrupted by SIGTERM"), stderr
    assert not (out / "mi.json").exists()
    assert not [p for p in out.rglob("*") if PARTIAL in p.name]  # no half-written file
