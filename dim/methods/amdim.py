"""Augmented Multiscale DIM (Bachman, Hjelm & Buchwalter, NeurIPS 2019) on the shared base.

Each training item is two augmented views of one image (:mod:`dim.data.views`).  One encoder pass
over both views gives, per view, the global feature ``y`` (AMDIM's 1x1 map) and two feature maps,
each embedded into the same ``y_dim``-dimensional score space by a 1x1 net.  The loss is the sum of
three InfoNCE terms, each averaged over both directions (view 1 -> view 2 and 2 -> 1):

- ``1t5``: global feature of one view -> every location of the other view's ``conv`` map (5x5);
- ``1t7``: global feature -> every location of the ``local`` map (7x7);
- ``5t5``: one random location of the ``conv`` map -> every location of the other's ``conv`` map;

with scores ``<s, t> / sqrt(y_dim)``, tanh-clipped (``model.tclip``) and regularised by
``model.score_reg * mean(raw score^2)``.  A source's positives are all locations of the same
image's other view; its negatives every location of every other image of the *global* batch
(gathered under DDP).  Validation uses the image itself as both views and every location of the
``conv`` map as a ``5t5`` source, so it is deterministic.  docs/methods.md#amdim has the details.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dim.errors import DimError
from dim.methods.base import Groups, MethodModule, make_bound
from dim.nets.amdim import EmbeddingNet
from dim.nets.encoders import build_encoder, encoder_config
from dim.objective.bounds import Bound, infonce_bound, score_penalty, tanh_clip
from dim.objective.distributed import gather_with_grad
from dim.objective.terms import ScoreOptions, TermOutput, apply_bound

#: term -> (source tap, target tap); ``y`` is a vector, the others are maps
TERMS: dict[str, tuple[str, str]] = {
    "1t5": ("y", "conv"),
    "1t7": ("y", "local"),
    "5t5": ("conv", "conv"),
}


def _identity(t: Tensor) -> Tensor:
    return t


def view_nce(
    source: Tensor,
    target_map: Tensor,
    bound: Bound,
    *,
    gather: Callable[[Tensor], Tensor] = _identity,
    opts: ScoreOptions | None = None,
    temperature: float | None = None,
) -> TermOutput:
    """One AMDIM term in one direction.

    Args:
        source: ``(B, K, D)`` source vectors, K per image (one view).
        target_map: ``(B, D, H, W)`` target map of the other view.
        bound: the bound (AMDIM: InfoNCE, each positive against the row's negatives).
        gather: all-gather with gradients (DDP) so negatives span the global batch.
        opts: tanh clipping and score regulariser.
        temperature: None scores ``<s, t> / sqrt(D)`` (AMDIM); a number scores the cosine of
            ``s`` and ``t`` divided by it (SimCLR's normalised, temperature-scaled scores).

    Row (b, k) of the score matrix has image b's H * W target locations as positives and every
    location of every other image as negatives.
    """
    src = gather(source)
    trg = gather(target_map.flatten(2).transpose(1, 2))  # (B, L, D)
    n, per_image, dim = src.shape
    locations = trg.shape[1]
    src, trg = src.reshape(-1, dim), trg.reshape(-1, dim)
    if temperature is None:
        scores = src @ trg.T / math.sqrt(dim)
    else:
        scores = F.normalize(src, dim=1) @ F.normalize(trg, dim=1).T / temperature
    row_image = torch.arange(n, device=scores.device).repeat_interleave(per_image)
    cand_image = torch.arange(n, device=scores.device).repeat_interleave(locations)
    mask = row_image[:, None] == cand_image[None, :]
    if bound is infonce_bound and n > 1:
        return block_infonce(scores.float(), mask, n, opts or ScoreOptions())
    return apply_bound(scores.float(), mask, bound, opts or ScoreOptions())


def block_infonce(scores: Tensor, mask: Tensor, n: int, opts: ScoreOptions) -> TermOutput:
    """``apply_bound(scores, mask, infonce_bound, opts)`` for AMDIM's block-structured scores.

    Image b's positives are the diagonal block b of ``scores`` viewed as ``(n, K, n, L)``, so
    they are read as a strided view: no boolean indexing (a search for the mask's entries and a
    scatter in the backward) and no full-size ``logaddexp``.  Same value as the generic path up
    to the order of the sums."""
    clipped = tanh_clip(scores, opts.tclip)
    per_image, locations = scores.shape[0] // n, scores.shape[1] // n
    pos = torch.diagonal(clipped.view(n, per_image, n, locations), dim1=0, dim2=2)  # (K, L, n)
    neg_lse = torch.logsumexp(clipped.masked_fill(mask, float("-inf")), dim=-1)  # (n * K,)
    neg_lse = neg_lse.view(n, per_image).T.unsqueeze(1)  # (K, 1, n)
    loss = -(pos - torch.logaddexp(pos, neg_lse)).mean()
    mi = (math.log1p((n - 1) * locations) - loss).detach()  # every row: (n - 1) L negatives
    if opts.score_reg > 0:
        loss = loss + opts.score_reg * score_penalty(scores)
    return TermOutput(loss=loss, mi=mi)


class AMDIMModule(MethodModule):
    """AMDIM: multiscale InfoNCE between two views (see the module docstring).

    Args:
        model: encoder options (``encoder``, ``y_dim`` = n_rkhs, ``ndf``, ``n_depth``), ``tclip``,
            ``score_reg``, ``temperature`` (None: AMDIM's scaled dot product; a number: cosine
            scores divided by it), ``source_locations`` (``random`` | ``all``: 5t5 sources in
            training).
        bound: the MI bound (``infonce`` in the paper).
        objective: weights ``w_1t5``, ``w_1t7``, ``w_5t5`` of the terms.
        optim: learning rate, betas, weight decay, warm-up and schedule.
        data: ``channels``, ``image_size`` and ``num_classes`` (None = unlabelled: no probe).
    """

    METRICS = {
        **{f"{t}_loss": f"loss/{t}" for t in TERMS},
        **{f"{t}_mi": f"mi/{t}" for t in TERMS},
        "encoder_loss": "loss/encoder_total",
    }
    PROGRESS = ("mi/1t5", "probe/acc_y")

    def build(self, groups: Groups) -> None:
        model, bound, objective, data = groups
        unknown = sorted(set(objective) - {f"w_{t}" for t in TERMS})
        if unknown:
            raise DimError(
                f"objective.{unknown[0]} belongs to another method; AMDIM's objective has "
                "w_1t5, w_1t7, w_5t5 (objective=amdim)"
            )
        self.weights = {t: float(objective.get(f"w_{t}", 1.0)) for t in TERMS}
        if min(self.weights.values()) < 0 or sum(self.weights.values()) == 0:
            raise DimError(
                "objective weights w_1t5, w_1t7, w_5t5 must be >= 0 and not all zero; got "
                + ", ".join(f"w_{t}={w}" for t, w in self.weights.items())
            )
        self.encoder = build_encoder(**encoder_config(model, data))
        dim = self.encoder.y_dim
        self.embed = nn.ModuleDict(
            {
                "conv": EmbeddingNet(self.encoder.conv_shape[0], dim),
                "local": EmbeddingNet(self.encoder.local_shape[0], dim),
            }
        )
        self.bound = make_bound(bound)
        self.score_opts = ScoreOptions(model.get("tclip"), float(model.get("score_reg", 0.0)))
        temperature = model.get("temperature")
        self.temperature = None if temperature is None else float(temperature)
        if self.temperature is not None and not self.temperature > 0:
            raise DimError(f"model.temperature must be > 0 or null, got {temperature}")
        self.source_locations = str(model.get("source_locations", "random"))
        if self.source_locations not in ("random", "all"):
            raise DimError(
                f"model.source_locations must be random or all, got '{self.source_locations}'"
            )
        self.add_probes(model, data)
        self.use_speed_options(model, list(self.embed.values()))

    def _sources(self, feats: dict[str, Tensor], tap: str) -> Tensor:
        """``(B, K, D)`` sources: the global feature (K = 1), or locations of a map: one random
        location per image in training (AMDIM), every location in validation."""
        if tap == "y":
            return feats["y"].unsqueeze(1)
        flat = feats[tap].flatten(2).transpose(1, 2)  # (B, L, D)
        if self.training and self.source_locations == "random":
            pick = torch.randint(0, flat.shape[1], (flat.shape[0],), device=flat.device)
            return flat[torch.arange(flat.shape[0], device=flat.device), pick].unsqueeze(1)
        return flat

    def compute_losses(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Every loss and metric of a batch of view pairs ``(B, 2, C, H, W)`` or of single
        images ``(B, C, H, W)`` (validation: the image is both views)."""
        # One image as both views outside training: batch norm uses its running statistics, so
        # both views' features are the same and so are both directions of every term (5t5 reads
        # every location, not a random one): encode once and score one direction (half the work
        # of a validation step, the same values).
        same = x.dim() == 4 and not self.training
        first, second = (x, x) if x.dim() == 4 else (x[:, 0], x[:, 1])
        both = first if same else torch.cat([first, second])
        if self.channels_last:
            both = both.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(both)  # one pass: batch-norm statistics over both views
        self.last_y = feats["y"].detach()  # for the TensorBoard histograms callback
        scored = {"y": feats["y"], **{k: net(feats[k]) for k, net in self.embed.items()}}
        n = first.shape[0]
        one = {k: v[:n] for k, v in scored.items()}
        views = [one, one if same else {k: v[n:] for k, v in scored.items()}]
        out: dict[str, Tensor] = {"encoder_loss": torch.zeros((), device=x.device)}
        for term, (src, trg) in TERMS.items():
            if self.weights[term] == 0:
                continue
            there = view_nce(
                self._sources(views[0], src), views[1][trg], self.bound,
                gather=gather_with_grad, opts=self.score_opts, temperature=self.temperature,
            )  # fmt: skip
            back = there if same else view_nce(
                self._sources(views[1], src), views[0][trg], self.bound,
                gather=gather_with_grad, opts=self.score_opts, temperature=self.temperature,
            )  # fmt: skip
            out[f"{term}_loss"] = (there.loss + back.loss) / 2
            out[f"{term}_mi"] = (there.mi + back.mi) / 2
            out["encoder_loss"] = out["encoder_loss"] + self.weights[term] * out[f"{term}_loss"]
        # the probes read the first view's features (detached inside the probes)
        out.update(self.probe_losses({k: v[:n] for k, v in feats.items()}, labels))
        return out
