"""Features of a dataset split as arrays: what ``dim-embed`` writes.

The ``.npz`` holds ``conv``, ``fc``, ``y`` (float32, first axis = images) and ``labels`` (int64,
-1 when unlabelled), written atomically; optionally a TensorBoard projector of ``y``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dim.eval.features import extract_features, resolve_device
from dim.eval.source import build_eval_splits, data_config, load_source
from dim.run.diskio import atomic_write, writing


@dataclass(frozen=True)
class EmbedOptions:
    """What to encode and how (the keyword arguments of :func:`embedding_arrays` and
    :func:`write_embedding`).

    Attributes:
        split: ``train`` (the labelled training images, un-augmented) or ``test``.
        init: ``trained``, or ``random`` for a fresh encoder of the same architecture.
        data_group / data_patches: another dataset than the run's own (``dim-embed data=...``).
        limit: encode only the first ``limit`` images.
    """

    split: str = "test"
    init: str = "trained"
    seed: int = 0
    data_group: dict[str, Any] | None = None
    data_patches: dict[str, Any] | None = None
    device: str = "auto"
    batch_size: int = 256
    limit: int | None = None


def embedding_arrays(run: Any, **options: Any) -> dict[str, np.ndarray]:
    """The arrays :func:`write_embedding` writes, in memory (``options``: :class:`EmbedOptions`)."""
    return _embed(run, EmbedOptions(**options))[0]


def _embed(run: Any, opt: EmbedOptions) -> tuple[dict[str, np.ndarray], Any, Any, torch.device]:
    """(arrays, the source's encoder, the split's dataset, the device it ran on)."""
    source = load_source(run, opt.init, opt.seed)
    data = data_config(source.run_data, opt.data_group, opt.data_patches)
    splits = build_eval_splits(data, source.config)
    dataset = splits.eval_dataset(opt.split)
    dev = resolve_device(opt.device)
    feats = extract_features(source.encoder, dataset, opt.batch_size, dev, opt.limit)
    arrays: dict[str, np.ndarray] = {
        "conv": feats.conv.numpy().astype(np.float32),
        "fc": feats.fc.numpy().astype(np.float32),
        "y": feats.y.numpy().astype(np.float32),
        "labels": feats.labels.numpy().astype(np.int64),
    }
    return arrays, source.encoder, dataset, dev


def write_embedding(
    run: Any,
    out: Path,
    num_threads: int | None = None,
    projector: Path | None = None,
    projector_size: int = 500,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Encode a split of the run's data (or another dataset) and write the arrays to ``out``.

    Args:
        run: run dir, checkpoint or ``encoder.pt``.
        options: what to encode and how, :class:`EmbedOptions`.
        projector: a folder for a TensorBoard projector of ``y`` (its first ``projector_size``
            images), or None.

    Returns:
        The arrays written.
    """
    if num_threads:
        torch.set_num_threads(int(num_threads))
    arrays, encoder, dataset, dev = _embed(run, EmbedOptions(**options))
    # mypy matches the **dict against savez's ``allow_pickle: bool`` too; the keys are names
    atomic_write(out, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    print(
        f"wrote {out}: " + ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in arrays.items())
    )
    if projector is not None:
        from torch.utils.tensorboard import SummaryWriter

        from dim.eval.projector import projector_from_dataset

        with writing(projector), SummaryWriter(str(projector)) as writer:
            n = projector_from_dataset(writer, encoder, dataset, projector_size, dev)
        print(f"projector of {n} points: tensorboard --logdir {projector}")
    return arrays
