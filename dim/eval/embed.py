"""Features of a dataset split as arrays: what ``dim-embed`` writes.

The ``.npz`` holds ``conv``, ``fc``, ``y`` (float32, first axis = images) and ``labels`` (int64,
-1 when unlabelled), written atomically; optionally a TensorBoard projector of ``y``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dim.eval.features import extract_features, resolve_device
from dim.eval.source import build_eval_splits, data_config, load_source
from dim.run.diskio import atomic_write, writing


def embedding_arrays(
    run: Any,
    split: str = "test",
    init: str = "trained",
    seed: int = 0,
    data_group: dict[str, Any] | None = None,
    data_patches: dict[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 256,
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """The arrays :func:`write_embedding` writes, in memory (arguments as there)."""
    return _embed(run, split, init, seed, data_group, data_patches, device, batch_size, limit)[0]


def _embed(
    run: Any,
    split: str,
    init: str,
    seed: int,
    data_group: dict[str, Any] | None,
    data_patches: dict[str, Any] | None,
    device: str,
    batch_size: int,
    limit: int | None,
) -> tuple[dict[str, np.ndarray], Any, Any, torch.device]:
    """(arrays, the source's encoder, the split's dataset, the device it ran on)."""
    source = load_source(run, init, seed)
    data = data_config(source.run_data, data_group, data_patches)
    splits = build_eval_splits(data, source.config)
    dataset = splits.eval_dataset(split)
    dev = resolve_device(device)
    feats = extract_features(source.encoder, dataset, batch_size, dev, limit)
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
    split: str = "test",
    init: str = "trained",
    seed: int = 0,
    data_group: dict[str, Any] | None = None,
    data_patches: dict[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 256,
    limit: int | None = None,
    num_threads: int | None = None,
    projector: Path | None = None,
    projector_size: int = 500,
) -> dict[str, np.ndarray]:
    """Encode ``split`` (``train``: the labelled training images, un-augmented; ``test``) of the
    run's data (or ``data_group`` / ``data_patches``) and write the arrays to ``out``.

    Args:
        run: run dir, checkpoint or ``encoder.pt``.
        init: ``trained``, or ``random`` for a fresh encoder of the same architecture.
        limit: encode only the first ``limit`` images.
        projector: a folder for a TensorBoard projector of ``y`` (its first ``projector_size``
            images), or None.

    Returns:
        The arrays written.
    """
    if num_threads:
        torch.set_num_threads(int(num_threads))
    arrays, encoder, dataset, dev = _embed(
        run, split, init, seed, data_group, data_patches, device, batch_size, limit
    )
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
