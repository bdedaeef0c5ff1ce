"""Training a critic to estimate I(X;Y) from (x, y) pairs (MINE, Belghazi et al. 2018).

Why a plain torch loop and not a LightningModule: the critics here are tiny MLPs on data that
fits in memory as two tensors, so one step takes a few milliseconds; Lightning's per-step hooks,
DataLoader and logging machinery would cost as much as the step itself, and nothing it offers
(multi-device, checkpoint resume) matters for a run that lasts seconds.  The loop below is the
whole algorithm: sample a batch, score positives and negatives, take the bound's loss, step;
every ``eval_every`` steps score the validation split and keep the best critic (early stopping).

The EMA bias correction of MINE lives in :class:`dim.objective.bounds.MineBound`; this module only
switches it between train and eval mode so that evaluation never moves the moving average. The
held-out protocol around this loop (splits, the reported estimate) is :mod:`dim.mine.estimator`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from dim.errors import DimError
from dim.mine.critics import Critic, chunked_pair_scores
from dim.mine.result import CurvePoint
from dim.objective.bounds import get_bound


@dataclass
class TrainConfig:
    """Optimisation settings of the critic (``dim-mine``'s ``train.*``, configs/mine/mine.yaml).

    ``negatives='all'`` scores every pair of a batch (B×B matrix, B−1 negatives per positive, as
    in Poole et al.); ``'shuffle'`` scores each x against ``n_shuffles`` other y's of the batch
    (the MINE paper's shuffled marginal), which is cheaper for a concat critic.
    """

    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.0
    max_steps: int = 1500
    eval_every: int = 100
    patience: int = 5
    min_delta: float = 1e-3
    negatives: str = "all"
    n_shuffles: int = 8
    eval_block: int | None = 256
    grad_clip: float | None = 10.0
    lr_decay: bool = True

    def __post_init__(self) -> None:
        if self.negatives not in ("all", "shuffle"):
            raise DimError(f"negatives must be 'all' or 'shuffle', got '{self.negatives}'")
        for name in ("batch_size", "max_steps", "eval_every", "patience", "n_shuffles"):
            if int(getattr(self, name)) < 1:
                raise DimError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2 or self.lr <= 0:
            raise DimError(f"need batch_size >= 2 and lr > 0, got {self.batch_size}, {self.lr}")


@dataclass
class TrainOutcome:
    """What training returns: the curve, the best step (by validation estimate) and step count."""

    curve: list[CurvePoint] = field(default_factory=list)
    best_step: int = 0
    best_val: float = float("nan")
    steps: int = 0
    stopped_early: bool = False
    diverged: bool = False


class BatchSource(Protocol):
    """Anything that hands out training batches (arrays or a streaming synthetic task)."""

    def batch(self, step: int, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``size`` (x, y) pairs for training step ``step``."""
        ...


class ArraySource:
    """Minibatches drawn from fixed arrays, reshuffled every epoch, last partial batch dropped."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self._order: Tensor | None = None
        self._pos = 0

    def batch(self, step: int, size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """The next ``size`` pairs of the current epoch's random order."""
        size = min(size, len(self.x))
        if self._order is None or self._pos + size > len(self._order):
            self._order = torch.randperm(len(self.x), generator=gen)
            self._pos = 0
        idx = self._order[self._pos : self._pos + size].to(self.x.device)
        self._pos += size
        return self.x[idx], self.y[idx]


def make_bound(name: str, tau: float = 5.0, momentum: float = 0.99) -> Callable:
    """The bound used to train and evaluate; only ``smile`` and ``mine`` take parameters."""
    if name == "smile":
        return get_bound("smile", tau=tau)
    if name == "mine":
        return get_bound("mine", momentum=momentum)
    return get_bound(name)


def batch_scores(
    critic: Critic,
    x: Tensor,
    y: Tensor,
    negatives: str,
    n_shuffles: int,
    gen: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Scores and positive mask for one batch.

    ``all``: the B×B matrix ``T(x_i, y_j)`` with the diagonal positive.  ``shuffle``: a B×(1+k)
    matrix whose column 0 is ``T(x_i, y_i)`` and column c is ``T(x_i, y_{i+o_c})`` for k distinct
    random offsets ``o_c`` in [1, B): every row gets k other y's of the batch, i.e. draws from the
    product of marginals (the MINE paper's shuffled pairs, k of them per positive).
    """
    n = len(x)
    if negatives == "all":
        return critic.pair_scores(x, y), torch.eye(n, dtype=torch.bool, device=x.device)
    k = max(1, min(n_shuffles, n - 1))
    offsets = torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.randperm(n - 1, generator=gen)[:k] + 1]
    )
    idx = ((torch.arange(n)[:, None] + offsets[None, :]) % n).to(x.device)
    scores = critic.candidate_scores(x, y, idx)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[:, 0] = True
    return scores, mask


@torch.no_grad()
def heldout_estimate(
    critic: Critic, bound: Callable, x: Tensor, y: Tensor, block: int
) -> tuple[float, float, list[float]]:
    """Estimate on held-out pairs: mean over blocks of the bound on each block's all-pairs scores.

    Each block of about ``block`` pairs (smaller when fewer than 4 blocks would fit) gives one
    estimate from its all-pairs score matrix (``block − 1`` negatives per positive, so InfoNCE is
    capped at ``log(block)``).  Returns the mean, its standard error across blocks (0 with a
    single block) and the per-block values.
    """
    was_training = critic.training
    critic.eval()
    if isinstance(bound, nn.Module):
        bound.eval()
    # At least 4 blocks (when there are >= 64 pairs) so the standard error means something.
    # Blocks never exceed ``block`` pairs, so InfoNCE stays below log(block).
    n_blocks = max(math.ceil(len(x) / block), min(4, len(x) // 16), 1)
    values = []
    for idx in np.array_split(np.arange(len(x)), n_blocks):
        xb, yb = x[idx], y[idx]
        scores = chunked_pair_scores(critic, xb, yb)
        mask = torch.eye(len(xb), dtype=torch.bool, device=scores.device)
        values.append(float(bound(scores, mask).mi))
    critic.train(was_training)
    if isinstance(bound, nn.Module):
        bound.train(was_training)
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, se, values


def train_critic(
    critic: Critic,
    bound: Callable,
    source: BatchSource,
    val: tuple[Tensor, Tensor] | Callable[[int], tuple[Tensor, Tensor]],
    cfg: TrainConfig,
    seed: int = 0,
    true_mi: Callable[[int], float | None] | None = None,
    on_point: Callable[[CurvePoint], None] | None = None,
    early_stopping: bool = True,
) -> TrainOutcome:
    """Maximise the bound over the critic; keep the critic that scored best on validation pairs.

    Args:
        critic: a critic with ``forward`` (matched rows) and ``pair_scores`` (all pairs).
        bound: from :func:`make_bound`; its ``loss`` is minimised, its ``mi`` is the estimate.
        source: training batches.
        val: validation pairs, or a function of the step returning them (streaming tasks).
        cfg: optimisation settings.
        seed: seeds the batch order (the critic is initialised by the caller).
        true_mi: the analytic MI at a step, if known (only logged).
        on_point: called with each curve point (e.g. to write TensorBoard scalars).
        early_stopping: stop after ``cfg.patience`` evaluations without improvement and restore
            the best critic; off for streaming tasks whose target moves.

    Returns:
        The training curve and bookkeeping; ``critic`` is left at its best state.
    """
    gen = torch.Generator().manual_seed(seed)
    params = list(critic.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_steps, eta_min=cfg.lr / 20)
        if cfg.lr_decay
        else None
    )
    block = cfg.eval_block or cfg.batch_size
    out = TrainOutcome()
    best_state = copy.deepcopy(critic.state_dict())
    best_val, since_best, window = -math.inf, 0, []
    if early_stopping and not callable(val):
        # The untrained critic is a candidate too (for the ``gauss`` critic: the Gaussian one),
        # so training can only improve the kept critic's validation score.
        best_val, _, _ = heldout_estimate(critic, bound, val[0], val[1], block)
        if not math.isfinite(best_val):
            best_val = -math.inf
    critic.train()
    if isinstance(bound, nn.Module):
        bound.train()
    for step in range(1, cfg.max_steps + 1):
        x, y = source.batch(step, cfg.batch_size, gen)
        scores, mask = batch_scores(critic, x, y, cfg.negatives, cfg.n_shuffles, gen)
        res = bound(scores, mask)
        if not torch.isfinite(res.loss):
            out.diverged = True
            break  # diverged: keep the best critic seen so far
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        window.append(float(res.mi))
        out.steps = step
        if step % cfg.eval_every and step != cfg.max_steps:
            continue
        vx, vy = val(step) if callable(val) else val
        val_mi, _, _ = heldout_estimate(critic, bound, vx, vy, block)
        if not math.isfinite(val_mi):
            out.diverged = True
            val_mi = -math.inf
        shown = val_mi if math.isfinite(val_mi) else None
        point = CurvePoint(step, float(np.mean(window)), shown, true_mi(step) if true_mi else None)
        window = []
        out.curve.append(point)
        if on_point is not None:
            on_point(point)
        if val_mi > best_val + cfg.min_delta or not early_stopping:
            best_val, since_best, out.best_step = val_mi, 0, step
            best_state = copy.deepcopy(critic.state_dict())
        else:
            since_best += 1
            if since_best >= cfg.patience:
                out.stopped_early = True
                break
    critic.load_state_dict(best_state)
    out.best_val = best_val
    return out
