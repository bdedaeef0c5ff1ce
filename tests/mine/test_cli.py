"""dim-mine through the real entry point: outputs, TensorBoard curves, file formats, bad input."""

import json
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import own_bound_options, run_cli
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dim.cli import mine as cli
from dim.errors import DimError
from dim.mine import ESTIMATORS
from dim.mine.pairs import gaussian_pairs
from dim.mine.run import critic_settings, register_bound_configs

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "mine"
FAST = ["model.hidden=32", "train.max_steps=60", "train.eval_every=20"]
# The estimate is never negative; a clipped raw estimate is named after the interval.
LAST_LINE = re.compile(
    r"^I\(X;Y\) ≈ (\d+\.\d{3}) nats \((\d+\.\d{3}) bits\), "
    r"95% CI \[(\d+\.\d{3}), (\d+\.\d{3})\] nats(?:; raw estimate -\d+\.\d{3}: .+)?$"
)


@pytest.fixture(autouse=True)
def _restore_torch_threads_and_bound_options():
    """dim-mine sets torch's threads and registers its bound options in Hydra's (process-wide)
    ConfigStore; a console script is its own process, these tests are not."""
    before = torch.get_num_threads()
    with own_bound_options():
        yield
    torch.set_num_threads(before)


def compose_mine(overrides):
    register_bound_configs()  # as dim-mine's main does
    with initialize_config_module("dim.configs.mine", version_base="1.3"):
        return compose("mine", overrides=overrides)


def run_inprocess(monkeypatch, *args):
    """Call dim.cli.mine.main as the console script would; returns the exit code."""
    monkeypatch.setattr(sys, "argv", ["dim-mine", *args])
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code
    return 0


def _header_examples():
    """The ``dim-mine ...`` usage lines at the top of configs/mine/mine.yaml."""
    lines = (CONFIGS / "mine.yaml").read_text().splitlines()
    return [
        shlex.split(ln.split("dim-mine", 1)[1], comments=True) for ln in lines if "dim-mine " in ln
    ]


@pytest.mark.parametrize("overrides", _header_examples(), ids=" ".join)
def test_usage_examples_in_the_config_header_compose_as_written(overrides):
    cfg = compose_mine(overrides)
    for item in overrides:  # every override shows up in the composed config
        key, value = item.split("=", 1)
        got = OmegaConf.select(cfg, key if "." in key else f"{key}.name")
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == yaml.safe_load(value), item


def test_every_estimator_is_a_bound_option_and_no_file_is_stray():
    assert {p.stem for p in (CONFIGS / "bound").glob("*.yaml")} <= set(ESTIMATORS)
    for bound in ESTIMATORS:
        assert compose_mine([f"bound={bound}"]).bound.name == bound


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml")))
def test_every_data_option_composes(data):
    cfg = compose_mine([f"data={data}"])
    assert cfg.data.name in (data, "file")  # npz / npy / csv are formats of `file`


@pytest.mark.parametrize(
    "override", ["train.max_step=5", "data.pth=x.npz", "bound.tau=1.0", "model.embd=8"]
)
def test_misspelt_or_misplaced_keys_are_rejected(override):
    # Struct mode: tau only exists for smile.
    with pytest.raises(ConfigCompositionException):
        compose_mine([override])


def test_model_picks_the_critic_and_fills_its_defaults():
    def settings(*overrides):
        return critic_settings(compose_mine(list(overrides)).model)

    base = {"hidden": 256, "activation": "silu"}
    assert settings() == {"critic": "gauss", "layers": 2, "hidden": 64, "activation": "silu"}
    assert settings("model.critic=concat") == {"critic": "concat", "layers": 1, **base}
    sep = settings("model.critic=separable")
    assert sep == {"critic": "separable", "layers": 2, "embed": 32, **base}
    assert settings("model.critic=separable", "model.embed=8", "model.layers=1")["embed"] == 8
    with pytest.raises(DimError, match="model.embed is a setting of model.critic=separable only"):
        settings("model.embed=8")
    with pytest.raises(DimError, match="unknown critic 'bilinear'; choose one of: gauss, concat"):
        settings("model.critic=bilinear")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("critic=separable", "model.critic=separable"),
        ("critic.type=separable", "model.critic=separable"),
        ("critic.hidden=32", "model.hidden=32"),
        ("+critic.embed=8", "model.embed=8"),
    ],
)
def test_old_critic_spelling_is_one_line_naming_the_new_one(
    tmp_path, monkeypatch, capsys, old, new
):
    run = tmp_path / "run"
    code = run_inprocess(monkeypatch, "data=gaussian", old, f"hydra.run.dir={run}")
    err = capsys.readouterr().err.strip()
    assert code == 2 and not run.exists()
    assert err == f"error: '{old}' is the old spelling; the critic is set under model: {new}"


