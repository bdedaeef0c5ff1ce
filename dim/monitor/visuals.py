"""The monitoring callbacks of ``dim-train`` (the reliability ones are in
``dim/run/reliability.py``).

- :class:`TensorBoardVisuals`: Y / sigmoid(Y) / prior histograms and a grid of training inputs;
- :class:`KNNMonitor`: kNN accuracy of the frozen features every few epochs;
- :class:`PriorMonitor`: how closely sigmoid(Y) matches the prior, in the same cadence;
- :class:`EmbeddingProjector`: a TensorBoard projector of Y at the end of training.

The last two read the data module's splits (``trainer.datamodule.splits``) and the module's
``encoder``, encode with the encoder in eval mode (frozen, no gradient) and restore its mode.
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torch.utils.data import Subset

from dim.eval.features import TAPS, Features, extract_features
from dim.eval.knn import knn_accuracy


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

            if x.dim() == 5:  # view pairs (AMDIM): each image's two views side by side
                x = x[:32].flatten(0, 1)
            grid = make_grid(x[:64].detach().float().cpu(), nrow=8, normalize=True)
            writer.add_image("inputs/train_batch", grid, step)
            self._grid_done = True
        if self.every_n_steps and (step == 1 or step % self.every_n_steps == 0):
            y = getattr(pl_module, "last_y", None)
            if y is None:
                return
            y = y.float().cpu()
            # NaN rows of a step before the non-finite check stops the run (it runs every
            # log_every_n_steps steps): not drawable, and that check names them
            y = y[torch.isfinite(y).all(1)]
            if len(y) == 0:
                return
            writer.add_histogram("representation/y", y, step)
            writer.add_histogram("representation/sigmoid_y", torch.sigmoid(y), step)
            writer.add_histogram(
                "representation/prior_samples", torch.rand(y.shape, generator=self._gen), step
            )


def _splits(trainer: pl.Trainer):
    datamodule = getattr(trainer, "datamodule", None)
    splits = getattr(datamodule, "splits", None)
    if splits is None:  # a wrapper such as DeviceDataModule keeps the splits on its ``base``
        splits = getattr(getattr(datamodule, "base", None), "splits", None)
    return splits


def interleave(gathered: torch.Tensor, n: int) -> torch.Tensor:
    """``(world, per_rank, ...)`` rows of strided shards (rank r holds r, r + world, ...) back
    into dataset order, dropping the padding: the first ``n`` rows."""
    return gathered.transpose(0, 1).reshape(-1, *gathered.shape[2:])[:n]


def _due(every_n_epochs: int, trainer: pl.Trainer) -> bool:
    """A monitor's turn: every ``every_n_epochs`` epochs and after the last one (0 = never)."""
    if every_n_epochs <= 0 or trainer.sanity_checking:
        return False
    epoch = trainer.current_epoch + 1
    max_epochs = trainer.max_epochs or -1  # -1: bounded by max_steps, not epochs
    last = 0 < max_epochs <= epoch
    return last or epoch % every_n_epochs == 0


def _encoder(pl_module: pl.LightningModule) -> nn.Module:
    """The encoder of a method module (:class:`dim.methods.base.MethodModule`)."""
    encoder = pl_module.encoder
    assert isinstance(encoder, nn.Module)
    return encoder


def _shared_features(
    trainer: pl.Trainer, pl_module: pl.LightningModule, dataset, limit: int
) -> Features:
    """Features of the first ``limit`` images, each process encoding its strided share.

    Kept until the next epoch starts, so the monitors that run at the same validation end (kNN,
    prior) encode the validation images once.
    """
    key = (trainer.global_step, id(dataset), int(limit))
    cache: dict[tuple[int, int, int], Features] = getattr(pl_module, "_monitor_features", {})
    if key not in cache:
        cache = {k: v for k, v in cache.items() if k[0] == trainer.global_step}  # this step's
        cache[key] = _encode_shared(trainer, pl_module, dataset, limit)
        pl_module._monitor_features = cache  # type: ignore[assignment]
    return cache[key]


