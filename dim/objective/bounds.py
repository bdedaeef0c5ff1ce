"""Lower bounds on mutual information, as pure functions of critic scores.

Every bound takes ``scores`` (critic values T of any shape) and a boolean ``pos_mask`` of the same
shape that marks the *joint* (positive) pairs; every other entry is a *product-of-marginals*
(negative) pair.  For InfoNCE the last axis is the candidate axis: each row is one query (e.g. a
global vector Y_m) and holds its positives and negatives (e.g. every location of every image).

Each bound returns a :class:`BoundOutput` with a ``loss`` to minimise (carries gradient) and ``mi``,
a detached estimate of I(X;Y) in nats.  JSD is not itself an MI value, so its ``mi`` is the DV
bound evaluated on the same scores (docs/math.md#mi-bounds).

Formulas (J = joint pairs, M = marginal pairs, sp = softplus):

- DV:       I >= E_J[T] - log E_M[e^T]
- MINE:     DV value; gradient of log E_M[e^T] uses a moving average of E_M[e^T] (Belghazi 2018)
- NWJ:      I >= E_J[T] - E_M[e^(T-1)]                       (a.k.a. MINE-f)
- JSD:      maximise E_J[-sp(-T)] - E_M[sp(T)]
- InfoNCE:  per positive, -log softmax over {positive, row negatives}; I >= log K - loss
- SMILE(t): DV with negatives clipped to [-t, t], trained with the JSD gradient (Song & Ermon 2020)
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class BoundOutput:
    """What every bound returns: ``loss`` (minimise it) and ``mi`` (detached estimate, nats)."""

    loss: Tensor
    mi: Tensor


_TRUSTED = contextvars.ContextVar("trusted_masks", default=False)


@contextlib.contextmanager
def trusted_masks() -> Iterator[None]:
    """Within this block the bounds skip the tests of their masks' values: the training step's
    masks come from the objectives, which never leave a side empty, and a test of values reads
    them back to the host (a device sync; no read at all is allowed in a captured step)."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _values_checked(mask: Tensor) -> bool:
    # Checked where it is free: on an accelerator this test would wait for the device on every
    # call; the masks built there come from the objectives, which never leave a side empty.
    return mask.device.type == "cpu" and not _TRUSTED.get()


def _check(scores: Tensor, pos_mask: Tensor) -> tuple[Tensor, Tensor]:
    if scores.shape != pos_mask.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and pos_mask {tuple(pos_mask.shape)} differ"
        )
    pos_mask = pos_mask.bool()
    if _values_checked(pos_mask) and (not pos_mask.any() or pos_mask.all()):
        raise ValueError("a bound needs at least one positive and one negative pair")
    return scores, pos_mask


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum()


