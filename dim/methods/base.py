"""What every representation-learning method shares: one LightningModule skeleton.

A method (``dim.py``) builds its networks, says which parameter groups get their own optimiser
(:meth:`MethodModule.optimizer_groups`) and computes its losses (:meth:`compute_losses`).  This
base does the rest, identically for every method:

- one training step = one forward, one backward over the sum of all losses (the groups touch
  disjoint parameters, so each player still follows only its own loss), then one step of each
  optimiser; the first optimiser (encoder + critics) is the one Lightning counts as
  ``global_step``;
- the non-finite policy: a NaN/inf loss or gradient stops the run naming the term (the last good
  checkpoint is kept) or, with ``optim.on_nonfinite=skip``, skips the step and counts it;
- fp16 scaler plumbing: one ``GradScaler.update()`` per step, gradient clipping after unscaling;
- online linear probes on detached features (``val/probe/acc_*``), logging, the LR schedule,
  RNG states in checkpoints (exact resume), DDP-consistent validation.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from dim.bounds import Bound, get_bound
from dim.distributed import broadcast_buffers
from dim.errors import DimError
from dim.nets.encoders import Encoder
from dim.nets.probes import OnlineProbes, feature_dims
from dim.reliability import collect_rng_states, set_rng_states


def make_bound(cfg: dict[str, Any]) -> Bound:
    """The MI bound ``bound.name`` with its parameters (e.g. ``tau`` for smile)."""
    params = {k: v for k, v in cfg.items() if k != "name"}
    try:
        return get_bound(cfg["name"], **params)
    except (ValueError, TypeError) as err:
        raise DimError(f"bound '{cfg.get('name')}': {err}") from None


def _no_closure() -> None:
    return None


class NonFiniteLossError(DimError):
    """A loss term became NaN/inf; the run stops and keeps its last good checkpoint."""


class MethodModule(pl.LightningModule):
    """The shared base of the methods (see the module docstring).

    Subclasses set ``self.encoder`` before calling :meth:`add_probes`, and define
    :meth:`compute_losses` (returning ``encoder_loss`` plus any other ``*_loss`` of other
    optimisers and metrics) and :data:`METRICS` (loss/metric key -> logged name).
    """

    #: keys of :meth:`compute_losses` output -> logged name under ``train/`` and ``val/``
    METRICS: dict[str, str] = {"encoder_loss": "loss/encoder_total"}
    #: logged in the progress bar
    PROGRESS: tuple[str, ...] = ("probe/acc_y",)
    #: optimiser name -> the loss key it minimises (default ``<name>_loss``)
    LOSS_OF: dict[str, str] = {"probe": "probe_loss"}

    encoder: Encoder  # set by the subclass before add_probes

    def __init__(self, optim: dict[str, Any]) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.optim_cfg = dict(optim)
        self.probes: OnlineProbes | None = None
        self.skipped_steps = 0
        self.optimizer_names: list[str] = []

    def add_probes(self, model: dict[str, Any], data: dict[str, Any]) -> None:
        """Online linear probes on conv / fc / y when the data is labelled (``model.probe``)."""
        if model.get("probe", True) and data.get("num_classes"):
            self.probes = OnlineProbes(feature_dims(self.encoder), int(data["num_classes"]))

    def use_speed_options(self, model: dict[str, Any], nets: list[nn.Module]) -> None:
        """``model.channels_last`` (the encoder in NHWC) and ``model.compile``: the encoder and
        ``nets`` (the critics' networks, where nearly all FLOPs and kernel launches are) are
        compiled in place, so state_dict keys stay those of the plain modules."""
        self.channels_last = bool(model.get("channels_last"))
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        if model.get("compile"):
            self.encoder.compile()
            for net in nets:
                net.compile()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.encoder(x)

    # ---- what a method defines ----------------------------------------------------------------
    def compute_losses(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        raise NotImplementedError

    def optimizer_groups(self) -> list[tuple[str, list[nn.Parameter], dict[str, Any]]]:
        """``(name, parameters, Adam options)`` of the method's optimisers, encoder first."""
        o = self.optim_cfg
        skip = ("probes.",)
        params = [p for n, p in self.named_parameters() if not n.startswith(skip)]
        return [("encoder", params, {"lr": o["lr"], "weight_decay": o.get("weight_decay", 0.0)})]

    def probe_losses(self, feats: dict[str, Tensor], labels: Tensor | None) -> dict[str, Tensor]:
        """Probe loss and accuracies (unlabelled samples masked); {} without probes."""
        if self.probes is None or labels is None:
            return {}
        probe_loss, acc = self.probes.loss_and_accuracy(feats, labels)
        return {"probe_loss": probe_loss, **{f"probe_acc_{k}": v for k, v in acc.items()}}

    # ---- non-finite policy --------------------------------------------------------------------
    def _nonfinite(self, out: dict[str, Tensor], gradients: bool) -> str | None:
        """Name of the first loss term (or "gradients") that is NaN/inf, agreed by all processes.

        Called after the backward pass: one device sync per step covers every loss term and,
        with ``gradients``, the total gradient norm (inf/NaN when any gradient is; a norm that
        overflows fp32, i.e. gradients beyond ~1e19, counts as non-finite too).
        """
        terms = sorted((k for k in out if k.endswith("_loss")), key=lambda k: k == "encoder_loss")
        checks = [out[k].detach().float().reshape(()) for k in terms]
        if gradients:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                checks.append(torch.nn.utils.get_total_norm(grads, foreach=True).float())
        bad = None
        if checks:
            finite = torch.isfinite(torch.stack(checks))
            if not bool(finite.all()):
                first = int((~finite).nonzero()[0, 0])
                bad = terms[first] if first < len(terms) else "gradients"
        if self.trainer.world_size > 1:
            if self.trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
                bad = bad or "another process's term"
        return bad

    def _handle_nonfinite(self, term: str, out: dict[str, Tensor]) -> None:
        """Skip the step (policy ``skip``) or stop the run, keeping the last good checkpoint."""
        name = term.removesuffix("_loss")
        value = out[term].item() if term in out else "non-finite"
        if self.optim_cfg.get("on_nonfinite", "stop") == "skip":
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
    def _optimizers(self) -> list[Any]:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        x, labels = batch
        out = self.compute_losses(x, labels)
        optimizers = self._optimizers()
        total = out["encoder_loss"]
        for key in self.other_losses:  # the other players' losses (disjoint parameters)
            if key in out:
                total = total + out[key]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        # fp16: the GradScaler skips steps whose (scaled) gradients overflow and lowers the scale;
        # overflowing is how it finds the scale, not an error.
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        bad = self._nonfinite(out, gradients=scaler is None)
        if bad is not None:
            self._handle_nonfinite(bad, out)
            return None
        for opt in optimizers[1:]:  # the other players and probes: not counted as global_step
            if scaler is not None:  # one scaler.update() per step: the encoder's step below
                scaler.step(opt.optimizer)
            else:
                self.trainer.strategy.optimizer_step(opt.optimizer, closure=_no_closure)
        self._warm_up(optimizers[0].optimizer)
        optimizers[0].step()  # encoder + critics: the one step Lightning counts as global_step
        if self._logged_step(batch_idx):
            self._log_step(out, "train")
        return total.detach()

    def _warm_up(self, optimizer: torch.optim.Optimizer) -> None:
        """Linear learning-rate warm-up of the encoder's optimiser over the first
        ``optim.warmup_steps`` updates (AMDIM: 500): update k uses ``lr * k / warmup_steps``.
        Derived from ``global_step`` alone, so a resumed run continues it exactly; an epoch
        schedule (``optim.scheduler``) should not have a milestone inside the warm-up."""
        steps = int(self.optim_cfg.get("warmup_steps") or 0)
        if steps <= 0 or self.global_step >= steps:
            return
        for group in optimizer.param_groups:
            group.setdefault("warmup_lr", group["lr"])  # saved with the optimiser's state
            group["lr"] = group["warmup_lr"] * (self.global_step + 1) / steps

    @property
    def other_losses(self) -> tuple[str, ...]:
        """Losses of optimisers other than the encoder's, added to the one backward."""
        return tuple(self.LOSS_OF.get(name, f"{name}_loss") for name in self.optimizer_names[1:])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the encoder's gradients here: after fp16 unscaling, right before its step."""
        clip = self.optim_cfg.get("grad_clip")
        if clip and optimizer is self.trainer.optimizers[0]:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def on_validation_epoch_start(self) -> None:
        broadcast_buffers(self)  # DDP: evaluate the state rank 0 saves, the same on every process

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
            # configure_optimizers builds cosine / multi-step schedules only: no metric to pass
            assert not isinstance(sch, torch.optim.lr_scheduler.ReduceLROnPlateau)
            sch.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, labels = batch
        self._log_step(self.compute_losses(x, labels), "val")

    def _logged_step(self, batch_idx: int) -> bool:
        """Whether this training step's metrics are logged: on the steps Lightning writes to the
        loggers (every ``log_every_n_steps``), at the end of each epoch and of training (for the
        final metrics and the progress bar).  ``self.log`` costs about 0.1 ms per metric on the
        host, which on a GPU step of a few milliseconds is a third of the step when done always.
        """
        trainer = self.trainer
        last = trainer.max_steps > 0 and self.global_step >= trainer.max_steps
        # Lightning's own test, "to be checked before a step" (a connector without a public alias)
        return (
            trainer._logger_connector.should_update_logs
            or batch_idx + 1 >= trainer.num_training_batches
            or last
        )

    def _log_step(self, out: dict[str, Tensor], stage: str) -> None:
        on_step = stage == "train"
        names = {
            **self.METRICS,
            **{f"probe_acc_{t}": f"probe/acc_{t}" for t in ("conv", "fc", "y")},
        }
        if "probe_acc_y" in out and bool(torch.isnan(out["probe_acc_y"])):  # no labels here
            out = {k: v for k, v in out.items() if not k.startswith("probe_acc_")}
        metrics = {f"{stage}/{names[k]}": v.detach() for k, v in out.items() if k in names}
        metrics.update({f"{stage}/{k}": v for k, v in self.extra_metrics(out).items()})
        if on_step:
            for name, opt in zip(self.optimizer_names, self._optimizers(), strict=True):
                metrics[f"lr/{name}"] = torch.tensor(opt.param_groups[0]["lr"])
        prog = {f"{stage}/{k}" for k in self.PROGRESS}
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

    def extra_metrics(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Metrics derived from the losses (logged under the stage prefix)."""
        return {}

    # ---- optimisers ---------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.optim_cfg
        betas = tuple(o.get("betas", (0.9, 0.999)))
        groups = self.optimizer_groups()
        if self.probes is not None:
            groups.append(
                ("probe", list(self.probes.parameters()), {"lr": o.get("probe_lr", 1e-3)})
            )
        self.optimizer_names = [name for name, _, _ in groups]
        # On CUDA one fused kernel updates all of an optimiser's parameters (the multi-tensor
        # default launches several per step); Lightning has moved the module to its device here.
        optimizers = [
            torch.optim.Adam(
                params, betas=betas, fused=bool(params) and all(p.is_cuda for p in params),
                **options,
            )
            for _, params, options in groups
        ]  # fmt: skip
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
