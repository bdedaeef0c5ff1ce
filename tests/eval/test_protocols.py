"""dim-eval: the protocols, the report (eval.json, markdown, TensorBoard) and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import run_cli
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dim.errors import DimError
from dim.eval.knn import knn_predict
from dim.eval.msssim import msssim_settings
from dim.eval.ndm import ndm_value, shuffle_coordinates, train_ndm
from dim.eval.report import ProtocolResult, Stat, markdown_table, to_json
from dim.eval.runner import evaluate
from dim.eval.source import data_config, load_source

pytest_plugins = ["eval_helpers"]

# Every protocol, cut down to seconds: the report's shape is what is checked here.
QUICK = [
    "max_train=200",
    "max_test=64",
    "num_threads=1",
    "eval.nonlinear.epochs=2",
    "eval.linear.epochs=2",
    "eval.linear.seeds=2",
    "eval.fewshot.seeds=2",
    "eval.fewshot.steps=30",
    "eval.mine.train.max_steps=20",
    "eval.mine.train.eval_every=10",
    "eval.ndm.steps=10",
    "eval.prior.seeds=1",
    "eval.msssim.epochs=1",
]
KEYS = {
    "nonlinear": {"conv", "fc", "y"},
    "linear": {"conv", "fc", "y"},
    "knn": {"k20/conv", "k20/fc", "k20/y"},
    "fewshot": {f"{n}shot/{t}" for n in (5, 10) for t in ("conv", "fc", "y")},
    "mine": {"y"},
    "ndm": {"sigmoid/y", "raw/y"},
    "prior": {"ks/y", "c2st/y"},
    "msssim": {"y", "mse/y"},
}


def test_default_eval_is_the_papers_nonlinear_classifier():
    with initialize_config_module("dim.configs", version_base="1.3"):
        cfg = compose("eval", overrides=["run=somewhere"])
    assert list(cfg.eval) == ["nonlinear"]
    c = cfg.eval.nonlinear
    assert (c.hidden, c.dropout, c.lr, list(c.milestones), c.gamma) == (
        200,
        0.1,
        1e-4,
        [50, 100],
        0.1,
    )
    assert list(cfg.features) == ["conv", "fc", "y"]


def test_training_logs_knn_monitor_and_embedding_projector(digits_run):
    metrics = json.loads((digits_run / "metrics.json").read_text())["metrics"]
    for tap in ("conv", "fc", "y"):
        assert 0.5 < metrics[f"val/knn/acc_{tap}"] <= 1.0, metrics  # digits: far above chance
    # the prior monitor (the quickstart has a prior term): KS in [0, 1], C2ST above chance
    assert 0.0 < metrics["val/prior/ks"] < 1.0 and 0.5 <= metrics["val/prior/c2st"] <= 1.0
    tb = digits_run / "tensorboard"
    assert (tb / "projector_config.pbtxt").is_file()
    labels = next(tb.rglob("metadata.tsv")).read_text().splitlines()
    assert len(labels) == 297 and set(labels) == {str(c) for c in range(10)}
    assert next(tb.rglob("sprite.png")).stat().st_size > 0


def test_all_protocols_write_json_markdown_and_tensorboard(digits_run, tmp_path):
    out = tmp_path / "ev"
    proc = run_cli("dim-eval", f"run={digits_run}", "eval=all", *QUICK, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "eval.json").read_text())
    for key in ("run", "checkpoint", "init", "encoder", "data", "n_train", "n_test", "results"):
        assert key in doc, key
    assert doc["init"] == "trained" and doc["data"]["name"] == "digits"
    assert (doc["n_train"], doc["n_test"]) == (200, 64)
    assert list(doc["results"]) == list(KEYS)  # canonical order
    for name, keys in KEYS.items():
        res = doc["results"][name]
        assert {"metric", "settings", "seconds", "values"} <= set(res), name
        assert set(res["values"]) == keys, name
        for stat in res["values"].values():
            assert set(stat) == {"mean", "std", "values"} and math.isfinite(stat["mean"])
            if res["metric"] == "accuracy":
                assert 0.0 <= stat["mean"] <= 1.0
    assert len(doc["results"]["linear"]["values"]["y"]["values"]) == 2  # one per seed
    assert 0.0 <= doc["results"]["msssim"]["values"]["y"]["mean"] <= 1.0
    # The markdown table: in eval.md and on stdout, one row per protocol variant.
    table = (out / "eval.md").read_text()
    assert "| protocol" in table and "| fewshot 5shot" in table and "| ndm sigmoid" in table
    assert "| nonlinear" in proc.stdout and str(out / "eval.json") in proc.stdout
    # The same numbers in TensorBoard.
    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for name, keys in KEYS.items():
        for key in keys:
            assert f"eval/{name}/{key}" in scalars, (name, key)
    value = ea.Scalars("eval/knn/k20/y")[0].value
    assert value == pytest.approx(doc["results"]["knn"]["values"]["k20/y"]["mean"], abs=1e-6)


def test_fewshot_on_y_clearly_beats_a_random_encoder(digits_run, tmp_path, one_thread):
    """After one quickstart epoch, 5- and 10-shot probes on Y beat init=random by > 4 points.

    Measured (seeds fixed): trained 84.9 / 90.8 %, random 77.0 / 84.0 % (5 / 10 shots).
    """
    means = {}
    for init in ("trained", "random"):
        settings = {"run": str(digits_run), "init": init, "features": ["y"]}
        (tmp_path / init).mkdir()
        doc = evaluate(settings, {"fewshot": {}}, tmp_path / init)
        values = doc["results"]["fewshot"]["values"]
        means[init] = {k: v["mean"] for k, v in values.items()}
        assert all(len(v["values"]) == 5 for v in values.values())  # 5 seeds
    for key in ("5shot/y", "10shot/y"):
        assert means["trained"][key] - means["random"][key] > 0.04, means


@pytest.mark.parametrize(
    "args, message",
    [
        (["run={tmp}/missing"], "no such file or directory"),
        (["run={tmp}", "eval=linear,bogus"], "unknown eval 'bogus'"),
    ],
)
def test_bad_input_one_line_error_nothing_written(tmp_path, args, message, one_line_error):
    args = [a.format(tmp=tmp_path) for a in args]
    out = tmp_path / "ev"
    proc = run_cli("dim-eval", *args, f"hydra.run.dir={out}")
    assert message in one_line_error(proc)
    assert proc.returncode == 2 and not out.exists()


def test_data_config_comes_from_the_run_or_the_command_line(digits_run, tmp_path):
    run_data = load_source(digits_run).run_data
    assert run_data["name"] == "digits"
    assert data_config(run_data, None, {"val_size": 100})["val_size"] == 100
    with pytest.raises(DimError, match="not a key of the run's data config"):
        data_config(run_data, None, {"no_such_key": 1})
    bare = tmp_path / "last.ckpt"  # a checkpoint away from its run dir: no data config
    bare.write_bytes((digits_run / "checkpoints/last.ckpt").read_bytes())
    assert load_source(bare).run_data is None
    with pytest.raises(DimError, match="pass data=<name>"):
        data_config(None, None, {})
    assert data_config(None, {"name": "digits"}, {}) == {"name": "digits"}


def test_existing_eval_dir_is_not_overwritten(tmp_path, one_line_error):
    (tmp_path / "eval.json").write_text("{}")
    proc = run_cli("dim-eval", "run=x", f"hydra.run.dir={tmp_path}")
    assert "already holds an eval.json" in one_line_error(proc)
    assert (tmp_path / "eval.json").read_text() == "{}"


def test_knn_cosine_vote():
    train = torch.tensor([[1.0, 0.1], [2.0, 0.0], [0.0, 1.0], [0.1, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[5.0, 0.2], [0.2, 0.5]])  # scale does not matter for cosine
    assert knn_predict(train, labels, test, k=2, num_classes=2).tolist() == [0, 1]
    assert knn_predict(train, labels, test, k=1, num_classes=2, temperature=None).tolist() == [0, 1]


def test_ndm_separates_dependent_from_independent_coordinates(one_thread):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(2000, 4, generator=gen)
    shuffled = shuffle_coordinates(y, gen)
    assert torch.equal(shuffled.sort(0).values, y.sort(0).values)  # marginals kept
    dependent = torch.cat([y[:, :2], y[:, :2] + 0.05 * y[:, 2:]], 1)
    cfg = {"steps": 150, "batch_size": 1000, "lr": 3e-3, "hidden": [64], "bound": "mine"}
    values = {}
    for name, data in (("independent", y), ("dependent", dependent)):
        disc = train_ndm(data[:1000], cfg, seed=0)
        values[name] = ndm_value(disc, data[1000:], seed=1)
    assert abs(values["independent"]) < 0.1 and values["dependent"] > 0.5, values


def test_msssim_settings_fit_small_images():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    for size, scales in ((32, 3), (64, 4)):
        kernel, betas = msssim_settings(size)
        assert kernel == 7 and len(betas) == scales and sum(betas) == pytest.approx(1.0)
        x = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0))
        same = multiscale_structural_similarity_index_measure(
            x, x, kernel_size=kernel, betas=betas, data_range=1.0
        )
        assert float(same) == pytest.approx(1.0, abs=1e-4)
    assert len(msssim_settings(256, kernel_size=11)[1]) == 5  # the standard setting


def test_report_formats_percent_and_spread():
    results = {
        "linear": ProtocolResult("accuracy", {"y": Stat.of([0.9, 0.8]), "conv": Stat.of([0.5])}),
        "ndm": ProtocolResult("nats", {"sigmoid/y": Stat(float("nan"))}),
    }
    table = markdown_table(results)
    header = table.splitlines()[0]
    assert header.split("|")[3].strip() == "conv" and header.split("|")[4].strip() == "y"
    assert "85.00 ± 7.07" in table and "50.00 " in table and "| ndm sigmoid" in table
    doc = to_json(results, {"run": "r"})
    assert doc["results"]["ndm"]["values"]["sigmoid/y"]["mean"] is None  # NaN -> null
    assert doc["results"]["linear"]["values"]["y"]["values"] == [0.9, 0.8]
