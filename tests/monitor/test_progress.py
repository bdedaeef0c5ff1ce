"""Which progress display a run gets: the rich bar (without ``v_num``) in a terminal, plain
lines otherwise (the lines themselves are checked on real runs in tests/cli/test_sweeps.py)."""

from __future__ import annotations

import io

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from dim.monitor.progress import LineProgress, QuietRichProgressBar, progress_callback


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_rich_bar_and_a_file_gets_lines():
    assert isinstance(progress_callback({}, _Terminal()), QuietRichProgressBar)
    lines = progress_callback({"every_n_seconds": 5, "every_n_steps": 100}, io.StringIO())
    assert isinstance(lines, LineProgress)
    assert (lines.every_n_seconds, lines.every_n_steps) == (5.0, 100)


def test_the_rich_bar_leaves_out_v_num(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="", version="tensorboard")
    trainer = pl.Trainer(logger=logger, enable_checkpointing=False, enable_model_summary=False)
    assert RichProgressBar().get_metrics(trainer, None)["v_num"] == "oard"  # the noise
    assert "v_num" not in QuietRichProgressBar().get_metrics(trainer, None)
