"""Deep InfoMax: what DIM adds to :class:`~dim.methods.base.MethodModule`.

The encoder and the MI critics minimise

    beta * local + alpha * global + gamma * E[softplus(-D(sigmoid(Y)))]

(D's parameters are frozen inside that last term, so D gets none of the encoder's gradient);
the prior discriminator D minimises its own GAN loss on *detached* sigmoid(Y) with a gradient
penalty, with its own optimiser: a true adversarial game.  The math of each term is in
``docs/math.md``; the terms themselves are the functions of :mod:`dim.objective.terms`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dim.errors import DimError
from dim.methods.base import Groups, MethodModule, NonFiniteLossError, make_bound
from dim.nets.critics import (
    ConcatLocalCritic,
    DotLocalCritic,
    GlobalCritic,
    LocalCritic,
    PriorDiscriminator,
)
from dim.nets.encoders import Encoder, build_encoder, encoder_config
from dim.objective.distributed import gather_with_grad, world_size
from dim.objective.terms import (
    ScoreOptions,
    TermOutput,
    global_mi,
    local_mi,
    prior_discriminator_loss,
    prior_encoder_loss,
    sample_locations,
)

__all__ = ["DIMModule", "NonFiniteLossError", "build_local_critic"]


def build_local_critic(name: str, encoder: Encoder, model: dict[str, Any]) -> LocalCritic:
    """The local critic ``model.critic``: ``dot`` (encode-and-dot-product, the official one) or
    ``concat`` (concatenate-and-convolve)."""
    channels, units = encoder.local_shape[0], model.get("mi_units", 2048)
    critics: dict[str, Callable[[], LocalCritic]] = {
        "dot": lambda: DotLocalCritic(channels, encoder.y_dim, units, model.get("score_scale")),
        "concat": lambda: ConcatLocalCritic(channels, encoder.y_dim),
    }
    if name not in critics:
        raise DimError(f"model.critic must be one of {', '.join(critics)}; got '{name}'")
    return critics[name]()


def _mean_term(per_pair: list[TermOutput]) -> tuple[Tensor, Tensor]:
    """(loss, MI) of one term: itself for one image, the mean of the two view directions."""
    if len(per_pair) == 1:  # the common case adds no kernels to the step
        return per_pair[0].loss, per_pair[0].mi
    (a, b) = per_pair
    return (a.loss + b.loss) / 2, (a.mi + b.mi) / 2


class DIMModule(MethodModule):
    """Deep InfoMax with local, global and prior-matching terms (weights alpha, beta, gamma).

    Args:
        model: encoder/critic options (``encoder``, ``y_dim``, ``critic``, ``mi_units``, ...).
        bound: ``name`` of the MI bound plus its parameters (e.g. ``tau`` for smile).
        objective: weights ``alpha`` (global), ``beta`` (local), ``gamma`` (prior).
        optim: learning rates, betas and the LR schedule.
        data: ``channels``, ``image_size`` and ``num_classes`` (None = unlabelled: no probe).
    """

    METRICS = {
        "local_loss": "loss/local",
        "global_loss": "loss/global",
        "prior_encoder_loss": "loss/prior_encoder",
        "prior_discriminator_loss": "loss/prior_discriminator",
        "encoder_loss": "loss/encoder_total",
        "local_mi": "mi/local",
        "global_mi": "mi/global",
        "prior_d_accuracy": "prior/d_accuracy",
        "prior_gradient_penalty": "prior/gradient_penalty",
        "prior_d_logit_std": "prior/d_logit_std",
    }
    PROGRESS = ("mi/local", "probe/acc_y")
    LOSS_OF = {**MethodModule.LOSS_OF, "prior_disc": "prior_discriminator_loss"}

    def build(self, groups: Groups) -> None:
        model, bound, objective, data = groups
        missing = [k for k in ("alpha", "beta", "gamma") if k not in objective]
        if missing:
            raise DimError(
                f"objective has no {missing[0]}: objective={sorted(objective)} belongs to another "
                "method; DIM's objectives are local, global and local_global"
            )
        self.alpha, self.beta, self.gamma = (
            float(objective[k]) for k in ("alpha", "beta", "gamma")
        )
        if min(self.alpha, self.beta, self.gamma) < 0 or self.alpha + self.beta + self.gamma == 0:
            raise DimError(
                "objective weights alpha (global), beta (local), gamma (prior) must be >= 0 and "
                f"not all zero; got alpha={self.alpha} beta={self.beta} gamma={self.gamma}"
            )
        self.encoder = build_encoder(**encoder_config(model, data))
        enc = self.encoder
        units, scale = model.get("mi_units", 2048), model.get("score_scale")
        if self.beta > 0:
            self.local_critic = build_local_critic(model.get("critic", "dot"), enc, model)
            self.local_bound = make_bound(bound)
        if self.alpha > 0:
            self.global_critic = GlobalCritic(enc.make_global_head(units), enc.y_dim, units, scale)
            self.global_bound = make_bound(bound)
        if self.gamma > 0:
            self.prior_disc = PriorDiscriminator(
                enc.y_dim,
                tuple(model.get("prior_hidden", (1000, 200))),
                spectral_norm=bool(model.get("d_spectral_norm", False)),
            )
        self.add_probes(model, data)
        # Not the prior discriminator: its gradient penalty needs double backward, which
        # torch.compile does not support.
        critics = [getattr(self, n, None) for n in ("local_critic", "global_critic")]
        self.use_speed_options(model, [n for c in critics if c is not None for n in c.children()])
        self.gp_weight = float(model.get("gp_weight", 1.0))
        self.gp_every = int(model.get("gp_every", 1))
        if self.gp_every < 1:
            raise DimError(
                f"model.gp_every must be >= 1 (1 = the penalty on every step); got {self.gp_every}"
            )
        self._gp_weight_now = self.gp_weight
        self.gp_on = str(model.get("gp_on", "both"))
        self.d_steps = int(model.get("d_steps", 1))
        self.prior_space = str(model.get("prior_space", "sigmoid"))
        self.score_opts = ScoreOptions(model.get("tclip"), float(model.get("score_reg", 0.0)))
        self.local_samples = model.get("local_samples")

    def optimizer_groups(self) -> list[tuple[str, list[nn.Parameter], dict[str, Any]]]:
        o = self.optim_cfg
        skip = ("prior_disc.", "probes.")
        params = [p for n, p in self.named_parameters() if not n.startswith(skip)]
        groups = [("encoder", params, {"lr": o["lr"], "weight_decay": o.get("weight_decay", 0.0)})]
        if self.gamma > 0:
            d_params = list(self.prior_disc.parameters())
            groups.append(("prior_disc", d_params, {"lr": o.get("d_lr", o["lr"])}))
        return groups

    def compute_losses(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Every loss and metric of one batch; ``*_loss`` keys carry gradient.

        ``x`` is ``(B, C, H, W)`` images, or ``(B, 2, C, H, W)`` two augmented views of each
        image (``method.views``): then the MI terms pair one view's Y with the *other* view's
        feature map (AMDIM's positives), each averaged over both directions, and the prior term
        sees the Y of both views.
        """
        two_views = x.dim() == 5
        n = x.shape[0]
        if two_views:
            x = torch.cat([x[:, 0], x[:, 1]])  # one pass: batch-norm statistics over both views
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        self.last_y = feats["y"].detach()  # for the TensorBoard histograms callback
        # (local map, Y) pairs: the image with itself, or each view's map with the other's Y
        pairs = [(feats["local"], feats["y"])]
        if two_views:
            local, y = feats["local"], feats["y"]
            pairs = [(local[n:], y[:n]), (local[:n], y[n:])]
        out: dict[str, Tensor] = {"encoder_loss": torch.zeros((), device=x.device)}
        n_loc = feats["local"].shape[-1] * feats["local"].shape[-2]

        def local_term(critic: LocalCritic, loc: Tensor, y: Tensor, bound, **kw) -> TermOutput:
            where = sample_locations(n_loc, self.local_samples, x.device)
            return local_mi(critic, loc, y, bound, locations=where, **kw)

        terms: dict[str, tuple[float, Callable[..., TermOutput]]] = {
            "local": (self.beta, local_term),
            "global": (self.alpha, global_mi),
        }
        for name, (weight, term) in terms.items():
            if weight == 0:
                continue
            critic, bound = getattr(self, f"{name}_critic"), getattr(self, f"{name}_bound")
            per_pair = [
                term(critic, loc, y, bound, gather=gather_with_grad, opts=self.score_opts)
                for loc, y in pairs
            ]  # averaged over the two directions with views
            out[f"{name}_loss"], out[f"{name}_mi"] = _mean_term(per_pair)
            out["encoder_loss"] = out["encoder_loss"] + weight * out[f"{name}_loss"]
        if self.gamma > 0:
            out["prior_encoder_loss"] = prior_encoder_loss(
                self.prior_disc, feats["y"], self.prior_space
            )
            out["encoder_loss"] = out["encoder_loss"] + self.gamma * out["prior_encoder_loss"]
            self._gp_weight_now = self._penalty_weight()
            disc = prior_discriminator_loss(
                self.prior_disc,
                feats["y"],
                self._gp_weight_now,
                gp_on=self.gp_on,
                space=self.prior_space,
            )
            self._prior_y = feats["y"].detach()  # for the extra D steps of training_step
            out["prior_discriminator_loss"] = disc.loss
            out["prior_d_accuracy"] = disc.accuracy
            if self._gp_weight_now > 0 or not self.training:  # a lazy step has no penalty
                out["prior_gradient_penalty"] = disc.gradient_penalty
            out["prior_d_logit_std"] = disc.logit_std
        if two_views:  # the probes read the first view's features (detached inside them)
            feats = {k: v[:n] for k, v in feats.items()}
        out.update(self.probe_losses(feats, labels))
        return out

    def _penalty_weight(self) -> float:
        """Lazy regularisation (StyleGAN2's lazy R1): in training the penalty is taken only on
        steps with ``global_step % gp_every == 0``, with its weight times ``gp_every`` so that its
        average strength is unchanged; ``gp_every=1`` is the penalty on every step.  A host-side
        choice from the step count: a captured step needs one graph with and one without it."""
        if not self.training or self.gp_every == 1:
            return self.gp_weight
        return self.gp_weight * self.gp_every if self.global_step % self.gp_every == 0 else 0.0

    def extra_updates(self) -> None:
        if self.gamma > 0 and self.d_steps > 1:
            self._extra_d_steps(self.d_steps - 1)

    def step_variant(self) -> float | None:
        """The penalty's weight this step: with ``gp_every > 1``, steps with and without it."""
        return self._penalty_weight() if self.gamma > 0 else None

    def _extra_d_steps(self, n: int) -> None:
        """``n`` more D-only updates on this step's detached Y, each with fresh prior samples.

        Full precision (D is a small MLP), gradients averaged over processes by hand: D is
        called directly here, not through the DDP wrapper."""
        opt = self._optimizers()[self.optimizer_names.index("prior_disc")].optimizer
        y = self._prior_y.to(next(self.prior_disc.parameters()).dtype)
        world = world_size()
        with torch.autocast(device_type=y.device.type, enabled=False):
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                loss = prior_discriminator_loss(
                    self.prior_disc,
                    y,
                    self._gp_weight_now,  # this step's (lazy) penalty weight
                    gp_on=self.gp_on,
                    space=self.prior_space,
                )
                loss.loss.backward()
                if world > 1:  # SUM then divide: gloo has no AVG
                    for p in self.prior_disc.parameters():
                        if p.grad is not None:
                            torch.distributed.all_reduce(p.grad)
                            p.grad.div_(world)
                opt.step()

    def extra_metrics(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        # the value of the bound being maximised (for JSD this is not an MI value)
        return {
            f"bound/{t}": -out[f"{t}_loss"].detach()
            for t in ("local", "global")
            if f"{t}_loss" in out
        }