def test_console_script_on_a_synthetic_task(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        "dim-mine",
        "data=gaussian",
        "data.n=1000",
        "data.mi=1",
        *FAST,
        f"hydra.run.dir={run}",
    )  # in this process; the installed entry point itself: the bad-input test below
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = LAST_LINE.match(proc.stdout.strip().splitlines()[-1])
    assert m, proc.stdout
    record = json.loads((run / "mi.json").read_text())
    for key in ("mi_nats", "mi_bits", "bound", "n_train", "n_eval", "stderr_nats", "curve"):
        assert key in record
    assert record["ci95_nats"][0] <= record["mi_nats"] <= record["ci95_nats"][1]
    assert record["raw_mi_nats"] == pytest.approx(record["mi_nats"]) and "warnings" in record
    assert record["settings"]["transform"] == "copula" and record["settings"]["critic"] == "gauss"
    assert record["bound"] == "mine" and record["true_mi"] == pytest.approx(1.0)
    assert (record["n_train"], record["n_val"], record["n_eval"]) == (700, 100, 200)
    assert float(m.group(1)) == pytest.approx(record["mi_nats"], abs=5e-4)
    assert record["mi_bits"] == pytest.approx(record["mi_nats"] / math.log(2))
    assert (run / ".hydra" / "config.yaml").is_file()
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert {"mi/train", "mi/heldout", "mi/true", "mi/estimate"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("mi/heldout")] == [20, 40, 60]
    assert all(e.value == pytest.approx(1.0) for e in ea.Scalars("mi/true"))


