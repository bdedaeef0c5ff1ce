"""scripts/paper_grid.py: the grid's plan, its resumable ledger, statuses and the report.

The fast tests replace ``dim-train`` / ``dim-eval`` with a runner that writes what they write
(run dir files, ``eval.json`` in dim-eval's format) so the plumbing runs in well under a second;
the slow test runs the real commands on generated Fashion-MNIST files.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import paper_grid  # noqa: E402
import paper_grid_report  # noqa: E402


def _arg(cmd: list[str], key: str) -> str | None:
    return next((c.split("=", 1)[1] for c in cmd if c.startswith(key + "=")), None)


class FakeTools:
    """Writes what dim-train and dim-eval write; accuracies from a per-cell table."""

    def __init__(self, acc: dict[str, float] | None = None, nonfinite: set[str] = frozenset()):
        self.calls: list[list[str]] = []
        self.acc = acc or {}
        self.nonfinite = set(nonfinite)
        self.kill_after_checkpoint = False

    def __call__(self, cmd: list[str], log_file: Path) -> int:
        self.calls.append(cmd)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if cmd[2] == "dim.cli.train":
            run = Path(_arg(cmd, "hydra.run.dir") or _arg(cmd, "resume") or "")
            (run / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run / "checkpoints" / "last.ckpt").write_text("ckpt")
            if self.kill_after_checkpoint:
                raise KeyboardInterrupt  # the whole script is stopped mid-training
            if run.parent.name in self.nonfinite:
                with open(log_file, "a") as f:
                    f.write(
                        "error: 'local' became nan at step 12 (found at step 20); the last "
                        "good checkpoint is kept.\n"
                    )
                return 1
            (run / "metrics.json").write_text(
                json.dumps({"global_step": 20, "epochs": 2, "train_seconds": 3.0})
            )
            (run / "encoder.pt").write_text("enc")
            return 0
        out = Path(_arg(cmd, "hydra.run.dir") or "")
        cell = out.parent.parent.name
        a = self.acc.get(cell, 0.8)
        protocols = (_arg(cmd, "eval") or "").strip("[]").split(",")
        values = {
            "linear": {t: [a, a + 0.02] for t in ("conv", "fc", "y")},
            "knn": {"k20/y": [a - 0.01]},
            "fewshot": {"10shot/y": [a - 0.1, a - 0.08]},
            "nonlinear": {t: [a + 0.01] for t in ("conv", "fc", "y")},
            "mine": {"y": [3.5]},
            "ndm": {"sigmoid/y": [0.2], "raw/y": [1.5]},
            "prior": {"ks/y": [0.1], "c2st/y": [0.6]},
            "msssim": {"y": [0.4], "mse/y": [0.01]},
        }
        results = {
            p: {
                "values": {
                    k: {"mean": sum(v) / len(v), "std": None, "values": v}
                    for k, v in values[p].items()
                },
                "settings": {"warnings": []},
                "seconds": 0.1,
            }
            for p in protocols
        }
        out.mkdir(parents=True)
        (out / "eval.json").write_text(
            json.dumps({"results": results, "n_train": 50, "n_test": 10})
        )
        return 0


def _main(tmp_path: Path, tools: FakeTools, *extra: str) -> dict:
    ledger = tmp_path / "ledger.json"
    paper_grid.main(
        [
            "--split",
            "test",
            "--runs",
            str(tmp_path / "runs"),
            "--ledger",
            str(ledger),
            "--data-dir",
            "data",
            *extra,
        ],
        runner=tools,
    )
    return json.loads(ledger.read_text())


def test_plan_orders_the_nine_cells_seed_by_seed_then_prior_negatives_reference():
    args = paper_grid.parse_args(["--split", "test", "--seeds", "0", "1"])
    cells = paper_grid.grid_cells("fashion_mnist", args.batches, args.base_batch)
    order = [(c.name, s) for c, s in paper_grid.plan(args, cells)]
    main = [
        (f"{o}-{b}", s)
        for s in (0, 1)
        for o in ("global", "local", "local_global")
        for b in ("jsd", "infonce", "dv")
    ]
    assert order[:18] == main
    assert order[18:22] == [
        ("global-jsd-gamma0", 0),
        ("local-infonce-gamma0", 0),
        ("global-jsd-gamma0", 1),
        ("local-infonce-gamma0", 1),
    ]
    negatives = [n for n, _ in order[22:] if n.startswith("local-") and "-b" in n]
    # 3 bounds x the batches other than the preset's (the main cell is that point of the curve)
    assert negatives == [f"local-{b}-b{n}" for b in ("jsd", "infonce", "dv") for n in (8, 16, 32)]
    assert order[-3:] == [("random-init", 0), ("dim-two-views", 0), ("amdim", 0)]


def test_train_command_is_the_single_image_preset_with_the_cell_and_no_test_split_reads(tmp_path):
    args = paper_grid.parse_args(
        [
            "--split",
            "validation",
            "--holdout",
            "500",
            "--epochs",
            "3",
            "--data-dir",
            "d",
            "--set",
            "trainer=gpu",
        ]
    )
    cells = {c.name: c for c in paper_grid.grid_cells("fashion_mnist", [8, 128], 128)}
    grid = paper_grid.Grid(args, paper_grid.Ledger(tmp_path / "l.json", {}), FakeTools())
    cmd = paper_grid.shown(grid.train_command(cells["local_global-dv"], 1, tmp_path / "r"))
    for part in (
        "dim-train experiment=dim_fashion_mnist",
        "method.views=null",
        "data.augment.hflip=true",
        "objective=local_global",
        "bound=dv",
        "data.holdout=500",
        "trainer.limit_val_batches=0",
        "trainer.max_epochs=3",
        "seed=1",
        "trainer=gpu",
        "data.data_dir=d",
    ):
        assert part in cmd
    amdim = paper_grid.shown(grid.train_command(cells["amdim"], 0, tmp_path / "r"))
    assert amdim.startswith("dim-train experiment=amdim_fashion_mnist ")
    assert "method.views=null" not in amdim and " experiment=dim_fashion_mnist" not in amdim


def test_every_step_is_recorded_at_once_and_a_rerun_skips_finished_ones(tmp_path):
    tools = FakeTools({"global-jsd": 0.7, "local-jsd": 0.85})
    doc = _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "--cells",
        "global-jsd",
        "local-jsd",
        "--seeds",
        "0",
        "1",
    )
    steps = [(r["cell"], r["seed"], r["step"]) for r in doc["records"]]
    assert steps[:3] == [("global-jsd", 0, s) for s in ("train", "classify", "table3")]
    # Table 3's columns on the first seed only
    assert ("global-jsd", 1, "table3") not in steps and ("global-jsd", 1, "classify") in steps
    assert len(steps) == 2 * 3 + 2 * 2
    assert all(r["status"] == "ok" for r in doc["records"])
    train = doc["records"][0]
    assert train["command"].startswith("dim-train experiment=dim_fashion_mnist")
    assert train["train_seconds"] == 3.0 and train["machine"] and train["wall_s"] >= 0
    classify = doc["records"][1]
    assert classify["results"]["linear"]["values"]["y"]["values"] == [0.7, 0.72]
    assert classify["command"].startswith("dim-eval run=")
    n_calls = len(tools.calls)
    _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "--cells",
        "global-jsd",
        "local-jsd",
        "--seeds",
        "0",
        "1",
    )
    assert len(tools.calls) == n_calls  # nothing ran twice


def test_an_interrupted_training_continues_with_resume(tmp_path):
    tools = FakeTools()
    tools.kill_after_checkpoint = True
    with pytest.raises(KeyboardInterrupt):
        _main(tmp_path, tools, "--groups", "main", "--cells", "local-dv", "--seeds", "0")
    tools.kill_after_checkpoint = False
    doc = _main(tmp_path, tools, "--groups", "main", "--cells", "local-dv", "--seeds", "0")
    run_dir = tmp_path / "runs" / "test" / "local-dv" / "seed0"
    assert tools.calls[1][3:] == [f"resume={run_dir}"]
    train = doc["records"][0]
    assert train["resumed"] is True and "bound=dv" in train["command"]


def test_eval_written_before_a_kill_is_read_back_not_rerun(tmp_path):
    tools = FakeTools()
    _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "--cells",
        "global-dv",
        "--seeds",
        "0",
        "--steps",
        "classify",
    )
    ledger = tmp_path / "ledger.json"
    doc = json.loads(ledger.read_text())
    doc["records"] = doc["records"][:1]  # the eval finished, the ledger did not see it
    ledger.write_text(json.dumps(doc))
    n_calls = len(tools.calls)
    doc = _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "--cells",
        "global-dv",
        "--seeds",
        "0",
        "--steps",
        "classify",
    )
    assert len(tools.calls) == n_calls
    assert [r["step"] for r in doc["records"]] == ["train", "classify"]


def test_nonfinite_and_collapsed_cells_are_recorded_and_reported_not_dropped(tmp_path):
    tools = FakeTools({"global-dv": 0.11}, nonfinite={"local-dv"})
    doc = _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "--cells",
        "local-dv",
        "global-dv",
        "--seeds",
        "0",
        "--steps",
        "classify",
        "--docs",
        str(tmp_path / "docs"),
    )
    status = {(r["cell"], r["step"]): r["status"] for r in doc["records"]}
    assert status[("local-dv", "train")] == "nonfinite"
    assert status[("local-dv", "classify")] == "nonfinite"  # the last good checkpoint, evaluated
    assert status[("global-dv", "classify")] == "collapsed"
    train = next(r for r in doc["records"] if r["cell"] == "local-dv" and r["step"] == "train")
    assert any("became nan" in w for w in train["warnings"])
    md = (tmp_path / "docs" / "fashion_mnist_test.md").read_text()
    assert "| DIM(L) DV | 0 | nonfinite (seed 0) |" in md
    assert "| DIM(G) DV | 0 | collapsed (seed 0) |" in md


def test_a_failed_training_that_is_not_a_nan_stops_the_grid_with_one_line(tmp_path):
    def broken(cmd: list[str], log_file: Path) -> int:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("error: no such file\n")
        return 1

    with pytest.raises(SystemExit, match="training local-jsd seed 0 failed"):
        _main(tmp_path, broken, "--groups", "main", "--cells", "local-jsd", "--seeds", "0")  # type: ignore[arg-type]
    assert not (tmp_path / "ledger.json").exists()


def test_a_ledger_of_other_settings_is_refused(tmp_path):
    _main(
        tmp_path,
        FakeTools(),
        "--groups",
        "main",
        "--cells",
        "local-jsd",
        "--seeds",
        "0",
        "--steps",
        "classify",
    )
    before = (tmp_path / "ledger.json").read_text()
    with pytest.raises(SystemExit, match="other settings"):
        _main(tmp_path, FakeTools(), "--groups", "main", "--cells", "local-jsd", "--epochs", "9")
    assert (tmp_path / "ledger.json").read_text() == before


def test_a_second_grid_on_the_same_ledger_is_refused_and_loses_nothing(tmp_path):
    one = ["--groups", "main", "--seeds", "0", "--steps", "classify"]
    _main(tmp_path, FakeTools(), *one, "--cells", "local-jsd")
    ledger = tmp_path / "ledger.json"
    meta = json.loads(ledger.read_text())["meta"]
    running = paper_grid.Ledger(ledger, meta)
    running.hold()  # a grid that is still running (the lock is the kernel's, per open file)
    before = ledger.read_text()
    with pytest.raises(SystemExit, match=r"being written by paper_grid.py pid \d+"):
        _main(tmp_path, FakeTools(), *one, "--cells", "local-dv")
    assert ledger.read_text() == before
    # a grid that read the ledger before the running one's last step and took the lock after
    # it ended works from the file as that one left it
    later = paper_grid.Ledger(ledger, meta)
    running.add({"cell": "local-infonce", "seed": 0, "step": "train", "status": "ok"})
    running.release()  # it ends
    later.hold()
    assert later.find("local-infonce", 0, "train") is not None
    later.release()
    done = _main(tmp_path, FakeTools(), *one, "--cells", "local-dv")
    steps = {(r["cell"], r["step"]) for r in done["records"]}
    kept = {("local-jsd", "classify"), ("local-infonce", "train"), ("local-dv", "classify")}
    assert kept <= steps


def test_parts_of_a_grid_run_apart_merge_into_one_ledger(tmp_path):
    one = ["--groups", "main", "--seeds", "0", "--steps", "classify"]
    for part, cells in (("a", ["local-jsd", "local-dv"]), ("b", ["global-jsd"])):
        paper_grid.main(
            [
                *one,
                "--split",
                "test",
                "--runs",
                str(tmp_path / part),
                "--cells",
                *cells,
                "--ledger",
                str(tmp_path / f"{part}.json"),
            ],
            runner=FakeTools(),
        )
    # the target already holds one of part a's steps, done differently: it keeps its own
    _main(tmp_path, FakeTools({"local-jsd": 0.5}), *one, "--cells", "local-jsd")
    tools = FakeTools()
    merged = _main(
        tmp_path,
        tools,
        "--merge",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json"),
        "--report-only",
        "--docs",
        str(tmp_path / "docs"),
    )
    assert tools.calls == []  # merging trains and evaluates nothing
    keys = [(r["cell"], r["seed"], r["step"]) for r in merged["records"]]
    assert len(keys) == len(set(keys)) == 6
    assert {c for c, _, _ in keys} == {"local-jsd", "local-dv", "global-jsd"}
    mine = next(
        r for r in merged["records"] if r["cell"] == "local-jsd" and r["step"] == "classify"
    )
    assert mine["results"]["linear"]["values"]["y"]["mean"] == pytest.approx(0.51)
    table = (tmp_path / "docs" / "fashion_mnist_test.md").read_text()
    assert "DIM(G) JSD" in table and "DIM(L) DV" in table
    again = _main(tmp_path, tools, "--merge", str(tmp_path / "a.json"), "--report-only")
    assert again["records"] == merged["records"]  # merging twice adds nothing


def test_merging_a_ledger_of_another_grid_or_no_ledger_is_one_line(tmp_path):
    one = ["--groups", "main", "--cells", "local-jsd", "--seeds", "0", "--steps", "classify"]
    _main(tmp_path, FakeTools(), *one)
    other = tmp_path / "other.json"
    paper_grid.main(
        [
            "--split",
            "test",
            "--epochs",
            "9",
            "--runs",
            str(tmp_path / "o"),
            "--ledger",
            str(other),
            *one,
        ],
        runner=FakeTools(),
    )
    before = (tmp_path / "ledger.json").read_text()
    with pytest.raises(SystemExit, match="other settings.*only parts of the same grid"):
        _main(tmp_path, FakeTools(), "--merge", str(other), "--report-only")
    with pytest.raises(SystemExit, match="no such ledger"):
        _main(tmp_path, FakeTools(), "--merge", str(tmp_path / "nope.json"), "--report-only")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a paper_grid ledger"):
        _main(tmp_path, FakeTools(), "--merge", str(tmp_path / "bad.json"), "--report-only")
    assert (tmp_path / "ledger.json").read_text() == before


def test_unknown_cell_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="unknown cell local-nwj"):
        _main(tmp_path, FakeTools(), "--cells", "local-nwj")


def test_report_matches_the_ledger_and_marks_missing_cells(tmp_path):
    tools = FakeTools({"local-infonce": 0.9, "global-jsd": 0.6})
    doc = _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "--cells",
        "local-infonce",
        "global-jsd",
        "--seeds",
        "0",
        "1",
        "--docs",
        str(tmp_path / "docs"),
    )
    md = (tmp_path / "docs" / "fashion_mnist_test.md").read_text()
    # linear Y: per seed mean of [a, a + 0.02] = a + 0.01, equal over both seeds -> std 0
    assert "| DIM(L) NCE | 0,1 | ok |" in md and "91.0 ± 0.0" in md
    assert "61.0 ± 0.0" in md
    assert "75.2 / 75.6 / 69.1" in md  # the paper's CIFAR-10 row beside it
    assert md.count("| DIM(G) DV | - | missing |") == 1
    assert "**Partial**" in md and "global-dv (seed 0, 1)" in md
    assert (
        "| DIM(G) JSD | 0 | 3.50 | 0.200 (1.50) | 0.400 | 0.100 | 0.600 "
        "| 49.63, 0.35 (9.96), 0.49 |" in md
    )
    # commands as the docs give them: this machine's run folders replaced by relative ones
    assert "hydra.run.dir=outputs/paper_grid/test/global-jsd/seed0`" in md
    assert str(tmp_path) not in md
    assert (tmp_path / "docs" / "fashion_mnist_test_cells.png").stat().st_size > 0
    copied = json.loads((tmp_path / "docs" / "fashion_mnist_test.json").read_text())
    assert [r.get("results") for r in copied["records"]] == [
        r.get("results") for r in doc["records"]
    ]
    assert str(tmp_path) not in json.dumps(copied)
    assert copied["records"][0]["run_dir"] == "outputs/paper_grid/test/global-jsd/seed0"


def test_negatives_curve_reads_the_main_cell_at_the_presets_batch(tmp_path):
    tools = FakeTools({"local-jsd": 0.85, "local-jsd-b8": 0.84, "local-infonce-b8": 0.7})
    _main(
        tmp_path,
        tools,
        "--groups",
        "main",
        "negatives",
        "--cells",
        "local-jsd",
        "local-jsd-b8",
        "local-infonce-b8",
        "--seeds",
        "0",
        "--steps",
        "classify",
        "--batches",
        "8",
        "128",
        "--docs",
        str(tmp_path / "docs"),
    )
    doc = json.loads((tmp_path / "docs" / "fashion_mnist_test.json").read_text())
    curve = paper_grid_report.negatives(doc)
    assert curve["jsd"][8]["linear_y"] == pytest.approx(0.85)
    assert curve["jsd"][128]["linear_y"] == pytest.approx(0.86)
    assert curve["infonce"][128]["linear_y"] is None
    md = (tmp_path / "docs" / "fashion_mnist_test.md").read_text()
    assert "| jsd | 85.0 / 85.0 | 86.0 / 86.0 |" in md  # linear probe
    linear, nonlinear = md.split("non-linear classifier:")
    assert curve["jsd"][8]["nonlinear_y"] == pytest.approx(0.85)
    for table in (linear, nonlinear):  # the fake tools give both probes the same means
        assert "| jsd | 85.0 / 85.0 | 86.0 / 86.0 |" in table
        assert "| infonce | 71.0 / 71.0 | - |" in table
    assert (tmp_path / "docs" / "fashion_mnist_test_negatives.png").is_file()


@pytest.mark.slow
def test_real_dim_train_and_dim_eval_on_generated_fashion_mnist(tmp_path):
    from dataset_fixtures import write_fashion_mnist

    write_fashion_mnist(tmp_path / "data", n_train=200, n_test=60)
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "paper_grid.py"),
        "--split",
        "validation",
        "--holdout",
        "40",
        "--data-dir",
        str(tmp_path / "data"),
        "--runs",
        str(tmp_path / "r"),
        "--groups",
        "main",
        "--cells",
        "local-dv",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--eval-budget",
        "smoke",
        "--docs",
        str(tmp_path / "docs"),
        "--set",
        "data.batch_size=32",
        "model.mi_units=32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "docs" / "fashion_mnist_validation.json").read_text())
    assert [r["step"] for r in doc["records"]] == ["train", "classify", "table3"]
    assert doc["records"][1]["n_test"] == 40  # the held-out images, not the test split
    assert set(doc["records"][1]["results"]) == {"nonlinear", "linear", "knn", "fewshot"}
    table3 = doc["records"][2]["results"]
    assert set(table3) == {"mine", "ndm", "prior", "msssim"}
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "dim-train" not in rerun.stdout


@pytest.mark.parametrize("name", ["fashion_mnist_test", "fashion_mnist_validation"])
def test_the_committed_grid_tables_are_what_the_committed_ledgers_give(tmp_path, name):
    """docs/paper_grid/*.md are generated: regenerating them from the JSON beside them changes
    nothing (a hand edit, or a ledger committed without its tables, fails here)."""
    docs = ROOT / "docs" / "paper_grid"
    doc = json.loads((docs / f"{name}.json").read_text())
    paper_grid_report.write_report(doc, tmp_path)
    assert (tmp_path / f"{name}.md").read_text() == (docs / f"{name}.md").read_text()
    assert json.loads((tmp_path / f"{name}.json").read_text()) == doc


def test_paper_results_quotes_the_committed_grid(tmp_path):
    """docs/paper_results.md's Fashion-MNIST table is the ledger's summary, row for row, so its
    numbers (and the verdicts read from them) cannot drift from the JSON."""
    doc = json.loads((ROOT / "docs" / "paper_grid" / "fashion_mnist_test.json").read_text())
    page = (ROOT / "docs" / "paper_results.md").read_text()
    rows = paper_grid_report.summary_table(doc)
    assert len(rows) >= 2 + 9
    missing = [row for row in rows if row not in page.splitlines()]
    assert not missing, f"docs/paper_results.md lacks {missing[0]}"
