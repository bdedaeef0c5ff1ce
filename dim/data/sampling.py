"""Training order that resumes exactly, even from a checkpoint taken in the middle of an epoch.

The order of an epoch and the random augmentation of every sample are functions of
``(seed, epoch)`` alone: not of the global RNG, of the number of DataLoader workers, or of when
Lightning happens to create the iterator.  A checkpoint records where the stream stands (epoch and
batches already trained, :class:`StreamPosition`); on resume the epoch's order is rebuilt and the
trained batches are skipped, so a run stopped anywhere and resumed sees exactly the batches, and
the augmented images, of a run that never stopped.

Under DDP each process takes every ``world_size``-th sample of the shared permutation, so the
global batch of ``P`` processes with batch ``B`` holds the same images as one process with batch
``P * B`` (in another order).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from dim.data.base import dataset_len

_SEED_HIGH = 2**62


def epoch_order(n: int, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
    """``(permutation, sample_seeds)`` of one epoch: ``sample_seeds[i]`` seeds sample ``i``."""
    mixed = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    g = torch.Generator().manual_seed(int(mixed) % _SEED_HIGH)
    return torch.randperm(n, generator=g), torch.randint(0, _SEED_HIGH, (n,), generator=g)


def shard(perm: Tensor, rank: int, world_size: int) -> Tensor:
    """This process's samples: every ``world_size``-th, dropping the tail that does not divide."""
    per_rank = len(perm) // world_size
    return perm[: per_rank * world_size][rank::world_size]


class StreamPosition:
    """Where the training stream stands; saved in checkpoints by the DataModule that owns it.

    ``state_dict`` reads Lightning's progress counters at save time: the epoch in progress and the
    batches it has trained (an epoch whose batches are all trained counts as the start of the
    next; one that ``max_steps`` ended before its last batch, as the middle of that epoch).  After
    ``load_state_dict`` the next epoch started is that one, skipping those batches; later epochs
    (and every epoch of a run that was not resumed) follow ``trainer.current_epoch``.
    """

    def __init__(self) -> None:
        self.trainer: Any = None
        self._resume: tuple[int, int] | None = None
        self._next_epoch = 0

    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None:
            return {}
        epochs = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress
        if epochs.started == epochs.processed:  # between epochs (e.g. at the end of training)
            done = int(batches.current.processed)
            # ended before its last batch (max_steps), the test of dim.run.reliability's
            # epoch_cut_short (this package imports no other): that epoch goes on
            if 0 < done < trainer.num_training_batches and not batches.is_last_batch:
                return {"epoch": int(epochs.processed) - 1, "batches_done": done}
            return {"epoch": int(epochs.processed), "batches_done": 0}
        epoch = int(epochs.processed)  # the epoch in progress
        done = int(batches.current.processed)
        if done >= trainer.num_training_batches:  # saved in the epoch-end hooks
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "epoch" in state and "batches_done" in state:  # else: a checkpoint from before this
            self._resume = (int(state["epoch"]), int(state["batches_done"]))

    def start_epoch(self) -> tuple[int, int]:
        """``(epoch, batches to skip)`` for an iteration over the training data starting now."""
        if self._resume is not None:
            (epoch, skip), self._resume = self._resume, None
        elif self.trainer is not None:
            epoch, skip = int(self.trainer.current_epoch), 0
        else:  # used outside a Trainer: each pass is the next epoch
            epoch, skip = self._next_epoch, 0
        self._next_epoch = epoch + 1
        return epoch, skip


class ResumableSampler(DistributedSampler):
    """Yields ``(index, sample_seed)`` for :class:`SeededSamples`: this process's shard of the
    epoch's permutation, after the batches already trained.

    A DistributedSampler so that Lightning keeps it as it is under DDP (it shards by itself);
    ``len`` stays the whole shard, which is what Lightning counts an epoch's batches by.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        position: StreamPosition,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.position = batch_size, position

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch, skip = self.position.start_epoch()
        perm, seeds = epoch_order(dataset_len(self.dataset), self.seed, epoch)
        mine = shard(perm, self.rank, self.num_replicas)[skip * self.batch_size :]
        return iter(zip(mine.tolist(), seeds[mine].tolist(), strict=True))


class SeededSamples(Dataset):
    """A dataset whose item ``(index, seed)`` is drawn with the CPU torch RNG seeded by ``seed``
    (torchvision's random crop / flip use it), leaving the caller's RNG state as it was."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return dataset_len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        rng = torch.default_generator  # the CPU generator only (fork_rng costs 4x as much)
        state = rng.get_state()
        rng.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            rng.set_state(state)
