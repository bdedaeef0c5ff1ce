"""``trainer.precision=auto``: bf16 autocast where the hardware computes bf16 natively.

On a CPU with native bf16 instructions (AVX512-BF16 or AMX, e.g. AMD Zen 4 / Intel Sapphire
Rapids) bf16 autocast makes a DIM step about 1.5x faster; elsewhere torch emulates bf16 and it is
slower than float32, so ``auto`` picks ``32-true`` there.  On a GPU ``auto`` is ``bf16-mixed``
where CUDA supports bf16.  Measured in docs/fashion_mnist.md and docs/training.md.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo_field(key: str, path: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first ``key : value`` of /proc/cpuinfo (Linux), e.g. ``flags`` or ``model name``;
    None where there is no such file or line."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux: the flags in /proc/cpuinfo)."""
    flags = set((cpuinfo_field("flags") or "").split())
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, on_cpu: bool) -> str:
    """The Lightning precision to use for ``trainer.precision`` (``auto`` resolved; an explicit
    ``bf16-mixed`` on a CPU without native bf16 kept, with a note that it is emulated)."""
    if precision == "auto":
        if on_cpu:
            return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if on_cpu and precision.startswith("bf16") and not cpu_has_native_bf16():
        print(
            "note: this CPU has no native bf16 (avx512_bf16 / amx_bf16): bf16 is emulated and "
            "slower than float32; trainer.precision=auto picks 32-true here",
            file=sys.stderr,
        )
    return precision
