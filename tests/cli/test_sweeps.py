"""A sweep a researcher can read: the HParams tab (real event files, TensorBoard's own plugin),
``dim-compare`` (real run dirs of a real ``dim-train -m`` sweep) and plain progress lines."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil

import pytest
from conftest import TINY, run_cli
from hparams_helpers import hparams_columns, hparams_sessions

AMDIM = ["method=amdim", "model.ndf=4", "model.n_rkhs=8", "model.n_depth=1"]


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """``runs/sweep``: a 2-job ``dim-train -m bound=jsd,infonce`` sweep (progress lines every 2
    steps, none by time: deterministic);
    ``runs/amdim``: one AMDIM run next to it."""
    root = tmp_path_factory.mktemp("sweeps") / "runs"
    proc = run_cli(
        "dim-train", "-m", *TINY, "bound=jsd,infonce", "callbacks.progress.every_n_steps=2",
        "callbacks.progress.every_n_seconds=0",
        f"hydra.sweep.dir={root / 'sweep'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    amdim = run_cli("dim-train", *TINY, *AMDIM, f"hydra.run.dir={root / 'amdim'}")
    assert amdim.returncode == 0, amdim.stderr[-3000:]
    return root, proc


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_the_hparams_tab_compares_dim_and_amdim_runs_of_a_sweep(sweep):
    root, _ = sweep
    sessions = hparams_sessions(root)
    assert set(sessions) == {"sweep/0/tensorboard", "sweep/1/tensorboard", "amdim/tensorboard"}
    for name, run in (("sweep/0", root / "sweep/0"), ("sweep/1", root / "sweep/1")):
        s = sessions[f"{name}/tensorboard"]
        final = _metrics(run)["metrics"]
        assert s["status"] == "STATUS_SUCCESS"
        assert s["hparams"]["method.name"] == "dim"
        assert s["hparams"]["optim.lr"] == pytest.approx(1e-4)
        assert s["hparams"]["data.num_samples"] == 64
        assert s["hparams"]["model.prior_hidden"] == "[32, 16]"  # lists as text
        for tag in ("val/probe/acc_y", "val/probe/acc_conv", "val/knn/acc_y", "val/mi/local"):
            assert s["metrics"][tag] == pytest.approx(final[tag], abs=1e-6), tag
    bounds = {sessions[f"sweep/{i}/tensorboard"]["hparams"]["bound.name"] for i in (0, 1)}
    assert bounds == {"jsd", "infonce"}
    amdim = sessions["amdim/tensorboard"]
    assert amdim["hparams"]["method.name"] == "amdim" and amdim["hparams"]["model.ndf"] == 4
    final = _metrics(root / "amdim")["metrics"]
    for tag in ("val/probe/acc_y", "val/knn/acc_y", "val/mi/1t5"):
        assert amdim["metrics"][tag] == pytest.approx(final[tag], abs=1e-6), tag


def test_the_hparams_table_of_a_sweep_starts_with_what_it_swept(sweep):
    root, proc = sweep
    assert "HParams columns of the sweep" in proc.stderr  # written where the sweep ended
    names, tags, differs = hparams_columns(root / "sweep")
    assert names[0] == "bound.name" and differs == ["bound.name"]
    assert names[1:] == sorted(names[1:]) and "optim.lr" in names  # then the constants
    assert tags[:3] == ["val/probe/acc_y", "val/knn/acc_y", "val/mi/local"]
    assert not list((root / "sweep" / "0" / "tensorboard").glob("*.hparams-experiment"))


def test_progress_lines_in_a_log_file(sweep):
    _, proc = sweep
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]
    pattern = (
        r"epoch 1/1( done)?  step (\d)/4 \(\d+%\)  \d+ img/s  ETA \d:\d\d:\d\d"
        r"  loss/encoder_total -?[\d.]+.*  mi/local -?[\d.]+"
    )
    steps = [int(m.group(2)) for ln in lines if (m := re.match(pattern, ln))]
    assert steps == [2, 4, 4] * 2, lines  # every 2 steps, and the epoch's end, in each job
    ends = [ln for ln in lines if " done " in ln]
    assert len(ends) == 2 and all("probe/acc_y" in ln and "knn/acc_y" in ln for ln in ends)
    assert "v_num" not in proc.stdout and "\r" not in proc.stdout


def test_dim_eval_results_join_the_run_in_hparams_and_dim_compare(sweep, tmp_path):
    root, _ = sweep
    run = root / "sweep/0"
    out = tmp_path / "eval"
    proc = run_cli(
        "dim-eval", f"run={run}", "eval=knn", "eval.knn.k=[5]", "max_train=64", "max_test=32",
        f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    value = json.loads((out / "eval.json").read_text())["results"]["knn"]["values"]["k5/y"]
    copies = list((run / "evals").glob("*.json"))
    assert [c.name for c in copies] == ["eval.json"]  # named after the eval's run dir
    sessions = hparams_sessions(root / "sweep")
    assert sessions["0/tensorboard"]["metrics"]["eval/knn/k5/y"] == pytest.approx(value["mean"])
    assert "eval/knn/k5/y" not in sessions["1/tensorboard"]["metrics"]
    assert len(sessions) == 2  # the eval added metrics to run 0, not a session of its own

    table = tmp_path / "t.json"
    done = run_cli("dim-compare", str(root / "sweep"), "--json", str(table))
    assert done.returncode == 0, done.stderr
    rows = {r["run"]: r for r in json.loads(table.read_text())}
    assert rows["0"]["eval/knn/k5/y"] == pytest.approx(value["mean"])
    assert rows["1"]["eval/knn/k5/y"] is None


def test_dim_compare_tabulates_status_overrides_metrics_and_sorts(sweep, tmp_path):
    root, _ = sweep
    # What a kill after the first checkpoint leaves (no metrics.json), and a run that failed
    # before its first checkpoint (.hydra only).
    shutil.copytree(root / "sweep/1", tmp_path / "more/killed")
    (tmp_path / "more/killed/metrics.json").unlink()
    shutil.copytree(root / "sweep/1/.hydra", tmp_path / "more/failed/.hydra")
    csv_out, json_out = tmp_path / "t.csv", tmp_path / "t.json"
    proc = run_cli(
        "dim-compare", str(root / "sweep"), str(root / "am*"), str(tmp_path / "more"),
        "--sort", "val/probe/acc_y", "--ascending", "--csv", str(csv_out), "--json", str(json_out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(json_out.read_text())
    assert len(rows) == 5
    status = {r["run"].rsplit("/", 1)[-1]: r["status"] for r in rows}
    assert status == {
        "0": "finished",
        "1": "finished",
        "amdim": "finished",
        "killed": "interrupted at step 4",
        "failed": "failed",
    }
    for row in rows:
        if row["status"] != "failed":
            assert row["steps"] == 4 and row["train_time"] > 0
    # Only what differs between runs: bound (jsd / infonce / not given) and AMDIM's overrides;
    # not the TINY overrides every run shares.
    assert {"bound", "method", "model.ndf"} <= set(rows[0])
    assert "data.num_samples" not in rows[0] and "trainer.max_epochs" not in rows[0]
    by_run = {r["run"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_run["0"]["bound"] == "jsd" and by_run["amdim"]["method"] == "amdim"
    for name in ("0", "1", "amdim"):
        final = _metrics(root / ("sweep/" + name if name != "amdim" else name))["metrics"]
        assert by_run[name]["val/probe/acc_y"] == pytest.approx(final["val/probe/acc_y"])
    accs = [r["val/probe/acc_y"] for r in rows if r["val/probe/acc_y"] is not None]
    assert accs == sorted(accs) and len(accs) == 3
    assert {r["run"].rsplit("/", 1)[-1] for r in rows[3:]} == {"killed", "failed"}  # no value
    with csv_out.open() as f:
        assert [r["status"] for r in csv.DictReader(f)] == [r["status"] for r in rows]
    assert "finished" in proc.stdout and "interrupted at step 4" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nothing-here"], "no such file or directory"),  # the installed script itself
        (["{tmp}"], "no training runs found"),
        (["{sweep}", "--sort", "val/probe/acc"], "--sort val/probe/acc: no such column"),
        (["{sweep}", "--csv", "{tmp}/exists.csv"], "exists; pass --overwrite"),
        (["{sweep}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_dim_compare_bad_input_is_one_line(sweep, tmp_path, args, message):
    (tmp_path / "exists.csv").write_text("keep")
    args = [a.format(tmp=tmp_path, sweep=sweep[0] / "sweep") for a in args]
    proc = run_cli("dim-compare", *args, real="nothing-here" in args[0])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert (tmp_path / "exists.csv").read_text() == "keep"


def test_a_run_returns_its_sweep_metric_to_an_optimising_sweeper():
    from omegaconf import OmegaConf

    from dim.cli.train import sweep_value

    cfg = OmegaConf.create({"sweep_metric": "val/knn/acc_y"})
    assert sweep_value(cfg, {"val/knn/acc_y": 0.75, "val/probe/acc_y": 0.5}) == 0.75
    assert math.isnan(sweep_value(cfg, {"val/knn/acc_y": None}))  # a failed trial for Optuna
    assert sweep_value(OmegaConf.create({"sweep_metric": None}), {"x": 1.0}) is None