def log_mean_exp(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """log(mean(exp(x))) over the masked entries, computed stably (max shift via logsumexp)."""
    if mask is None:
        return torch.logsumexp(x.reshape(-1), 0) - math.log(x.numel())
    x = x.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(x.reshape(-1), 0) - torch.log(mask.sum().to(x.dtype))


def dv_value(scores: Tensor, pos_mask: Tensor) -> Tensor:
    """The Donsker-Varadhan bound E_J[T] - log E_M[e^T] (with gradient)."""
    return _masked_mean(scores, pos_mask) - log_mean_exp(scores, ~pos_mask)


def jsd_value(scores: Tensor, pos_mask: Tensor) -> Tensor:
    """The Jensen-Shannon objective E_J[-sp(-T)] - E_M[sp(T)] (with gradient)."""
    return _masked_mean(-F.softplus(-scores), pos_mask) - _masked_mean(
        F.softplus(scores), ~pos_mask
    )


def dv_bound(scores: Tensor, pos_mask: Tensor) -> BoundOutput:
    scores, pos_mask = _check(scores, pos_mask)
    value = dv_value(scores, pos_mask)
    return BoundOutput(loss=-value, mi=value.detach())


def nwj_bound(scores: Tensor, pos_mask: Tensor) -> BoundOutput:
    scores, pos_mask = _check(scores, pos_mask)
    value = _masked_mean(scores, pos_mask) - _masked_mean(torch.exp(scores - 1.0), ~pos_mask)
    return BoundOutput(loss=-value, mi=value.detach())


def jsd_bound(scores: Tensor, pos_mask: Tensor) -> BoundOutput:
    scores, pos_mask = _check(scores, pos_mask)
    return BoundOutput(loss=-jsd_value(scores, pos_mask), mi=dv_value(scores, pos_mask).detach())


def infonce_bound(scores: Tensor, pos_mask: Tensor) -> BoundOutput:
    """InfoNCE with every positive of a row competing against all negatives of that row.

    The log-sum-exp of a row's negatives is computed once and shared by its positives, so memory
    stays at the size of ``scores`` (no positives x negatives broadcast).
    """
    scores, pos_mask = _check(scores, pos_mask)
    n_neg = (~pos_mask).sum(-1, keepdim=True)
    if _values_checked(pos_mask) and (n_neg[pos_mask.any(-1, keepdim=True)] == 0).any():
        raise ValueError("InfoNCE: every row that holds a positive needs at least one negative")
    neg_lse = torch.logsumexp(scores.masked_fill(pos_mask, float("-inf")), dim=-1, keepdim=True)
    if positives_only(scores.device):
        loss = -_positive_log_probs(scores, pos_mask, neg_lse).mean()
    else:
        loss = -_masked_mean(_all_log_probs(scores, neg_lse), pos_mask)
    # mean over the positives of log(1 + the row's negatives), from per-row counts
    n_pos = pos_mask.sum(-1, keepdim=True).to(scores.dtype)
    log_k = (n_pos * torch.log1p(n_neg.to(scores.dtype))).sum() / n_pos.sum()
    return BoundOutput(loss=loss, mi=(log_k - loss).detach())


def positives_only(device: torch.device) -> bool:
    """Whether InfoNCE scores only the positives (the CPU) or every entry (accelerators)."""
    return device.type == "cpu"


def _all_log_probs(scores: Tensor, neg_lse: Tensor) -> Tensor:
    """log softmax of every entry against its row's negatives (positives are read through a
    mask): fixed shapes, so accelerators need no sync and a captured step stays capturable."""
    return scores - torch.logaddexp(scores, neg_lse)


def _positive_log_probs(scores: Tensor, pos_mask: Tensor, neg_lse: Tensor) -> Tensor:
    """The positives' entries of :func:`_all_log_probs`, computed for the positives only.

    Boolean indexing has a data-dependent shape (a device sync on accelerators), but on the CPU
    it skips the full-size logaddexp and its backward: the positives are a few percent of an
    AMDIM or DIM(L) score matrix, and this made a basic32 AMDIM step's bounds ~40 % faster.
    """
    pos = scores[pos_mask]
    return pos - torch.logaddexp(pos, neg_lse.expand_as(scores)[pos_mask])


def smile_bound(scores: Tensor, pos_mask: Tensor, tau: float = 5.0) -> BoundOutput:
    """SMILE: value = DV with clipped negatives; gradient = the JSD objective's gradient."""
    scores, pos_mask = _check(scores, pos_mask)
    clipped = torch.where(pos_mask, scores, scores.clamp(-tau, tau))
    dv = dv_value(clipped, pos_mask)
    js = jsd_value(scores, pos_mask)
    value = js + (dv - js).detach()
    return BoundOutput(loss=-value, mi=dv.detach())


class MineBound(nn.Module):
    """MINE: the DV bound with the moving-average correction of its gradient's bias.

    The minibatch gradient of log E_M[e^T] is grad(E_B[e^T]) / E_B[e^T]; MINE replaces the
    denominator by an exponential moving average over minibatches.  The EMA is kept in log space
    (stable for large scores) in a buffer, so it is saved in checkpoints and resumes exactly.
    ``momentum`` is the weight of the old average (0.99 as in the public MINE code).
    The reported ``mi`` is still the plain DV value of the batch.
    """

    log_ema: Tensor  # buffers registered in __init__
    initialized: Tensor

    def __init__(self, momentum: float = 0.99) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MINE momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("log_ema", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, scores: Tensor, pos_mask: Tensor) -> BoundOutput:
        scores, pos_mask = _check(scores, pos_mask)
        joint = _masked_mean(scores, pos_mask)
        batch_lme = log_mean_exp(scores, ~pos_mask)
        if self.training:
            with torch.no_grad():
                new = batch_lme.detach().to(self.log_ema.dtype)
                # log(m * ema + (1 - m) * batch), in log space; the batch itself the first time
                # (chosen on the device: testing the flag on the host would read it back)
                moved = torch.logaddexp(
                    self.log_ema + math.log(self.momentum), new + math.log1p(-self.momentum)
                )
                self.log_ema.copy_(torch.where(self.initialized, moved, new))
                self.initialized.fill_(True)
        # exp(lme - log_ema) has gradient (E_B[e^T] / ema) * grad(lme) = grad(E_B[e^T]) / ema.
        surrogate = torch.exp(batch_lme - self.log_ema.detach().to(batch_lme.dtype))
        loss = -(joint - surrogate)
        return BoundOutput(loss=loss, mi=(joint - batch_lme).detach())


def tanh_clip(scores: Tensor, limit: float | None) -> Tensor:
    """Soft clipping of critic scores to (-limit, limit) (AMDIM's ``tclip``); None = no clip."""
    if limit is None or limit <= 0:
        return scores
    return limit * torch.tanh(scores / limit)


def score_penalty(scores: Tensor) -> Tensor:
    """AMDIM's score regulariser: mean of squared scores (weight it, e.g. 5e-2)."""
    return scores.pow(2).mean()


Bound = Callable[[Tensor, Tensor], BoundOutput]

BOUNDS: dict[str, Callable[..., Bound]] = {
    "dv": lambda: dv_bound,
    "nwj": lambda: nwj_bound,
    "mine_f": lambda: nwj_bound,
    "jsd": lambda: jsd_bound,
    "infonce": lambda: infonce_bound,
    "smile": lambda tau=5.0: partial(smile_bound, tau=tau),
    "mine": lambda momentum=0.99: MineBound(momentum),
}


def bound_names() -> tuple[str, ...]:
    """Names of every bound :func:`get_bound` builds, sorted (the one list; do not restate it)."""
    return tuple(sorted(BOUNDS))


def get_bound(name: str, **kwargs: float) -> Bound:
    """Build a bound by name; stateful ones (``mine``) come back as an ``nn.Module``."""
    if name not in BOUNDS:
        raise ValueError(f"unknown bound '{name}'; choose one of: {', '.join(bound_names())}")
    return BOUNDS[name](**kwargs)
