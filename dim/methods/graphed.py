"""The training step replayed as CUDA graphs (``model.cuda_graph=true``, docs/gpu.md).

On a GPU the eager step of DIM at batch 256 is bound by the host: about 430 kernel launches,
16 ms of host time against 4.5 ms of GPU work.  A captured graph launches them all at once.  The
step is already free of host reads (``tests/methods/test_host_sync.py``) and its optimisers are
fused, capturable and read tensor learning rates (:mod:`dim.methods.optimizers`), so the whole of
it is captured: :func:`capturable_step` runs the forward (autocast without its weight cache, so
each replay casts the current weights), the one backward (the prior's gradient penalty, a double
backward, included), the non-finite checks, every optimiser's step, gradient clipping and the
method's extra updates (DIM's extra D steps).  :class:`GraphedStep` runs it for Lightning's
``training_step``:

- each batch is copied into static input buffers (one pair per batch shape), which the graph
  reads;
- what depends on host values stays outside the graph: the warm-up's learning rate (written into
  the rate tensor the graph reads, before each replay), the global step count, the non-finite
  record (it names the step), the probes' logging window and the logging, which reads *clones* of
  the graph's outputs after the replay (a later replay overwrites the outputs in place);
- warm-up: the first :data:`WARMUP_STEPS` steps, and the first step of each variant, run eagerly
  on a side stream (optimiser state, cuBLAS/cuDNN handles and autograd's streams exist before any
  capture); then each variant is captured once on that stream and replayed from then on (a
  capture CUDA refuses stops the run in one line naming the error).  A
  variant is the method's :meth:`~dim.methods.base.MethodModule.step_variant` (DIM with
  ``model.gp_every > 1``: a step with the penalty and one without) and the batch's shapes;
- random numbers: the step draws from the default CUDA generator (the prior's samples, the local
  term's locations, AMDIM's source locations), which ``torch.cuda.graph`` registers: each replay
  advances its offset as the eager step would, so the draws are the eager ones and the RNG
  states saved in checkpoints resume exactly.  The data's augmentation draws (device data: a
  generator seeded per batch) happen in the data pipeline, before the batch is copied in.

Runs on one CUDA device (no DDP), in fp32 or bf16 (fp16's loss scaler is not captured), with the
``stop`` non-finite policy (``skip`` reads a flag every step) and without ``model.compile``
(:func:`check_cuda_graph` refuses the rest in one line).  ``capture=False`` runs the same split
step, buffers and replay bookkeeping eagerly (:class:`EagerReplay`): how the CPU tests check that
it equals the normal step exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from dim.errors import DimError
from dim.methods.optimizers import warm_up
from dim.objective.bounds import trusted_masks

#: eager steps (on a side stream) before the first capture; each variant also runs once eagerly
WARMUP_STEPS = 3


@dataclass
class StepOutputs:
    """What one step leaves for the host: the losses and metrics (``out``), the summed loss, the
    non-finite checks with their names, and the encoder's detached Y (for the histograms)."""

    out: dict[str, Tensor]
    total: Tensor
    terms: list[str]
    checks: Tensor | None
    last_y: Tensor | None

    def tensors(self) -> list[Tensor | None]:
        return [*self.out.values(), self.total, self.checks, self.last_y]