def _encode_shared(
    trainer: pl.Trainer, pl_module: pl.LightningModule, dataset, limit: int
) -> Features:
    n = min(len(dataset), int(limit))
    world, rank = trainer.world_size, trainer.global_rank
    share = Subset(dataset, range(rank, n, world)) if world > 1 else dataset
    feats = extract_features(_encoder(pl_module), share, 256, pl_module.device, n)
    if world == 1:
        return feats
    per_rank = -(-n // world)

    def gather(t: torch.Tensor) -> torch.Tensor:
        padded = torch.cat([t, t.new_zeros((per_rank - len(t), *t.shape[1:]))])
        gathered = trainer.strategy.all_gather(padded.to(pl_module.device))  # NCCL: on the GPU
        return interleave(gathered, n).cpu()

    return Features(gather(feats.conv), gather(feats.fc), gather(feats.y), gather(feats.labels))


class _Monitor(pl.Callback):
    """A monitor run at validation end; the features it shares are dropped when training resumes."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.__dict__.pop("_monitor_features", None)


class KNNMonitor(_Monitor):
    """Cosine kNN accuracy of the frozen features, logged as ``val/knn/acc_{conv,fc,y}``.

    Runs at the end of validation every ``every_n_epochs`` epochs and after the last epoch, so the
    final numbers land in ``metrics.json``.  The neighbour bank is the first ``max_train``
    training images, the queries the first ``max_val`` validation images.  Under DDP each process
    encodes every ``world_size``-th of those images and the features are all-gathered, so the
    encoding work is split and every process computes the same numbers.

    Args:
        every_n_epochs: how often (0 = never).
        k: neighbours per query.
        temperature: vote weight exp(sim / temperature); None = uniform votes.
        max_train: size of the neighbour bank.
        max_val: number of queries.
        taps: features to monitor.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        k: int = 20,
        temperature: float | None = 0.07,
        max_train: int = 5000,
        max_val: int = 2000,
        taps: tuple[str, ...] = TAPS,
    ) -> None:
        self.every_n_epochs = int(every_n_epochs)
        self.k = int(k)
        self.temperature = temperature
        self.max_train, self.max_val = int(max_train), int(max_val)
        self.taps = tuple(taps)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        splits = _splits(trainer)
        if not _due(self.every_n_epochs, trainer) or splits is None or not splits.num_classes:
            return
        device = pl_module.device
        bank = _shared_features(trainer, pl_module, splits.eval_dataset("train"), self.max_train)
        queries = _shared_features(trainer, pl_module, splits.val, self.max_val)
        bank, queries = bank.labelled(), queries.labelled()
        if len(bank) == 0 or len(queries) == 0:
            return
        for tap in self.taps:
            acc = knn_accuracy(
                bank.flat(tap),
                bank.labels,
                queries.flat(tap),
                queries.labels,
                self.k,
                int(splits.num_classes),
                self.temperature,
                device,
            )
            # Identical on every process (same gathered features); sync_dist is bookkeeping.
            pl_module.log(f"val/knn/acc_{tap}", acc, on_epoch=True, sync_dist=True)


class PriorMonitor(_Monitor):
    """How closely sigmoid(Y) matches the uniform prior, in the kNN monitor's cadence:
    ``val/prior/ks`` (mean per-coordinate KS distance) and ``val/prior/c2st`` (held-out accuracy
    of a fresh classifier telling sigmoid(Y) from prior samples; 0.5 = matched), on the first
    ``max_val`` validation images (:mod:`dim.eval.prior`).  Only for models with a prior term.

    D's own accuracy cannot show this: a discriminator that collapsed to a constant scores 0.5.
    When its logits barely spread (``val/prior/d_logit_std`` below ``collapse_std``) while the
    classifier still tells Y from the prior, a warning says so once.
    """

    def __init__(
        self, every_n_epochs: int = 1, max_val: int = 2000, collapse_std: float = 0.05
    ) -> None:
        self.every_n_epochs = int(every_n_epochs)
        self.max_val = int(max_val)
        self.collapse_std = float(collapse_std)
        self.warned = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        splits = _splits(trainer)
        if splits is None or getattr(pl_module, "gamma", 0) <= 0:
            return
        if not _due(self.every_n_epochs, trainer):
            return
        from dim.eval.prior import prior_match

        y = _shared_features(trainer, pl_module, splits.val, self.max_val).y.numpy()
        m = prior_match(y, seeds=1, seed=0, max_iter=50)  # identical on every process
        pl_module.log("val/prior/ks", m["ks"], on_epoch=True, sync_dist=True)
        pl_module.log("val/prior/c2st", m["c2st"][0], on_epoch=True, sync_dist=True)
        spread = trainer.callback_metrics.get("val/prior/d_logit_std")
        if spread is not None and float(spread) < self.collapse_std and m["c2st"][0] > 0.75:
            if not self.warned and trainer.is_global_zero:
                print(
                    f"warning: the prior discriminator has collapsed (logit spread "
                    f"{float(spread):.3f}) while a fresh classifier tells sigmoid(Y) from the "
                    f"prior with accuracy {m['c2st'][0]:.2f}: Y is not being matched to the "
                    "prior; see docs/math.md (the prior game)",
                    file=sys.stderr,
                    flush=True,
                )
            self.warned = True


class EmbeddingProjector(pl.Callback):
    """At the end of training, a TensorBoard projector of Y for the first ``num_images`` images
    of the validation split, with their labels and image sprites (tag ``y``)."""

    def __init__(self, num_images: int = 500) -> None:
        self.num_images = int(num_images)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from dim.eval.projector import projector_from_dataset

        splits = _splits(trainer)
        writer = next(
            (lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None
        )
        if splits is None or writer is None or self.num_images <= 0 or len(splits.val) == 0:
            return
        with torch.no_grad():
            projector_from_dataset(
                writer,
                _encoder(pl_module),
                splits.val,
                self.num_images,
                pl_module.device,
                trainer.global_step,
            )
