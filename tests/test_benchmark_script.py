"""scripts/benchmark.py: the bare step and the pipeline of each method, views included.  Slow
(10 s, the suite is near its 3 minutes): make test-slow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "benchmark.py"


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [["model.mi_units=32"], ["method=amdim", "model=basic32"], ["method.views={translate: 2}"]],
    ids=["dim", "amdim", "dim-views"],
)
def test_rows_for_every_method(tmp_path, method):
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    small = ["data.channels=1", "model.prior_hidden=[32,16]", "callbacks.knn.every_n_epochs=0"]
    bench.main(
        ["--batch-sizes", "8", "--steps", "2", "--warmup", "1", "--device-data", "1",
         "--out", str(out), "--set", *small, *method]
    )  # fmt: skip
    (row,) = json.loads(out.read_text())
    assert row["bare_img_s"] > 0 and row["pipeline_img_s"] > 0 and row["gflop_per_img"] > 0
    assert row["overrides"] == [*small, *method]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_folder_against_arrays_on_fashion_mnist_written_as_png(tmp_path):
    from dataset_fixtures import write_fashion_mnist

    write_fashion_mnist(tmp_path / "data", n_train=100, n_test=20)
    png = tmp_path / "png"
    _script("fashion_mnist_png").main([str(tmp_path / "data" / "FashionMNIST" / "raw"), str(png)])
    assert len(list((png / "train").rglob("*.png"))) == 100 and len(list(png.glob("*/*"))) == 20
    out = tmp_path / "folder.json"
    small = ["data.batch_size=16", "model.mi_units=32", "callbacks.knn.every_n_epochs=0"]
    _script("benchmark").main(
        ["--folder", str(png), "--arrays-dir", str(tmp_path / "data"), "--steps", "2",
         "--warmup", "1", "--rounds", "2", "--uncached", "--out", str(out), "--set", *small]
    )  # fmt: skip
    row = json.loads(out.read_text())
    # 120 small PNGs decode in well under 0.1 s: the rate says the first pass was timed
    assert row["images"] == 120 and row["first_pass_build_s"] >= 0 and row["first_pass_img_s"] > 0
    assert [len(row["img_s_per_round"][k]) for k in ("arrays", "folder", "uncached")] == [2, 2, 1]
    rates = row["img_s_per_round"]
    pairs = [f / a for f, a in zip(rates["folder"], rates["arrays"])]
    assert row["folder_over_arrays"] == pytest.approx(sum(pairs) / 2, abs=2e-3)  # their median
