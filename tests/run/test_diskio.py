"""A full disk while writing checkpoints, TensorBoard events, metrics.json, encoder.pt and the
outputs of dim-eval / dim-embed / dim-mine: one line naming the file and the cause, a non-zero
exit, the last good checkpoint intact, and resume works once space is free.

The disk is a small tmpfs filled up on demand where one can be mounted, else an injected ENOSPC
(tests/disk_helpers.py)."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY, run_cli
from disk_helpers import ENOSPC_TEXT, full_disk  # noqa: F401  (a fixture)

import dim.training as training
from dim.run.diskio import WriteError, atomic_write

# no kNN monitor or projector: only what the failure needs (seconds on 2 idle cores)
LEAN = ["callbacks.knn.every_n_epochs=0", "callbacks.projector.num_images=0"]
# 32 images / batch 16: 2 steps an epoch
SMALL = [*TINY, *LEAN, "data.num_samples=32", "data.val_size=16"]
TWO_EPOCHS = [*SMALL, "trainer.max_epochs=2", "trainer.enable_progress_bar=false"]


def one_line(proc) -> str:
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr[
        -3000:
    ]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    return last


class FillAt(pl.Callback):
    """Fills the disk once training reaches ``step``: after that step (``point="step"``), or as
    the checkpoint of that step is about to be written (``point="checkpoint"``)."""

    def __init__(self, disk, step: int, point: str) -> None:
        self.disk, self.step, self.point = disk, step, point

    def _fill(self, trainer, point: str) -> None:
        if point == self.point and trainer.global_step == self.step and not self.disk.full:
            self.disk.fill()

    def on_train_batch_end(self, trainer, *args) -> None:
        self._fill(trainer, "step")

    def on_save_checkpoint(self, trainer, *args) -> None:
        self._fill(trainer, "checkpoint")


def no_partial_files(run) -> bool:
    return not [p for p in run.rglob("*") if ".tmp-" in p.name]


def test_disk_full_while_writing_a_checkpoint_keeps_the_last_one_and_resume_finishes(
    full_disk,  # noqa: F811
    monkeypatch,
):
    run = full_disk.root / "run"
    build = training.build_callbacks
    fill = FillAt(full_disk, step=4, point="checkpoint")  # the end of the second epoch
    monkeypatch.setattr(training, "build_callbacks", lambda *a: [*build(*a), fill])
    proc = run_cli("dim-train", *TWO_EPOCHS, f"hydra.run.dir={run}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc)
    assert line == (
        f"error: cannot write {run}/checkpoints/epoch0001-step4.ckpt: {ENOSPC_TEXT}; "
        f"{run}/checkpoints/last.ckpt is intact; free space, then continue with: "
        f"dim-train resume={run}"
    )
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    assert no_partial_files(run) and not (run / ".lock").exists()
    monkeypatch.undo()
    full_disk.free()
    proc = run_cli("dim-train", f"resume={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 4
    assert (run / "encoder.pt").is_file()


def test_disk_full_in_the_middle_of_an_epoch_is_one_line(full_disk, monkeypatch):  # noqa: F811
    """Whichever write meets the full disk first (TensorBoard's event thread, as a rule, whose
    own traceback is kept quiet) is named; no checkpoint exists yet, and the line says so."""
    run = full_disk.root / "run"
    build = training.build_callbacks
    fill = FillAt(full_disk, step=1, point="step")
    monkeypatch.setattr(training, "build_callbacks", lambda *a: [*build(*a), fill])
    proc = run_cli("dim-train", *TWO_EPOCHS, f"hydra.run.dir={run}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc)
    assert line.startswith("error: cannot write ") and str(run) in line, line
    assert f"{ENOSPC_TEXT}; no checkpoint was written yet; free space and start the run " in line
    assert no_partial_files(run) and not (run / ".lock").exists()


def test_disk_full_when_writing_metrics_and_encoder_then_resume_writes_them(
    full_disk,  # noqa: F811
    monkeypatch,
):
    run = full_disk.root / "run"
    final = training._final_metrics

    def fill_then_metrics(trainer):  # training is over: the next writes are ours
        full_disk.fill()
        return final(trainer)

    monkeypatch.setattr(training, "_final_metrics", fill_then_metrics)
    proc = run_cli("dim-train", *SMALL, f"hydra.run.dir={run}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc)
    assert line.startswith(f"error: cannot write {run}/metrics.json: {ENOSPC_TEXT}"), line
    assert f"continue with: dim-train resume={run}" in line
    assert not (run / "metrics.json").exists() and no_partial_files(run)
    monkeypatch.undo()
    full_disk.free()
    proc = run_cli("dim-train", f"resume={run}")
    assert proc.returncode == 0 and "Nothing to train" in proc.stdout, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2
    assert torch.load(run / "encoder.pt", weights_only=True)["format"] == "dim-encoder/1"


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial_one(
    full_disk,  # noqa: F811
):
    path = full_disk.root / "last.ckpt"
    atomic_write(path, lambda f: torch.save({"step": torch.tensor(1)}, f))
    full_disk.fill()
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        atomic_write(path, lambda f: torch.save({"step": torch.zeros(10**6)}, f))
    assert torch.load(path, weights_only=True)["step"].item() == 1
    assert sorted(p.name for p in full_disk.root.iterdir() if "filler" not in p.name) == [
        "last.ckpt"
    ]


@pytest.mark.parametrize("command", ["dim-embed", "dim-eval", "dim-mine"])
def test_disk_full_for_the_other_commands_is_one_line(tiny_run, full_disk, command):  # noqa: F811
    root = full_disk.root
    full_disk.fill()
    args = {
        "dim-embed": [f"run={tiny_run[0]}", "split=test", f"out={root}/f.npz"],
        "dim-eval": [f"run={tiny_run[0]}", "eval=knn", f"hydra.run.dir={root}/eval"],
        "dim-mine": [
            "data=gaussian",
            "data.n=1000",
            "model.hidden=32",
            "train.max_steps=40",
            "train.eval_every=20",
            f"hydra.run.dir={root}/mine",
        ],
    }[command]
    proc = run_cli(command, *args, "hydra.output_subdir=null")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line(proc)
    # the first file each command writes: dim-eval's and dim-mine's is their run dir's lock
    # (written with os.write, which the fault injection does not reach: there, TensorBoard's)
    lock = full_disk.real
    what = {
        "dim-embed": f"{root}/f.npz",
        "dim-eval": f"{root}/eval" if lock else f"TensorBoard events under {root}/eval/tensorboard",
        "dim-mine": f"{root}/mine" if lock else f"TensorBoard events under {root}/mine/tensorboard",
    }[command]
    assert line == f"error: cannot write {what}: {ENOSPC_TEXT}", line
    written = [p for p in root.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert [p.name for p in written if "filler" not in p.name] == []  # nothing half-written
