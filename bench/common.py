"""Shared pieces of the benchmarks: timing, the machine's matmul peak, one JSON line per result."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import torch


def emit(record: dict) -> None:
    """Prints one benchmark result as a JSON line, with the machine it ran on."""
    record = {**record, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0]}
    print(json.dumps(record), flush=True)


def timed(fn, warmup: int, repeat: int) -> float:
    """Median seconds of `fn()` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeat: int = 10) -> float:
    """FLOP/s of a large square matmul: what this machine's matrix units reach at best.

    The fastest of `repeat` runs, not the median: a peak, and steadier on a shared machine.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(seconds)


def offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
