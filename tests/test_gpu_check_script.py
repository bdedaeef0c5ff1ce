"""scripts/gpu_check.sh and scripts/gpu_bench.py rehearsed on the CPU: arguments, the report's
JSON, the benchmark rows (graph rows say why they cannot run without CUDA) and, when ./wheels is
filled (docs/gpu.md), the install from the wheels into a fresh venv.  The full rehearsal trains,
so it is slow; the argument checks and the report are fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def check(out: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "usage: bash scripts/gpu_check.sh OUT"),
        (["--seconds", "soon"], "usage:"),
        (["--fast"], "unknown argument '--fast'"),
        (["--stages", "install benchmark"], "unknown stage 'benchmark'"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPT), *([] if not args else [str(out), *args])],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not out.exists()


def test_the_report_alone_writes_the_summary(tmp_path):
    proc = check(tmp_path, "--rehearse", "--stages", "report", "--commit", "abc1234")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["commit"] == "abc1234" and summary["rehearse"] is True
    assert summary["stages"] == [] and summary["bench"] == {"peak_bf16_tflop_s": None, "rows": []}
    assert "is missing (its stage did not finish)" in (tmp_path / "log.txt").read_text()


@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_on_the_cpu(tmp_path):
    stages = "graphed eager graph report"
    if list((ROOT / "wheels").glob("*.whl")):  # filled as docs/gpu.md says
        stages = "install " + stages
    proc = check(tmp_path, "--rehearse", "--stages", stages, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == stages.split()[:-1]
    assert all(s["rc"] == "0" for s in summary["stages"]), summary["stages"]
    graphed = summary["tests"]["pytest_graphed"]  # collected; skipped without CUDA
    assert graphed["tests"] == graphed["skipped"] == 3
    eager, graph = summary["bench"]["rows"]
    assert eager["mode"] == "eager" and eager["pipeline_img_s"] > 0 and eager["bare_img_s"] > 0
    assert eager["profile"]["steps"] == 2 and eager["gflop_per_img"] > 0
    assert graph["mode"] == "graph" and "needs a CUDA GPU" in graph["skipped"]
    log = (tmp_path / "log.txt").read_text()
    if stages.startswith("install"):
        assert "configs compose, model.cuda_graph=True" in log and "/venv/" in log
