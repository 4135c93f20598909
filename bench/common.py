"""Shared pieces of the benchmarks: contenders timed in turn, the machine's matmul peaks, one JSON line per result."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from glassformer.base.device import native_bf16

NOT_NATIVE = "not native"  # what a bf16 figure reads where the hardware has no bf16 units


def emit(record: dict) -> None:
    """Prints one benchmark result as a JSON line, with the machine it ran on."""
    record = {**record, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0]}
    print(json.dumps(record), flush=True)


@dataclass(frozen=True)
class Timing:
    """Seconds of repeated runs: the median is the figure, min and max show how steady the machine was."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        return cls(statistics.median(seconds), min(seconds), max(seconds), len(seconds))

    def fields(self) -> dict:
        """The JSON fields of this timing: median_s, min_s, max_s and runs."""
        return {"median_s": round(self.median, 6), "min_s": round(self.min, 6), "max_s": round(self.max, 6),
                "runs": self.runs}


def alternate(contenders: dict[str, Callable[[], object]], repeat: int, warmup: int = 1) -> dict[str, Timing]:
    """Times each contender `repeat` times, taking turns: A B C, A B C, ...

    Every contender first runs `warmup` times untimed (first-call costs: allocation, kernel choice).
    Taking turns within each repeat, rather than all runs of A then all of B, puts a drift of a
    shared machine (another job starting, the clock throttling) on every contender alike.

    Args:
        contenders: name -> a function that does one timed unit of work (its result is ignored).
        repeat: timed runs of each contender.
        warmup: untimed runs of each contender before the first timed one.

    Returns:
        name -> the Timing of its `repeat` runs, in seconds.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing.of(s) for name, s in seconds.items()}


def matmul_peak(dtype: torch.dtype, n: int = 2048, budget_s: float = 2.0, repeat: int = 10,
                device: torch.device | str = "cpu") -> float:
    """FLOP/s of a large square matmul: what this machine's matrix units reach at best.

    The fastest run, not the median: a peak, and steadier on a shared machine. One warm-up run,
    then up to `repeat` runs, stopping early once `budget_s` seconds have been spent. On a GPU
    each run waits for the device (`synchronize`), so that it times the product, not its launch.
    """
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)

    def product():
        a @ b
        synchronize(a.device)

    product()  # warm-up
    return 2 * n ** 3 / min(timed_runs(product, repeat, budget_s))


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); nothing on a CPU, whose ops return when done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(fn: Callable[[], object], repeat: int, budget_s: float, at_least: int = 1) -> list[float]:
    """Seconds of each call of fn: up to `repeat` calls, stopping once `budget_s` seconds have
    been spent and at least `at_least` calls were made (warm-ups are the caller's)."""
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < repeat and (len(seconds) < at_least or time.perf_counter() - started < budget_s):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def matmul_peaks(device: torch.device | str = "cpu") -> dict[str, float | None]:
    """The device's fp32 peak FLOP/s, and its bf16 peak where it has bf16 units (None where it has not).

    Emulated bf16 runs far below fp32 (0.3 GFLOP/s on one CPU, minutes per matmul), so it is
    not measured: an MFU against it would only say the emulation is slow. A GPU is measured on
    a square 8192 matmul (2048 leaves its units idle), in fp32 as torch's default precision runs it.
    """
    device = torch.device(device)
    n = 8192 if device.type == "cuda" else 2048
    bf16 = matmul_peak(torch.bfloat16, n, device=device) if native_bf16(device) else None
    return {"fp32": matmul_peak(torch.float32, n, device=device), "bf16": bf16}


def offline() -> None:
    """No network: every Hugging Face model here is built from a config, nothing is downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def descendants(root: int) -> set[int]:
    """The process `root` and all its descendants now (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                # The command name may hold spaces and parentheses: the fields after the last ")" are fixed.
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree
