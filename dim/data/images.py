"""The training DataModule: train/val loaders over any source of the registry (``sources.py``).

The training order and augmentation depend only on ``(seed, epoch)`` (``sampling.py``), and the
position in the stream is part of every checkpoint.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from dim.data.base import dataset_len
from dim.data.sampling import ResumableSampler, SeededSamples, StreamPosition
from dim.data.sources import build_splits
from dim.data.transforms import normalisation
from dim.data.views import TwoViews, ViewOptions
from dim.errors import DimError

__all__ = ["ImageDataModule"]


class ImageDataModule(pl.LightningDataModule):
    """Train/val loaders over any registered source; drops the last incomplete training batch.

    The training order and augmentation depend only on ``(seed, epoch)`` (``dim/data/sampling.py``)
    and the position in the stream is part of the checkpoint, so a resume from any step, even
    mid-epoch, continues with exactly the batches a run that never stopped would have seen.

    With ``views`` (a method's ``method.views``), every training item is two augmented views
    ``(2, C, H, W)`` of one image (:mod:`dim.data.views`); validation stays one image.
    """

    def __init__(
        self, cfg: dict[str, Any], seed: int = 0, views: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.seed = int(seed)
        self.views = ViewOptions.from_config(views)
        self.position = StreamPosition()
        self.splits = build_splits(self.cfg)
        self.batch_size = int(self.cfg.get("batch_size", 64))
        if self.batch_size < 2:
            raise DimError(
                f"data.batch_size must be >= 2 (negatives need other images), got {self.batch_size}"
            )
        n_train = dataset_len(self.splits.train)
        if n_train < self.batch_size:
            raise DimError(
                f"the training split has {n_train} images, fewer than one batch of "
                f"{self.batch_size}; lower data.batch_size"
            )

    @property
    def info(self) -> dict[str, Any]:
        s = self.splits
        return {"channels": s.channels, "image_size": s.image_size, "num_classes": s.num_classes}

    def setup(self, stage: str | None = None) -> None:
        self.position.trainer = self.trainer

    def _loader(self, ds: Dataset, sampler: ResumableSampler | None = None) -> DataLoader:
        workers = int(self.cfg.get("num_workers", 0))
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=bool(self.cfg.get("pin_memory", False)),
            # worker seeds from here, not from the global RNG (which the checkpoint restores)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = ResumableSampler(
            self.splits.train,
            self.batch_size,
            self.position,
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )
        train = self.splits.train
        if self.views is not None:
            train = TwoViews(train, self.views, self.view_stats)
        return self._loader(SeededSamples(train), sampler)

    @property
    def view_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` per channel of the training images (what the views un-normalise)."""
        cfg = {**self.cfg, "channels": self.splits.channels}
        return normalisation(cfg, str(self.cfg.get("name")))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val)

    def state_dict(self) -> dict[str, Any]:
        return self.position.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position.load_state_dict(state)
