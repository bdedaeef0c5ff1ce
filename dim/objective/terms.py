"""The three terms of the DIM objective: local MI, global MI and prior matching (docs/math.md).

Objectives join critics (:mod:`dim.nets.critics`) and bounds (:mod:`dim.objective.bounds`).
``gather`` maps a per-process tensor to the global batch (all-gather with gradients under DDP,
identity otherwise), so negatives always come from the global batch and every process computes the
same loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dim.nets.critics import GlobalCritic, LocalCritic, local_pos_mask
from dim.objective.bounds import Bound, score_penalty, tanh_clip


def _identity(t: Tensor) -> Tensor:
    return t


@dataclass
class TermOutput:
    loss: Tensor  # what the optimiser minimises for this term (unweighted)
    mi: Tensor  # detached MI estimate in nats (DV value for JSD)


@dataclass
class ScoreOptions:
    """Score-magnitude controls (AMDIM): tanh clipping and a squared-score penalty."""

    tclip: float | None = None
    score_reg: float = 0.0


def apply_bound(scores: Tensor, mask: Tensor, bound: Bound, opts: ScoreOptions) -> TermOutput:
    out = bound(tanh_clip(scores, opts.tclip), mask)
    loss = out.loss
    if opts.score_reg > 0:
        loss = loss + opts.score_reg * score_penalty(scores)
    return TermOutput(loss=loss, mi=out.mi)


def sample_locations(n_locations: int, samples: int | None, device=None) -> Tensor | None:
    """Indices of ``samples`` random locations (shared by all images), or None to keep all."""
    if samples is None or samples <= 0 or samples >= n_locations:
        return None
    return torch.randperm(n_locations, device=device)[:samples]


def local_mi(
    critic: LocalCritic,
    local_map: Tensor,
    y: Tensor,
    bound: Bound,
    *,
    locations: Tensor | None = None,
    gather: Callable[[Tensor], Tensor] = _identity,
    opts: ScoreOptions | None = None,
) -> TermOutput:
    """Local MI between Y_m and every location of the local map (official all-pairs negatives).

    Row m of the score matrix holds image m's own locations as positives and every location of
    every other image in the (global) batch as negatives: B x L candidates per Y.
    """
    local = local_map.flatten(2).transpose(1, 2)  # (B, L, C)
    if locations is not None:
        local = local[:, locations]
    local_enc = gather(critic.encode_local(local))
    y_enc = gather(critic.encode_y(y))
    scores = critic.score(local_enc, y_enc)
    mask = local_pos_mask(
        y_enc.shape[0], local_enc.shape[0], local_enc.shape[1], device=scores.device
    )
    return apply_bound(scores, mask, bound, opts or ScoreOptions())


def global_mi(
    critic: GlobalCritic,
    local_map: Tensor,
    y: Tensor,
    bound: Bound,
    *,
    gather: Callable[[Tensor], Tensor] = _identity,
    opts: ScoreOptions | None = None,
) -> TermOutput:
    """Global MI between the whole image (through the critic's head on the local map) and Y."""
    x_enc = gather(critic.encode_x(local_map))
    y_enc = gather(critic.encode_y(y))
    scores = critic.score(x_enc, y_enc)
    mask = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    return apply_bound(scores, mask, bound, opts or ScoreOptions())


def _prior_input(y: Tensor, space: str) -> Tensor:
    """What D sees of Y: sigmoid(Y) against U(0, 1) (``space="sigmoid"``, the paper) or Y itself
    against the standard logistic, logit(U) (``space="logit"``).  The two priors are the same
    distribution seen through the bijection sigmoid; in logit space the encoder's gradient is not
    multiplied by sigmoid'(Y), which vanishes in the tails the prior needs."""
    if space == "sigmoid":
        return torch.sigmoid(y)
    if space == "logit":
        return y
    raise ValueError(f"prior space must be 'sigmoid' or 'logit'; got '{space}'")


def prior_encoder_loss(disc: nn.Module, y: Tensor, space: str = "sigmoid") -> Tensor:
    """The encoder's side of the prior game: non-saturating E[softplus(-D(sigmoid(Y)))].

    D's parameters are frozen while this is differentiated, so only the encoder gets gradient.
    """
    flags = [p.requires_grad for p in disc.parameters()]
    for p in disc.parameters():
        p.requires_grad_(False)
    try:
        return F.softplus(-disc(_prior_input(y, space))).mean()
    finally:
        for p, flag in zip(disc.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@dataclass
class DiscriminatorOutput:
    loss: Tensor
    accuracy: Tensor
    gradient_penalty: Tensor
    logit_std: Tensor  # spread of D's logits over real and fake: ~0 means D collapsed


def prior_discriminator_loss(
    disc: nn.Module,
    y: Tensor,
    gp_weight: float = 1.0,
    generator=None,
    gp_on: str = "both",
    space: str = "sigmoid",
) -> DiscriminatorOutput:
    """D's side: tell uniform prior samples V from sigmoid(Y) (Y detached here), plus a gradient
    penalty ||grad_v D||^2 averaged over real and fake inputs.

    Minimises -E_V[log D(v)] - E_P[log(1 - D(sigmoid(y)))] written with softplus on logits, which
    is exact and never takes log(0).
    """
    fake = _prior_input(y.detach(), space)
    real = torch.rand(fake.shape, device=fake.device, dtype=fake.dtype, generator=generator)
    if space == "logit":  # the standard logistic: logit of U(0, 1), kept off +-inf
        real = torch.logit(real, eps=1e-6)
    use_gp = gp_weight > 0 and torch.is_grad_enabled()  # no penalty in validation (no_grad)
    inputs = torch.cat([real, fake]).requires_grad_(use_gp)
    logits = disc(inputs)
    real_logit, fake_logit = logits[: len(real)], logits[len(real) :]
    loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
    gp = torch.zeros((), device=y.device)
    if use_gp:
        (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
        sq = grad.pow(2).sum(1)
        if gp_on == "both":
            gp = sq.mean()  # mean over real and fake together
        elif gp_on == "real":
            gp = sq[: len(real)].mean()  # R1 (Mescheder et al. 2018): prior samples only
        else:
            raise ValueError(f"gp_on must be 'both' or 'real'; got '{gp_on}'")
        loss = loss + gp_weight * gp
    acc = ((real_logit > 0).float().mean() + (fake_logit < 0).float().mean()) / 2
    return DiscriminatorOutput(
        loss=loss,
        accuracy=acc.detach(),
        gradient_penalty=gp.detach(),
        logit_std=logits.detach().float().std(),
    )
