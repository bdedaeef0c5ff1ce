"""DIMModule: trains an encoder by maximising local / global MI with an adversarial prior term.

One training step = one forward and one backward over a sum of losses that touch disjoint
parameter sets, then one step of each optimiser:

- encoder + MI critics minimise  beta * local + alpha * global + gamma * E[softplus(-D(sigmoid(Y)))]
  (D's parameters are frozen inside that last term, so D gets none of the encoder's gradient);
- the prior discriminator D minimises its own GAN loss on *detached* sigmoid(Y) with a gradient
  penalty (the encoder gets none of D's gradient);
- the online probes minimise cross-entropy on *detached* features.

A single backward keeps DDP happy (one reduction per forward) while the two players of the prior
game still have separate objectives and optimisers: a true adversarial game.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from dim.bounds import get_bound
from dim.distributed import broadcast_buffers, gather_with_grad
from dim.errors import DimError
from dim.modules.probe import OnlineProbes, feature_dims
from dim.nets.critics import ConcatLocalCritic, DotLocalCritic, GlobalCritic, PriorDiscriminator
from dim.nets.encoders import build_encoder
from dim.objectives import (
    ScoreOptions,
    global_mi,
    local_mi,
    prior_discriminator_loss,
    prior_encoder_loss,
    sample_locations,
)
from dim.reliability import collect_rng_states, set_rng_states


def _no_closure() -> None:
    return None


class NonFiniteLossError(DimError):
    """A loss term became NaN/inf; the run stops and keeps its last good checkpoint."""


class DIMModule(pl.LightningModule):
    """Deep InfoMax with local, global and prior-matching terms (weights alpha, beta, gamma).

    Args:
        model: encoder/critic options (``encoder``, ``y_dim``, ``critic``, ``mi_units``, ...).
        bound: ``name`` of the MI bound plus its parameters (e.g. ``tau`` for smile).
        objective: weights ``alpha`` (global), ``beta`` (local), ``gamma`` (prior).
        optim: learning rates, betas and the LR schedule.
        data: ``channels``, ``image_size`` and ``num_classes`` (None = unlabelled: no probe).
    """

    def __init__(
        self,
        model: dict[str, Any],
        bound: dict[str, Any],
        objective: dict[str, Any],
        optim: dict[str, Any],
        data: dict[str, Any],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.alpha, self.beta, self.gamma = (
            float(objective[k]) for k in ("alpha", "beta", "gamma")
        )
        if min(self.alpha, self.beta, self.gamma) < 0 or self.alpha + self.beta + self.gamma == 0:
            raise DimError(
                "objective weights alpha (global), beta (local), gamma (prior) must be >= 0 and "
                f"not all zero; got alpha={self.alpha} beta={self.beta} gamma={self.gamma}"
            )
        self.encoder = build_encoder(
            model["encoder"], data["channels"], data["image_size"], model.get("y_dim", 64)
        )
        units, scale = model.get("mi_units", 2048), model.get("score_scale")
        enc = self.encoder
        if self.beta > 0:
            if model.get("critic", "dot") == "dot":
                self.local_critic = DotLocalCritic(enc.local_shape[0], enc.y_dim, units, scale)
            elif model["critic"] == "concat":
                self.local_critic = ConcatLocalCritic(enc.local_shape[0], enc.y_dim)
            else:
                raise DimError(f"model.critic must be 'dot' or 'concat', got '{model['critic']}'")
            self.local_bound = self._make_bound(bound)
        if self.alpha > 0:
            self.global_critic = GlobalCritic(enc.make_global_head(units), enc.y_dim, units, scale)
            self.global_bound = self._make_bound(bound)
        if self.gamma > 0:
            self.prior_disc = PriorDiscriminator(
                enc.y_dim, tuple(model.get("prior_hidden", (1000, 200)))
            )
        self.probes = None
        if model.get("probe", True) and data.get("num_classes"):
            self.probes = OnlineProbes(feature_dims(enc), int(data["num_classes"]))
        if model.get("channels_last"):
            self.encoder.to(memory_format=torch.channels_last)
        if model.get("compile"):
            self.encoder.compile()  # in place: state_dict keys stay those of the plain encoder
        self.score_opts = ScoreOptions(model.get("tclip"), float(model.get("score_reg", 0.0)))
        self.local_samples = model.get("local_samples")
        self.skipped_steps = 0

    @staticmethod
    def _make_bound(cfg: dict[str, Any]):
        params = {k: v for k, v in cfg.items() if k != "name"}
        try:
            return get_bound(cfg["name"], **params)
        except (ValueError, TypeError) as err:
            raise DimError(f"bound '{cfg.get('name')}': {err}") from None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.encoder(x)

    # ---- losses -------------------------------------------------------------------------------
    def compute_losses(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Every loss and metric of one batch; ``*_loss`` keys carry gradient."""
        if self.hparams.model.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        self.last_y = feats["y"].detach()  # for the TensorBoard histograms callback
        out: dict[str, Tensor] = {"encoder_loss": torch.zeros((), device=x.device)}
        gather = gather_with_grad
        if self.beta > 0:
            n_loc = feats["local"].shape[-1] * feats["local"].shape[-2]
            locs = sample_locations(n_loc, self.local_samples, x.device)
            term = local_mi(
                self.local_critic,
                feats["local"],
                feats["y"],
                self.local_bound,
                locations=locs,
                gather=gather,
                opts=self.score_opts,
            )
            out.update({"local_loss": term.loss, "local_mi": term.mi})
            out["encoder_loss"] = out["encoder_loss"] + self.beta * term.loss
        if self.alpha > 0:
            term = global_mi(
                self.global_critic,
                feats["local"],
                feats["y"],
                self.global_bound,
                gather=gather,
                opts=self.score_opts,
            )
            out.update({"global_loss": term.loss, "global_mi": term.mi})
            out["encoder_loss"] = out["encoder_loss"] + self.alpha * term.loss
        if self.gamma > 0:
            out["prior_encoder_loss"] = prior_encoder_loss(self.prior_disc, feats["y"])
            out["encoder_loss"] = out["encoder_loss"] + self.gamma * out["prior_encoder_loss"]
            gp_weight = float(self.hparams.model.get("gp_weight", 1.0))
            disc = prior_discriminator_loss(self.prior_disc, feats["y"], gp_weight)
            out.update(
                {
                    "prior_discriminator_loss": disc.loss,
                    "prior_d_accuracy": disc.accuracy,
                    "prior_gradient_penalty": disc.gradient_penalty,
                }
            )
        if self.probes is not None and labels is not None:  # unlabelled samples are masked
            probe_loss, acc = self.probes.loss_and_accuracy(feats, labels)
            out["probe_loss"] = probe_loss
            out.update({f"probe_acc_{k}": v for k, v in acc.items()})
        return out

    def _nonfinite(self, out: dict[str, Tensor]) -> str | None:
        """Name of the first loss term (or "gradients") that is NaN/inf, agreed by all processes."""
        terms = sorted((k for k in out if k.endswith("_loss")), key=lambda k: k == "encoder_loss")
        bad = None
        if terms:  # one device sync per step, not one per term
            finite = torch.stack([torch.isfinite(out[k]).all() for k in terms])
            if not bool(finite.all()):
                bad = terms[int((~finite).nonzero()[0, 0])]
        if bad is None and "encoder_loss" not in out:  # called after backward: check gradients
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
                bad = "gradients"
        if self.trainer.world_size > 1:
            if self.trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
                bad = bad or "another process's term"
        return bad

    def _handle_nonfinite(self, term: str, out: dict[str, Tensor]) -> None:
        """Skip the step (policy ``skip``) or stop the run, keeping the last good checkpoint."""
        name = term.removesuffix("_loss")
        value = out[term].item() if term in out else "non-finite"
        if self.hparams.optim.get("on_nonfinite", "stop") == "skip":
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)
            return
        raise NonFiniteLossError(
            f"'{name}' became {value} at step {self.global_step}; the last good checkpoint is "
            "kept. Try bound=jsd, model.tclip=20, a lower optim.lr, or optim.on_nonfinite=skip"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = collect_rng_states()  # exact resume: data order, prior samples
        checkpoint["skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        x, labels = batch
        out = self.compute_losses(x, labels)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        bad = self._nonfinite(out)
        if bad is not None:
            self._handle_nonfinite(bad, out)
            return None
        total = out["encoder_loss"]
        for key in ("prior_discriminator_loss", "probe_loss"):
            if key in out:
                total = total + out[key]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        # fp16: the GradScaler skips steps whose (scaled) gradients overflow and lowers the scale;
        # overflowing is how it finds the scale, not an error.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        bad = self._nonfinite({}) if scaler is None else None
        if bad is not None:
            self._handle_nonfinite(bad, out)
            return None
        for opt in optimizers[1:]:  # prior D and probes: same precision handling, not counted
            if scaler is not None:  # one scaler.update() per step: the encoder's step below
                scaler.step(opt.optimizer)
            else:
                self.trainer.strategy.optimizer_step(opt.optimizer, closure=_no_closure)
        optimizers[0].step()  # encoder + critics: the one step Lightning counts as global_step
        self._log_step(out, "train")
        return total.detach()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the encoder's gradients here: after fp16 unscaling, right before its step."""
        clip = self.hparams.optim.get("grad_clip")
        if clip and optimizer is self.trainer.optimizers[0]:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def on_validation_epoch_start(self) -> None:
        broadcast_buffers(self)  # DDP: evaluate the state rank 0 saves, the same on every process

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
            sch.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, labels = batch
        out = self.compute_losses(x, labels)
        self._log_step(out, "val")

    def _log_step(self, out: dict[str, Tensor], stage: str) -> None:
        on_step = stage == "train"
        names = {
            "local_loss": "loss/local",
            "global_loss": "loss/global",
            "prior_encoder_loss": "loss/prior_encoder",
            "prior_discriminator_loss": "loss/prior_discriminator",
            "encoder_loss": "loss/encoder_total",
            "local_mi": "mi/local",
            "global_mi": "mi/global",
            "prior_d_accuracy": "prior/d_accuracy",
            "prior_gradient_penalty": "prior/gradient_penalty",
            "probe_acc_conv": "probe/acc_conv",
            "probe_acc_fc": "probe/acc_fc",
            "probe_acc_y": "probe/acc_y",
        }
        metrics = {f"{stage}/{names[k]}": v.detach() for k, v in out.items() if k in names}
        for term in ("local", "global"):  # the value of the bound being maximised (JSD: not MI)
            if f"{term}_loss" in out:
                metrics[f"{stage}/bound/{term}"] = -out[f"{term}_loss"].detach()
        if on_step:
            names_opt = ("encoder", "prior_disc", "probe")
            optimizers = self.optimizers()
            optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
            kinds = [
                n
                for n in names_opt
                if n == "encoder"
                or (n == "prior_disc" and self.gamma > 0)
                or (n == "probe" and self.probes is not None)
            ]
            for name, opt in zip(kinds, optimizers, strict=True):
                metrics[f"lr/{name}"] = torch.tensor(opt.param_groups[0]["lr"])
        prog = {f"{stage}/mi/local", f"{stage}/probe/acc_y"}
        for key, value in metrics.items():
            self.log(
                key,
                value,
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=key in prog,
                sync_dist=not on_step,
                batch_size=1,
            )

    # ---- optimisers ---------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.hparams.optim
        betas = tuple(o.get("betas", (0.9, 0.999)))
        enc_params = [
            p for n, p in self.named_parameters() if not n.startswith(("prior_disc.", "probes."))
        ]
        optimizers = [
            torch.optim.Adam(
                enc_params, lr=o["lr"], betas=betas, weight_decay=o.get("weight_decay", 0.0)
            )
        ]
        if self.gamma > 0:
            optimizers.append(
                torch.optim.Adam(
                    self.prior_disc.parameters(), lr=o.get("d_lr", o["lr"]), betas=betas
                )
            )
        if self.probes is not None:
            optimizers.append(
                torch.optim.Adam(self.probes.parameters(), lr=o.get("probe_lr", 1e-3))
            )
        schedulers = []
        kind = o.get("scheduler", "none")
        if kind == "cosine":
            t_max = max(1, self.trainer.max_epochs or 1) if self._trainer else 1
            schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizers[0], t_max))
        elif kind == "step":
            milestones = list(o.get("milestones", [50, 100]))
            schedulers.append(
                torch.optim.lr_scheduler.MultiStepLR(
                    optimizers[0], milestones, o.get("lr_decay", 0.1)
                )
            )
        elif kind != "none":
            raise DimError(f"optim.scheduler must be none, cosine or step; got '{kind}'")
        return optimizers, schedulers
