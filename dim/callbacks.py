"""TensorBoard visuals: Y / sigmoid(Y) / prior histograms and a grid of training inputs."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only


class TensorBoardVisuals(pl.Callback):
    """Histograms every ``every_n_steps`` optimiser steps; the input grid once per run."""

    def __init__(self, every_n_steps: int = 200, image_grid: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.image_grid = image_grid
        self._grid_done = False
        # Its own generator: drawing prior samples must not move the training RNG (exact resume).
        self._gen = torch.Generator().manual_seed(0)

    @staticmethod
    def _writer(trainer: pl.Trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        writer = self._writer(trainer)
        if writer is None:
            return
        step = trainer.global_step
        x = batch[0]
        if self.image_grid and not self._grid_done:
            from torchvision.utils import make_grid

            grid = make_grid(x[:64].detach().float().cpu(), nrow=8, normalize=True)
            writer.add_image("inputs/train_batch", grid, step)
            self._grid_done = True
        if self.every_n_steps and (step == 1 or step % self.every_n_steps == 0):
            y = getattr(pl_module, "last_y", None)
            if y is None:
                return
            y = y.float().cpu()
            writer.add_histogram("representation/y", y, step)
            writer.add_histogram("representation/sigmoid_y", torch.sigmoid(y), step)
            writer.add_histogram(
                "representation/prior_samples", torch.rand(y.shape, generator=self._gen), step
            )
