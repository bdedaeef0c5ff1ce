"""What every representation-learning method shares: one LightningModule skeleton.

A method (``dim.py``) builds its networks, says which parameter groups get their own optimiser
(:meth:`MethodModule.optimizer_groups`) and computes its losses (:meth:`compute_losses`).  This
base does the rest, identically for every method:

- one training step = one forward, one backward over the sum of all losses (the groups touch
  disjoint parameters, so each player still follows only its own loss), then one step of each
  optimiser; the first optimiser (encoder + critics) is the one Lightning counts as
  ``global_step``;
- the non-finite policy: a NaN/inf loss or gradient stops the run naming the term (the last good
  checkpoint is kept; the step records it on the device and the host reads the record every
  ``trainer.log_every_n_steps`` steps and before each checkpoint, :mod:`dim.methods.nonfinite`)
  or, with ``optim.on_nonfinite=skip``, skips the step and counts it (a host read per step);
- no host read inside a training step otherwise either (``tests/methods/test_host_sync.py``):
  logged values are read by Lightning when it writes them, after the step;
- fp16 scaler plumbing: one ``GradScaler.update()`` per step, gradient clipping after unscaling;
- online linear probes on detached features (``val/probe/acc_*``), logging, the LR schedule and
  warm-up (tensor learning rates, :mod:`dim.methods.optimizers`), RNG states in checkpoints
  (exact resume), DDP-consistent validation.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from dim.errors import DimError
from dim.methods.graphed import GraphedStep, check_compile
from dim.methods.nonfinite import NonFiniteLossError, NonFiniteWatch
from dim.methods.optimizers import (
    build_adam,
    build_schedulers,
    prepare_warm_up,
    tensor_learning_rates,
    warm_up,
)
from dim.methods.step_logging import StepLogging
from dim.nets.encoders import Encoder
from dim.nets.probes import OnlineProbes, feature_dims
from dim.objective.bounds import Bound, get_bound, trusted_masks
from dim.objective.distributed import broadcast_buffers
from dim.run.reliability import collect_rng_states, epoch_cut_short, set_rng_states


def make_bound(cfg: dict[str, Any]) -> Bound:
    """The MI bound ``bound.name`` with its parameters (e.g. ``tau`` for smile)."""
    params = {k: v for k, v in cfg.items() if k != "name"}
    try:
        return get_bound(cfg["name"], **params)
    except (ValueError, TypeError) as err:
        raise DimError(f"bound '{cfg.get('name')}': {err}") from None


def _no_closure() -> None:
    return None


__all__ = ["Groups", "MethodModule", "NonFiniteLossError", "make_bound"]


class Groups(NamedTuple):
    """The config groups a method builds itself from (``optim`` is the base's own)."""

    model: dict[str, Any]
    bound: dict[str, Any]
    objective: dict[str, Any]
    data: dict[str, Any]


class MethodModule(StepLogging, pl.LightningModule):
    """The shared base of the methods (see the module docstring).

    Subclasses define :meth:`build` (which sets ``self.encoder`` before calling
    :meth:`add_probes`), :meth:`compute_losses` (returning ``encoder_loss`` plus any other
    ``*_loss`` of other optimisers and metrics) and :data:`METRICS` (loss/metric key -> logged
    name).
    """

    #: keys of :meth:`compute_losses` output -> logged name under ``train/`` and ``val/``
    METRICS: dict[str, str] = {"encoder_loss": "loss/encoder_total"}
    #: logged in the progress bar
    PROGRESS: tuple[str, ...] = ("probe/acc_y",)
    #: optimiser name -> the loss key it minimises (default ``<name>_loss``)
    LOSS_OF: dict[str, str] = {"probe": "probe_loss"}

    encoder: Encoder  # set by the subclass before add_probes

    def __init__(
        self,
        model: dict[str, Any],
        bound: dict[str, Any],
        objective: dict[str, Any],
        optim: dict[str, Any],
        data: dict[str, Any],
    ) -> None:
        super().__init__()
        # the five config groups: a checkpoint rebuilds its method from them alone
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.optim_cfg = dict(optim)
        self.probes: OnlineProbes | None = None
        self.skipped_steps = 0
        self.optimizer_names: list[str] = []
        self.nonfinite = NonFiniteWatch()
        self._check_due = False  # read the non-finite record after this step
        self._probe_window: dict[str, Tensor] = {}  # probe hits / labelled since the last log
        self.graphed: GraphedStep | None = None  # model.cuda_graph: the step as CUDA graphs
        self.build(Groups(model, bound, objective, data))

    def build(self, groups: Groups) -> None:
        """Check the method's objective and build its encoder, critics and probes."""
        raise NotImplementedError

    def add_probes(self, model: dict[str, Any], data: dict[str, Any]) -> None:
        """Online linear probes on conv / fc / y when the data is labelled (``model.probe``)."""
        if model.get("probe", True) and data.get("num_classes"):
            self.probes = OnlineProbes(feature_dims(self.encoder), int(data["num_classes"]))

    def use_speed_options(self, model: dict[str, Any], nets: list[nn.Module]) -> None:
        """``model.channels_last`` (the encoder in NHWC) and ``model.compile``: the encoder and
        ``nets`` (the critics' networks, where nearly all FLOPs and kernel launches are) are
        compiled in place, so state_dict keys stay those of the plain modules, with
        ``model.compile_backend`` (default inductor) and ``model.compile_mode``; and
        ``model.cuda_graph``: the training step replayed as CUDA graphs (:mod:`.graphed`)."""
        check_compile(model)
        if model.get("cuda_graph"):
            self.graphed = GraphedStep(self)
        self.channels_last = bool(model.get("channels_last"))
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        if model.get("compile"):
            options: dict[str, Any] = {"backend": model.get("compile_backend") or "inductor"}
            if model.get("compile_mode"):
                options["mode"] = str(model["compile_mode"])
            for net in (self.encoder, *nets):
                net.compile(**options)

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
        probe_loss, acc, hits, labelled = self.probes.loss_and_accuracy(feats, labels)
        return {
            "probe_loss": probe_loss,
            **{f"probe_acc_{k}": v for k, v in acc.items()},
            **{f"probe_hits_{k}": v for k, v in hits.items()},
            "probe_labelled": labelled,
        }

    # ---- non-finite policy --------------------------------------------------------------------
    def _nonfinite_checks(
        self, out: dict[str, Tensor], gradients: bool
    ) -> tuple[list[str], Tensor | None]:
        """The loss terms' names (then "gradients") and their values in one tensor.

        Every loss term and, with ``gradients``, the total gradient norm (inf/NaN when any
        gradient is; a norm that overflows fp32, i.e. gradients beyond ~1e19, counts as
        non-finite too).  Tensor ops only.
        """
        terms = sorted((k for k in out if k.endswith("_loss")), key=lambda k: k == "encoder_loss")
        checks = [out[k].detach().float().reshape(()) for k in terms]
        if gradients:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                checks.append(torch.nn.utils.get_total_norm(grads, foreach=True).float())
                terms.append("gradients")
        return terms, (torch.stack(checks) if checks else None)

    def _nonfinite_now(self, terms: list[str], checks: Tensor | None) -> str | None:
        """Policy ``skip``: the first non-finite term of this step, agreed by all processes; the
        host has to read it to decide whether to step (one device sync per step)."""
        bad = None
        if checks is not None:
            finite = torch.isfinite(checks)
            if not bool(finite.all()):
                bad = terms[int((~finite).nonzero()[0, 0])]
        if self.trainer.world_size > 1:
            if self.trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
                bad = bad or "another process's term"
        return bad

    def check_nonfinite(self) -> None:
        """Read the device's non-finite record (policy ``stop``) and stop the run if it holds a
        step: a :class:`NonFiniteLossError` naming the term, its value and the step.  Called
        every ``trainer.log_every_n_steps`` steps, at each epoch's end, before every checkpoint is
        written and at the end of training, so the last checkpoint is always a good one; the run
        stops at most ``log_every_n_steps - 1`` steps after the NaN."""
        found = self.nonfinite.first()
        if self._trainer is not None and self.trainer.world_size > 1:
            if self.trainer.strategy.reduce_boolean_decision(found is not None, all=False):
                found = found or (self.global_step, "another process's term", float("nan"))
        if found is None:
            return
        step, term, value = found
        raise NonFiniteLossError(
            f"'{term.removesuffix('_loss')}' became {value} at step {step} (found at step "
            f"{self.global_step}); the last good checkpoint is kept. Try bound=jsd, "
            "model.tclip=20, a lower optim.lr, or optim.on_nonfinite=skip"
        )

    def _skip_step(self) -> None:
        self.skipped_steps += 1
        self.log("train/skipped_steps", float(self.skipped_steps), batch_size=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_nonfinite()  # before anything is written: never a checkpoint after a NaN
        checkpoint["rng_states"] = collect_rng_states()  # exact resume: data order, prior samples
        checkpoint["skipped_steps"] = self.skipped_steps
        # the probes' logging window in progress, so a resumed run logs the same accuracies
        checkpoint["probe_window"] = {k: v.cpu() for k, v in self._probe_window.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self._probe_window = dict(checkpoint.get("probe_window", {}))  # moved on the next step

    # ---- training -----------------------------------------------------------------------------
    def _optimizers(self) -> list[Any]:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        """One step with no host read in it (docs/gpu.md): forward, one backward, every
        optimiser's step; policy ``skip`` is the exception (it reads one flag)."""
        if self.graphed is not None:  # the same step, captured (dim.methods.graphed)
            return self.graphed.step(batch, batch_idx)
        x, labels = batch
        with trusted_masks():  # the objectives' masks: no value checks, which would read back
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
        terms, checks = self._nonfinite_checks(out, gradients=scaler is None)
        if self.optim_cfg.get("on_nonfinite", "stop") == "skip":
            if self._nonfinite_now(terms, checks) is not None:
                self._skip_step()
                return None
        elif checks is not None:
            self.nonfinite.record(terms, checks, self.global_step)
        for opt in optimizers[1:]:  # the other players and probes: not counted as global_step
            if scaler is not None:  # one scaler.update() per step: the encoder's step below
                scaler.step(opt.optimizer)
            else:
                self.trainer.strategy.optimizer_step(opt.optimizer, closure=_no_closure)
        # linear warm-up of the encoder's rate (AMDIM: 500 updates), written into its tensor
        warm_up(optimizers[0].optimizer, self.global_step, self._warmup_steps)
        optimizers[0].step()  # encoder + critics: the one step Lightning counts as global_step
        self.extra_updates()
        self._accumulate_probe_hits(out)
        self._check_due = self._logged_step(batch_idx)
        if self._check_due:
            self._log_step(out, "train")
        return total.detach()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._check_due:  # after the step, with Lightning's own read of the logged values
            self.check_nonfinite()

    def on_train_end(self) -> None:
        self.check_nonfinite()  # before encoder.pt is exported

    def on_train_start(self) -> None:
        for optimizer in self.trainer.optimizers:  # a resumed optimiser's rate: a tensor again
            tensor_learning_rates(optimizer)

    def extra_updates(self) -> None:
        """More updates after the optimisers' steps (DIM: its extra D steps); tensor ops only."""

    def step_variant(self) -> Hashable:
        """What, besides the batch's shape, makes this step's kernels differ from another's:
        a captured step (:mod:`.graphed`) keeps one graph per variant."""
        return None

    @property
    def _warmup_steps(self) -> int:
        return int(self.optim_cfg.get("warmup_steps") or 0)

    @property
    def other_losses(self) -> tuple[str, ...]:
        """Losses of optimisers other than the encoder's, added to the one backward."""
        return tuple(self.LOSS_OF.get(name, f"{name}_loss") for name in self.optimizer_names[1:])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the encoder's gradients here: after fp16 unscaling, right before its step."""
        clip = self.optim_cfg.get("grad_clip")
        if not clip or optimizer is not self.trainer.optimizers[0]:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            # a fused Adam, which unscales inside its step: Lightning's mixed precision (fp16 and
            # bf16) refuses to clip it, so unscale here under fp16 (the scaler's step then leaves
            # the gradients alone) and clip
            if scaler is not None:
                scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        else:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def on_validation_epoch_start(self) -> None:
        broadcast_buffers(self)  # DDP: evaluate the state rank 0 saves, the same on every process

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None or epoch_cut_short(self.trainer):  # the epoch goes on when resumed
            return
        for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
            # configure_optimizers builds cosine / multi-step schedules only: no metric to pass
            assert not isinstance(sch, torch.optim.lr_scheduler.ReduceLROnPlateau)
            sch.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, labels = batch
        self._log_step(self.compute_losses(x, labels), "val")

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
        # Fused Adam with tensor learning rates, capturable on CUDA (dim.methods.optimizers);
        # Lightning has moved the module to its device here.
        optimizers = [build_adam(params, betas=betas, **options) for _, params, options in groups]
        prepare_warm_up(optimizers[0], self._warmup_steps, groups[0][2]["lr"])
        max_epochs = (self.trainer.max_epochs or 1) if self._trainer else 1
        return optimizers, build_schedulers(optimizers[0], o, max_epochs)
