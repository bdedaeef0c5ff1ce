"""What bounds a GPU step, read off a ``torch.profiler`` trace (scripts/gpu_bench.py, docs/gpu.md).

Three numbers per training step: the kernel launches the host issues (CUDA runtime / driver
launch calls; a replayed CUDA graph is one ``cudaGraphLaunch`` however many kernels it holds),
the GPU's busy time (the union of its kernels' and copies' intervals: overlapping work on several
streams counts once) and the wall time.  Busy time over wall time is the GPU's busy share: near 1
the step is bound by the GPU, far below it by the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch.autograd import DeviceType

#: host-side calls that each put work on a GPU stream
LAUNCH_CALLS = frozenset(
    {
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cuLaunchKernel",
        "cuLaunchKernelEx",
        "cudaLaunchCooperativeKernel",
        "cudaGraphLaunch",
        "cudaMemcpyAsync",
        "cudaMemsetAsync",
    }
)


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals, overlaps counted once."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def summarize(events: Iterable[Any], steps: int, wall_s: float) -> dict[str, float | int | None]:
    """Per-step launches, GPU work and busy share of profiler ``events`` (``prof.events()``: each
    with ``name``, ``device_type`` and ``time_range`` in microseconds) covering ``steps`` steps
    that took ``wall_s`` seconds."""
    launches = graphs = 0
    gpu: list[tuple[float, float]] = []
    for event in events:
        if event.device_type == DeviceType.CUDA:
            gpu.append((float(event.time_range.start), float(event.time_range.end)))
        elif event.name in LAUNCH_CALLS:
            launches += 1
            graphs += event.name == "cudaGraphLaunch"
    busy_s = union_length(gpu) / 1e6
    return {
        "steps": steps,
        "launches_per_step": round(launches / steps, 1),
        "graph_launches_per_step": round(graphs / steps, 2),
        "gpu_ops_per_step": round(len(gpu) / steps, 1),
        "gpu_busy_ms_per_step": round(busy_s / steps * 1e3, 3),
        "wall_ms_per_step": round(wall_s / steps * 1e3, 3),
        "gpu_busy_share": round(busy_s / wall_s, 3) if gpu and wall_s > 0 else None,
    }
