"""What TensorBoard shows first: the HParams columns (experiment records, read back through the
hparams plugin's own GetExperiment handler) and the Custom Scalars layout, from real event files."""

from __future__ import annotations

import json
import re

from hparams_helpers import hparams_columns
from torch.utils.tensorboard.writer import FileWriter

from dim.monitor.records import DASHBOARD, DASHBOARD_CATEGORY
from dim.run.hparams import session_records, write_sweep_record

CONSTANTS = {f"model.key_{i:02d}": i for i in range(12)} | {"data.name": "digits"}


def fake_job(job, hparams, metrics, overrides):
    """A finished job of a sweep as dim-train leaves it: session records, metrics.json, Hydra's
    record of its command line."""
    (job / "tensorboard").mkdir(parents=True)
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    writer = FileWriter(str(job / "tensorboard"))
    for record in session_records(hparams):
        writer.add_summary(record)
    writer.close()
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics}))


def test_a_two_key_sweep_shows_its_swept_keys_then_metrics_then_constants(tmp_path):
    sweep = tmp_path / "sweep"
    metrics = {
        "train/loss/encoder_total": 1.0, "val/mi/local": 2.0, "val/knn/acc_y": 0.5,
        "val/probe/acc_conv": 0.6, "val/probe/acc_y": 0.7, "epoch": 0,
    }  # fmt: skip
    jobs = [(b, lr) for b in ("jsd", "infonce") for lr in (1e-4, 2e-4)]
    for i, (bound, lr) in enumerate(jobs):
        hparams = {**CONSTANTS, "optim.lr": lr, "bound.name": bound, "a.first": "same"}
        hparams["optim.d_lr"] = lr  # follows optim.lr (an interpolation): not a swept key
        given = ["data=digits", f"bound={bound}", f"optim.lr={lr}"]
        fake_job(sweep / str(i), hparams, metrics, given)
    written = write_sweep_record(sweep, ["val/mi/1t5", "val/probe/acc_y"])
    assert written is not None and written.parent == sweep / "tensorboard"
    names, tags, differs = hparams_columns(sweep)
    assert names[:2] == ["bound.name", "optim.lr"] and differs == ["bound.name", "optim.lr"]
    assert names[2:] == sorted(["a.first", "optim.d_lr", *CONSTANTS])  # then the others
    assert tags == [
        "val/probe/acc_y", "val/knn/acc_y", "val/mi/local", "val/probe/acc_conv",
        "train/loss/encoder_total", "val/mi/1t5",  # the runs' own first, then the known ones
    ]  # fmt: skip
    # a sweep finished again (a job rerun) replaces its record rather than adding one
    write_sweep_record(sweep)
    assert len(list((sweep / "tensorboard").iterdir())) == 1


def test_a_single_run_shows_its_command_line_keys_first(tiny_run):
    run, _ = tiny_run
    names, tags, differs = hparams_columns(run)
    assert {"data.name", "data.num_samples", "model.mi_units", "trainer.max_epochs"} <= set(differs)
    assert not {"optim.lr", "bound.name", "trainer.accelerator"} & set(differs)
    assert names[: len(differs)] == sorted(differs)
    assert set(names[len(differs) :]) >= {"optim.lr", "bound.name"}
    assert tags[:2] == ["val/probe/acc_y", "val/knn/acc_y"] and tags[2] == "val/mi/local"
    assert "val/mi/1t5" in tags  # AMDIM's, so that an AMDIM run beside it keeps its columns


def _layout(logdir):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == metadata.CONFIG_SUMMARY_TAG:
                    layout = layout_pb2.Layout()
                    layout.ParseFromString(value.tensor.string_val[0])
                    return layout
    return None


def _scalar_tags(logdir):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tags = set()
    for path in logdir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            tags |= {
                v.tag
                for v in event.summary.value
                if v.metadata.plugin_data.plugin_name == "scalars"
            }
    return tags


def test_every_run_writes_the_dim_dashboard_and_each_chart_has_curves(tiny_run):
    run, _ = tiny_run
    layout = _layout(run / "tensorboard")
    assert layout is not None
    (category,) = layout.category
    assert category.title == DASHBOARD_CATEGORY
    charts = {c.title: list(c.multiline.tag) for c in category.chart}
    assert charts == DASHBOARD
    tags = _scalar_tags(run / "tensorboard")

    def shown(title):
        return {t for t in tags if any(re.search(p, t) for p in charts[title])}

    assert {"train/mi/local", "val/mi/local"} <= shown("MI estimate per term (train, val)")
    accuracy = shown("online probe and kNN accuracy per layer")
    assert {
        "val/probe/acc_y",
        "val/probe/acc_conv",
        "val/knn/acc_y",
        "train/probe/acc_y",
    } <= accuracy
    assert {"train/loss/encoder_total", "val/loss/local"} <= shown("losses")
