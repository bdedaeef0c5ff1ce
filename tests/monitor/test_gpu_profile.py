"""dim.monitor.gpu_profile: launches, GPU busy time and share per step from profiler events."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.autograd import DeviceType

from dim.monitor.gpu_profile import summarize, union_length


def _event(name: str, device: DeviceType, start: float, end: float) -> SimpleNamespace:
    return SimpleNamespace(
        name=name, device_type=device, time_range=SimpleNamespace(start=start, end=end)
    )


def test_union_counts_overlapping_work_once():
    assert union_length([]) == 0
    assert union_length([(0, 10), (5, 15), (20, 25), (21, 22)]) == 20
    assert union_length([(3, 4), (0, 1)]) == 2


def test_summary_per_step():
    cpu, gpu = DeviceType.CPU, DeviceType.CUDA
    events = [
        _event("cudaLaunchKernel", cpu, 0, 1),
        _event("cudaLaunchKernel", cpu, 1, 2),
        _event("cudaGraphLaunch", cpu, 2, 3),
        _event("aten::mm", cpu, 0, 3),  # an operator, no launch of its own
        _event("gemm_kernel", gpu, 0, 1000),  # microseconds
        _event("copy_kernel", gpu, 500, 1500),  # overlaps on another stream: counted once
        _event("graph_kernel", gpu, 3000, 4000),
    ]
    summary = summarize(events, steps=2, wall_s=0.01)
    assert summary["launches_per_step"] == 1.5 and summary["graph_launches_per_step"] == 0.5
    assert summary["gpu_ops_per_step"] == 1.5
    assert summary["gpu_busy_ms_per_step"] == pytest.approx(1.25)  # 2.5 ms over 2 steps
    assert summary["wall_ms_per_step"] == pytest.approx(5.0)
    assert summary["gpu_busy_share"] == pytest.approx(0.25)


def test_a_cpu_trace_has_no_gpu_share():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ones(4) @ torch.ones(4)
    summary = summarize(prof.events(), steps=1, wall_s=0.1)
    assert summary["launches_per_step"] == 0 and summary["gpu_busy_share"] is None
