"""scripts/probe_epochs.py (a run probed at several epochs, continued by exact resume) and
scripts/plot_probe_epochs.py on generated Fashion-MNIST files.  Slow: make test-slow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_fixtures import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "probe_epochs.py"
SHORT = ["data.batch_size=64", "model.mi_units=32", "callbacks.projector.num_images=0"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_probes_at_each_stop_of_one_resumed_run_and_plots_them(tmp_path):
    write_fashion_mnist(tmp_path / "data", n_train=200, n_test=60)
    run, out = tmp_path / "runs" / "dim", tmp_path / "curve.jsonl"
    common = ["--data-dir", str(tmp_path / "data"), "--holdout", "40", "--draws", "2"]
    proc = _run(str(SCRIPT), "--preset", "dim_fashion_mnist", "--epochs", "1", "3",
                "--run", str(run), "--out", str(out), *common, "--set", *SHORT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stops = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["epochs"] for s in stops] == [1, 3]
    assert all(s["split"] == "holdout" for s in stops)
    assert stops[1]["train_min"] > stops[0]["train_min"] > 0
    for s in stops:
        assert set(s["linear"]) == set(s["10shot"]) == {"conv", "fc", "y"}
        assert all(0 <= v <= 1 for v in s["linear"].values())
        assert all(0 <= v["mean"] <= 1 for v in s["10shot"].values())
        assert 0 <= s["knn20_y"] <= 1
    # one run dir, continued: 160 training images, batch 64 -> 2 steps per epoch, 3 epochs
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["global_step"] == 6

    # --extend continues the same run to a further stop; the minutes carry on
    again = [str(SCRIPT), "--extend", "--preset", "dim_fashion_mnist", "--run", str(run),
             "--out", str(out), *common]  # fmt: skip
    proc = _run(*again, "--epochs", "3")
    assert proc.returncode != 0 and "already reaches epoch 3" in proc.stderr
    proc = _run(*again, "--epochs", "4")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stops = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["epochs"] for s in stops] == [1, 3, 4]
    assert stops[2]["train_min"] > stops[1]["train_min"] and stops[2]["set"] == SHORT
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 8

    png = tmp_path / "curve.png"
    proc = _run(str(ROOT / "scripts" / "plot_probe_epochs.py"), str(out), "--targets", "90",
                "87", "76", "--out", str(png))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "2", "1"], "--epochs must increase"),
        (["--epochs", "1", "--run", "."], "exists; give a new --run"),
        (["--epochs", "1", "--extend"], "has no checkpoints"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, extra, message):
    args = ["--preset", "dim_fashion_mnist", "--run", str(tmp_path / "r"), "--out", "o.jsonl"]
    proc = _run(str(SCRIPT), *args, *extra)
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
