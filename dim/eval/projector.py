"""TensorBoard embedding projector: Y of some images, with their labels and image sprites."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def sprite_images(images: Tensor) -> Tensor:
    """Images as RGB in [0, 1] (greyscale repeated), min-max scaled over the whole batch."""
    images = images.detach().float().cpu()
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    elif images.shape[1] != 3:
        images = (
            images[:, :3]
            if images.shape[1] > 3
            else images.mean(1, keepdim=True).repeat(1, 3, 1, 1)
        )
    lo, hi = images.min(), images.max()
    return (images - lo) / (hi - lo).clamp_min(1e-8)


def write_projector(
    writer: Any,
    y: Tensor,
    labels: Tensor,
    images: Tensor | None = None,
    step: int = 0,
    tag: str = "y",
) -> None:
    """Add an embedding of ``y`` (N, D) to a SummaryWriter, labelled and with sprites.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``.
        y: the representation of N images.
        labels: their labels (-1 = unlabelled, shown as ``unlabelled``).
        images: the images (N, C, H, W) for the sprite, or None.
        step: the global step the embedding belongs to.
        tag: the embedding's name in TensorBoard.
    """
    metadata = ["unlabelled" if int(v) < 0 else str(int(v)) for v in labels]
    writer.add_embedding(
        y.detach().float().cpu(),
        metadata=metadata,
        label_img=None if images is None else sprite_images(images),
        global_step=step,
        tag=tag,
    )
    writer.flush()


@torch.no_grad()
def projector_from_dataset(
    writer: Any, encoder: torch.nn.Module, dataset: Any, size: int, device: Any, step: int = 0
) -> int:
    """Encode the first ``size`` images of ``dataset`` and write their projector; returns N."""
    from dim.eval.features import extract_features, stack_images

    feats = extract_features(encoder, dataset, 256, device, limit=size)
    write_projector(writer, feats.y, feats.labels, stack_images(dataset, limit=size), step)
    return len(feats)
