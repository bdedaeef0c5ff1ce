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
