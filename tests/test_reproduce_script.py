"""scripts/reproduce_fashion_mnist.py end to end on generated Fashion-MNIST files: both presets
through the real dim-train (a few steps), the supervised baseline, every probe, the report files
and the three plots.  Slow (about a minute): make test-slow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_fixtures import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["raw pixels", "random init", "dim_fashion_mnist", "amdim_fashion_mnist"]
SHORT = [
    "trainer.max_epochs=2",
    "data.batch_size=64",  # 3 steps per epoch
    "model.mi_units=32",
    "callbacks.projector.num_images=0",
]


@pytest.mark.slow
def test_reproduce_writes_the_table_the_plots_and_the_epoch_curves(tmp_path):
    write_fashion_mnist(tmp_path / "data", n_train=200, n_test=60)
    out = tmp_path / "docs" / "fm"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "reproduce_fashion_mnist.py"),
        *("--data-dir", str(tmp_path / "data"), "--runs", str(tmp_path / "runs")),
        *("--out", str(out), "--shots", "1", "5", "--draws", "2", "--tsne-points", "50"),
        "--set",
        *SHORT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["split"] == "test" and list(report["results"]) == [
        *MODELS[:2],
        *MODELS[2:],
        "supervised (same wall time)",
    ]
    for name, layers in report["results"].items():
        assert set(layers) == ({"pixels"} if name == "raw pixels" else {"conv", "fc", "y"})
        for row in layers.values():
            assert 0 <= row["linear"] <= 1 and 0 <= row["knn20"] <= 1
            assert set(row) == {"linear", "knn20", "1shot", "5shot"}
            assert row["5shot"]["std"] >= 0
    # the supervised encoder trained for the DIM preset's wall time
    assert report["wall_min"]["supervised (same wall time)"] == report["wall_min"][MODELS[2]]
    for preset in MODELS[2:]:
        curves = report["epochs"][preset]
        assert len(curves["val/knn/acc_y"]) == 2  # one value per epoch end
        assert all(0 <= v <= 1 for v in curves["val/probe/acc_conv"])
        assert f"experiment={preset}" in " ".join(report["train_commands"])
    for command in [report["command"], *report["train_commands"]]:  # relative paths only
        assert not any(
            a.partition("=")[2 if "=" in a else 0].startswith("/") for a in command.split()
        )
    md = out.with_suffix(".md").read_text()
    assert "| features | train wall (min) | linear (best layer) | 20-NN on Y |" in md
    assert "accuracy against epochs" in md and "Training commands:" in md
    for suffix in ("_labels.png", "_tsne.png", "_epochs.png"):
        png = out.with_name(out.name + suffix)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --skip-train reuses the runs and the cached features: the same numbers again
    again = subprocess.run([*cmd, "--skip-train"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.with_suffix(".json").read_text())["results"] == report["results"]


def test_recorded_commands_carry_relative_paths_only(monkeypatch, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "repro", ROOT / "scripts/reproduce_fashion_mnist.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    args = ["dim-train", "experiment=x", f"data.data_dir={tmp_path / 'data'}", "--runs", "r/s"]
    got = script.relative_command([*args, str(tmp_path / "work" / "runs")])
    assert got == "dim-train experiment=x data.data_dir=../data --runs r/s runs"
