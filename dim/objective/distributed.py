"""All-gather with gradients, so MI negatives come from the global batch under DDP.

Every process computes the *same* loss over the gathered global batch.  The backward of the gather
sums the gradient of every process's copy of that loss (all-reduce) and keeps this process's
slice: world_size x dL/d(own shard).  DDP then averages parameter gradients over processes, which
divides the factor back out, so one DDP step equals one single-process step on the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (identity without DDP).

    All processes must hold the same number of rows (training drops the last incomplete batch).
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers (batch-norm running statistics).

    DDP copies them from rank 0 only before a *training* forward, so after the last step of an
    epoch each process holds the statistics of its own last batch.  Evaluating with rank 0's
    makes every process's numbers those of the checkpoint (which rank 0 writes).
    """
    if world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=src)