def capturable_step(
    module: Any, optimizers: list[torch.optim.Optimizer], x: Tensor, labels: Tensor | None
) -> StepOutputs:
    """One training step of ``module`` (a :class:`~dim.methods.base.MethodModule`) on the raw
    torch ``optimizers`` (encoder first) with no host read and no host-valued input: what a CUDA
    graph can hold.  Numerically the normal ``training_step`` (same ops, same order, same random
    draws); the encoder's warm-up rate is written before it is called."""
    device = x.device.type
    # the precision plugin's autocast, re-entered without the weight cache: a cached cast made
    # outside a capture would be replayed as a stale copy of the weights
    with torch.autocast(
        device,
        dtype=torch.get_autocast_dtype(device),
        enabled=torch.is_autocast_enabled(device),
        cache_enabled=False,
    ):
        with trusted_masks():
            out = module.compute_losses(x, labels)
        total = out["encoder_loss"]
        for key in module.other_losses:  # the other players' losses (disjoint parameters)
            if key in out:
                total = total + out[key]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        terms, checks = module._nonfinite_checks(out, gradients=True)
        for opt in optimizers[1:]:  # the other players and probes first, as training_step
            opt.step()
        clip = module.optim_cfg.get("grad_clip")
        if clip:  # what Lightning's clip_gradients does for the encoder's optimiser
            params = [p for group in optimizers[0].param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        optimizers[0].step()
        module.extra_updates()
    return StepOutputs(out, total.detach(), terms, checks, getattr(module, "last_y", None))


class Replay(Protocol):
    """A recorded step: ``replay()`` runs it; ``outputs`` are fixed tensors it overwrites."""

    outputs: StepOutputs | None

    def replay(self) -> None: ...


class CapturedGraph:
    """A step captured with ``torch.cuda.graph``.  It keeps the gradients its backward writes
    alive: after another variant's capture the parameters' ``.grad`` are that one's."""

    def __init__(self, graph: torch.cuda.CUDAGraph, outputs: StepOutputs, kept: list[Any]) -> None:
        self.graph, self.kept = graph, kept
        self.outputs: StepOutputs | None = outputs

    def replay(self) -> None:
        self.graph.replay()


class EagerReplay:
    """A graph's stand-in that runs eagerly (CPU, tests): each replay runs the step and writes its
    results into the tensors of the first one, which stay the outputs, as a graph's do."""

    def __init__(self, step: Callable[[], StepOutputs]) -> None:
        self.step = step
        self.outputs: StepOutputs | None = None

    def replay(self) -> None:
        new = self.step()
        if self.outputs is None:
            self.outputs = new
            return
        for mine, theirs in zip(self.outputs.tensors(), new.tensors(), strict=True):
            if mine is not None and theirs is not None:
                mine.copy_(theirs)


def capture(
    step: Callable[[], StepOutputs], optimizers: list[torch.optim.Optimizer], stream: Any
) -> CapturedGraph:
    """Capture ``step`` on ``stream`` (the side stream its warm-up ran on).  The gradients are
    set to None first, so the backward allocates them from the graph's private pool."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    torch.clear_autocast_cache()
    graph = torch.cuda.CUDAGraph()
    # thread_local: a DataLoader's pin-memory thread may allocate pinned memory meanwhile
    with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        outputs = step()
    kept = [p.grad for opt in optimizers for group in opt.param_groups for p in group["params"]]
    return CapturedGraph(graph, outputs, kept)


def on_side_stream(step: Callable[[], StepOutputs], stream: Any) -> StepOutputs:
    """Run ``step`` eagerly on ``stream``, ordered after and before the current stream's work."""
    current = torch.cuda.current_stream(stream.device)
    stream.wait_stream(current)  # also: memory it frees is reused only after current's reads
    with torch.cuda.stream(stream):
        result = step()
    current.wait_stream(stream)
    return result


class GraphedStep:
    """Lightning's ``training_step`` of a method as captured CUDA graphs (module docstring).

    Args:
        module: the method (a :class:`~dim.methods.base.MethodModule`).
        capture: False runs everything eagerly, the graphs replaced by :class:`EagerReplay`.
        warmup: eager steps before the first capture.
    """

    def __init__(self, module: Any, capture: bool = True, warmup: int = WARMUP_STEPS) -> None:
        self.module, self.capture, self.warmup = module, capture, warmup
        self.graphs: dict[Hashable, Replay] = {}
        self.eager_steps: Counter[Hashable] = Counter()  # per variant
        self.replays = 0
        self._inputs: dict[Hashable, tuple[Tensor, Tensor | None]] = {}
        self._stream: Any = None

    def step(self, batch: tuple[Tensor, Tensor | None], batch_idx: int) -> Tensor:
        m = self.module
        x, labels = batch
        if self.capture and x.device.type != "cuda":
            raise DimError(
                f"model.cuda_graph=true captures the training step on a CUDA GPU; this batch is "
                f"on {x.device.type}: train with trainer=gpu, or set model.cuda_graph=false"
            )
        lightning = m._optimizers()
        optimizers = [opt.optimizer for opt in lightning]
        step = m.global_step
        warm_up(optimizers[0], step, m._warmup_steps)  # into the rate tensor the graph reads
        x, labels = self.static_inputs(x, labels)
        key = (m.step_variant(), tuple(x.shape), None if labels is None else tuple(labels.shape))
        graph = self.graphs.get(key)
        if graph is None and self._due(key):
            graph = self._try_record(key, optimizers, x, labels)
        if graph is not None:
            graph.replay()
            assert graph.outputs is not None
            result = graph.outputs
            self.replays += 1
        else:
            result = self._eager(optimizers, x, labels)
            self.eager_steps[key] += 1
        if result.last_y is not None:
            m.last_y = result.last_y  # this replay's Y for the histograms callback
        # what LightningOptimizer.step does around a step in manual optimisation: global_step += 1
        lightning[0]._on_before_step()
        lightning[0]._on_after_step()
        if result.checks is not None:
            m.nonfinite.record(result.terms, result.checks, step)
        m._accumulate_probe_hits(result.out)
        m._check_due = m._logged_step(batch_idx)
        if m._check_due:  # Lightning reads the logged tensors later: clones, not the outputs
            m._log_step({k: v.clone() for k, v in result.out.items()}, "train")
        return result.total

    def _due(self, key: Hashable) -> bool:
        """Capture this variant now: it ran eagerly and the warm-up is over."""
        return self.eager_steps[key] > 0 and self.eager_steps.total() >= self.warmup

    def _try_record(
        self,
        key: Hashable,
        optimizers: list[torch.optim.Optimizer],
        x: Tensor,
        labels: Tensor | None,
    ) -> Replay:
        """Record the variant ``key``.  A capture CUDA refuses (an op a graph cannot hold) stops
        the run in one line: after a failed capture the CUDA generator's state is not one an
        eager step could go on from exactly, so there is no silent fallback."""
        try:
            graph = self.graphs[key] = self._record(optimizers, x, labels)
        except RuntimeError as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise DimError(
                f"model.cuda_graph=true: CUDA refused to capture the training step {key} "
                f"({first}); set model.cuda_graph=false"
            ) from None
        return graph

    def static_inputs(self, x: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The static buffers of this batch shape, filled with the batch (one copy each)."""
        key = (tuple(x.shape), x.dtype, None if labels is None else (labels.shape, labels.dtype))
        if key not in self._inputs:
            empty = None if labels is None else torch.empty_like(labels)
            self._inputs[key] = (torch.empty_like(x), empty)
        x_static, labels_static = self._inputs[key]
        x_static.copy_(x, non_blocking=True)
        if labels_static is not None and labels is not None:
            labels_static.copy_(labels, non_blocking=True)
        return x_static, labels_static

    def _side_stream(self, device: torch.device) -> Any:
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=device)
        return self._stream

    def _eager(
        self, optimizers: list[torch.optim.Optimizer], x: Tensor, labels: Tensor | None
    ) -> StepOutputs:
        def step() -> StepOutputs:
            return capturable_step(self.module, optimizers, x, labels)

        if not self.capture:
            return step()
        return on_side_stream(step, self._side_stream(x.device))

    def _record(
        self, optimizers: list[torch.optim.Optimizer], x: Tensor, labels: Tensor | None
    ) -> Replay:
        def step() -> StepOutputs:
            return capturable_step(self.module, optimizers, x, labels)

        if not self.capture:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            return EagerReplay(step)
        return capture(step, optimizers, self._side_stream(x.device))


def _devices(value: Any) -> int:
    """How many devices a ``trainer.devices`` value asks for (``auto``/-1: possibly several)."""
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, int):
        return value if value >= 0 else 2
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return 2 if text in ("auto", "-1") else 1


def check_cuda_graph(
    model: dict[str, Any], optim: dict[str, Any], trainer: dict[str, Any], cuda: bool
) -> None:
    """Refuse, in one line and before any data is loaded, what ``model.cuda_graph=true`` cannot
    run: no CUDA GPU, several processes, fp16, ``optim.on_nonfinite=skip``, ``model.compile``."""
    if not model.get("cuda_graph"):
        return
    accelerator = str(trainer.get("accelerator", "auto"))
    if not cuda or accelerator == "cpu":
        where = "this machine has none" if not cuda else f"trainer.accelerator={accelerator}"
        raise DimError(
            f"model.cuda_graph=true captures the training step on a CUDA GPU and {where}; "
            "train with trainer=gpu, or set model.cuda_graph=false"
        )
    strategy = str(trainer.get("strategy", "auto"))
    several = _devices(trainer.get("devices", 1)) > 1 or int(trainer.get("num_nodes", 1)) > 1
    if several or "ddp" in strategy or "fsdp" in strategy:
        raise DimError(
            "model.cuda_graph=true captures the step of one process on one GPU; set "
            "trainer.devices=1 trainer.strategy=auto (trainer=gpu), or model.cuda_graph=false "
            "to train with DDP"
        )
    precision = str(trainer.get("precision", "32-true"))
    if precision.startswith("16"):
        raise DimError(
            f"model.cuda_graph=true does not capture fp16's loss scaler "
            f"(trainer.precision={precision}); use trainer.precision=bf16-mixed or 32-true"
        )
    if optim.get("on_nonfinite", "stop") == "skip":
        raise DimError(
            "model.cuda_graph=true cannot read the non-finite flag inside a step, which "
            "optim.on_nonfinite=skip does every step; use optim.on_nonfinite=stop"
        )
    check_compile(model)


def check_compile(model: dict[str, Any]) -> None:
    """``model.cuda_graph`` and ``model.compile`` are two ways to the same end: one at a time."""
    if model.get("cuda_graph") and model.get("compile"):
        raise DimError(
            "model.cuda_graph=true and model.compile=true: choose one (model.compile=true "
            "model.compile_mode=reduce-overhead is the compiled way to CUDA graphs)"
        )