def test_staircase_run_logs_the_true_mi_steps(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = ["data=staircase", "data.dim=2", "data.levels=[0.5,1.5]", "data.steps_per_level=40"]
    args += ["data.n_eval=300", "model.hidden=32", "train.eval_every=20"]
    assert run_inprocess(monkeypatch, *args, f"hydra.run.dir={run}") == 0
    assert LAST_LINE.match(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((run / "mi.json").read_text())
    assert record["steps"] == 80 and record["true_mi"] == 1.5
    assert record["settings"]["lr"] == 1e-3  # the preset's gentler learning rate
    assert [p["true_mi"] for p in record["curve"]] == [0.5, 0.5, 1.5, 1.5]
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.value for e in ea.Scalars("mi/true")][:4] == [0.5, 0.5, 1.5, 1.5]


def _write_inputs(tmp_path, n=300):
    p = gaussian_pairs(n, 2, mi=1.0, seed=0)
    np.savez(tmp_path / "pairs.npz", x=p.x, y=p.y)
    np.save(tmp_path / "x.npy", p.x)
    np.save(tmp_path / "y.npy", p.y)
    rows = ["a,b,c,d"] + [",".join(repr(float(v)) for v in (*xi, *yi)) for xi, yi in zip(p.x, p.y)]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return p


FORMATS = {
    "npz": ["data.path={d}/pairs.npz"],
    "npy": ["data.x_path={d}/x.npy", "data.y_path={d}/y.npy"],
    "csv": ["data.path={d}/pairs.csv", "data.x_cols=[a,b]", "data.y_cols=[c,3]"],
    "npz_explicit_ksg": ["data=npz", "data.path={d}/pairs.npz", "bound=ksg"],
}


def test_npz_npy_and_csv_give_the_same_estimate(tmp_path, monkeypatch, capsys):
    _write_inputs(tmp_path)
    records = {}
    for name, data in FORMATS.items():
        run = tmp_path / name
        args = [a.format(d=tmp_path) for a in data]
        assert run_inprocess(monkeypatch, *args, *FAST, f"hydra.run.dir={run}") == 0, name
        records[name] = json.loads((run / "mi.json").read_text())
        assert LAST_LINE.match(capsys.readouterr().out.strip().splitlines()[-1])
    assert records["npz"]["n_train"] + records["npz"]["n_val"] + records["npz"]["n_eval"] == 300
    # Same pairs, same seed: every format yields the same number.
    assert records["npz"]["mi_nats"] == pytest.approx(records["npy"]["mi_nats"], abs=1e-6)
    assert records["npz"]["mi_nats"] == pytest.approx(records["csv"]["mi_nats"], abs=1e-6)
    assert records["npz"]["mi_nats"] > 0.2  # the dependence is found (true MI = 1 nat)
    ksg = records["npz_explicit_ksg"]
    assert ksg["bound"] == "ksg" and ksg["n_eval"] == 300 and ksg["n_train"] == 0
    assert ksg["mi_nats"] == pytest.approx(1.0, abs=0.3)


BAD_INPUTS = {
    "mismatched": (
        lambda d: np.savez(d / "in.npz", x=np.random.rand(300, 2), y=np.random.rand(299)),
        ["data.path={d}/in.npz"],
        "x has 300 samples but y has 299",
    ),
    "nan_rows": (
        lambda d: np.savez(
            d / "in.npz",
            x=np.where(np.arange(300)[:, None] == 5, np.nan, 1.0) * np.random.rand(300, 2),
            y=np.random.rand(300),
        ),
        ["data.path={d}/in.npz"],
        "1 rows hold NaN or inf .first: row 5.; clean them or pass data.drop_nonfinite=true",
    ),
    "too_few": (
        lambda d: np.savez(d / "in.npz", x=np.random.rand(50, 2), y=np.random.rand(50, 2)),
        ["data.path={d}/in.npz"],
        "only 50 samples; MI estimation needs at least 100 pairs",
    ),
    "three_rows": (
        lambda d: np.savez(d / "in.npz", x=np.random.rand(3, 2), y=np.random.rand(3)),
        ["data.path={d}/in.npz"],
        "only 3 samples; MI estimation needs at least 100 pairs",
    ),
    "constant_column": (
        lambda d: np.savez(
            d / "in.npz", x=np.c_[np.random.rand(300), np.ones(300)], y=np.random.rand(300)
        ),
        ["data.path={d}/in.npz"],
        "column 1 of x is constant",
    ),
    "missing_key": (
        lambda d: np.savez(d / "in.npz", x=np.random.rand(300), target=np.random.rand(300)),
        ["data.path={d}/in.npz"],
        "in.npz has no array 'y' .it holds: x, target.; name the arrays with data.x_key",
    ),
    "missing_file": (
        lambda d: None,
        ["data.path={d}/absent.npz"],
        "data file not found: .*absent.npz",
    ),
    "missing_npy": (
        lambda d: np.save(d / "x.npy", np.random.rand(300)),
        ["data.x_path={d}/x.npy", "data.y_path={d}/nope.npy"],
        "data.y_path not found: .*nope.npy",
    ),
    "no_data": (lambda d: None, [], "no data given; give data.path=<file.npz>"),
    "bad_csv_column": (
        lambda d: (d / "t.csv").write_text("a,b\n" + "1,2\n" * 200),
        ["data.path={d}/t.csv", "data.x_cols=[a]", "data.y_cols=[z]"],
        "t.csv has no column 'z' .it has: a, b.",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, monkeypatch, capsys, case):
    make, args, message = BAD_INPUTS[case]
    make(tmp_path)
    run = tmp_path / "run"
    code = run_inprocess(monkeypatch, *[a.format(d=tmp_path) for a in args], f"hydra.run.dir={run}")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not run.exists()  # no run dir, no mi.json, no event files


def test_nan_rows_can_be_dropped_on_request(tmp_path, monkeypatch, capsys):
    p = gaussian_pairs(400, 1, mi=1.0, seed=0)
    x = p.x.copy()
    x[[3, 30]] = np.nan
    np.savez(tmp_path / "in.npz", x=x, y=p.y)
    run = tmp_path / "run"
    args = [f"data.path={tmp_path}/in.npz", "data.drop_nonfinite=true", *FAST]
    assert run_inprocess(monkeypatch, *args, f"hydra.run.dir={run}") == 0
    record = json.loads((run / "mi.json").read_text())
    assert (
        record["n_dropped"] == 2 and record["n_train"] + record["n_val"] + record["n_eval"] == 398
    )
    assert "dropped 2 non-finite rows" in capsys.readouterr().out


def test_real_console_script_reports_bad_input_with_exit_code_2(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        "dim-mine", f"data.path={tmp_path}/absent.npz", f"hydra.run.dir={run}", real=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: data file not found: {tmp_path}/absent.npz"
    ]
    assert not run.exists()


def test_failure_warnings_go_to_stderr_and_mi_json(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 20))
    np.savez(tmp_path / "in.npz", x=x, y=x + rng.normal(size=(120, 20)))
    run = tmp_path / "run"
    args = [f"data.path={tmp_path}/in.npz", "train.standardize=true", *FAST]
    assert run_inprocess(monkeypatch, *args, f"hydra.run.dir={run}") == 0
    out, err = capsys.readouterr()
    record = json.loads((run / "mi.json").read_text())
    assert record["settings"]["transform"] == "zscore"  # the old switch still works
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert warned == [f"warning: {w}" for w in record["warnings"]]
    assert any("not trustworthy at this sample size" in w for w in warned)
    assert LAST_LINE.match(out.strip().splitlines()[-1])


def test_summary_names_the_kept_critic_and_says_when_no_step_beat_the_start():
    from dim.mine.result import MIEstimate
    from dim.mine.run import summary

    trained = MIEstimate(1.0, 0.02, "mine", n_train=800, n_val=100, n_eval=200, best_step=300)
    assert "kept critic of step 300" in summary(trained)
    start = MIEstimate(1.0, 0.02, "mine", n_train=800, n_val=100, n_eval=200, best_step=0)
    assert "kept the starting critic" in summary(start)
    assert "step 0" not in summary(start)
    ksg = MIEstimate(1.0, 0.02, "ksg", n_train=0, n_val=0, n_eval=200)
    assert "kept" not in summary(ksg)
