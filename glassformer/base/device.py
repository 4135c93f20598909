"""Where a model runs and in which precision: the device, and bfloat16 only where the hardware multiplies it;
and how much memory the machine has."""

from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def memory_bytes(free: bool = False) -> int | None:
    """The machine's physical memory in bytes (POSIX sysconf), or with free=True the part free now;
    None where the system does not say (not POSIX)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES" if free else "SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_device_name(name: str) -> None:
    """Raises ValueError (one line listing the allowed names) unless `name` is auto, cpu, cuda, cuda:N or mps."""
    kind, sep, index = name.partition(":")
    if kind not in DEVICES or (sep and not (kind == "cuda" and index.isdigit())):
        raise ValueError(f"device {name!r} is not one of {', '.join(DEVICES)}, cuda:N (N a GPU number)")


def pick_device(name: str) -> torch.device:
    """The torch device for a --device name: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device_name(name)
    kind, sep, index = name.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} was asked for, but no CUDA GPU is available")
    if kind == "cuda" and sep and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {name} was asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps was asked for, but no Apple GPU (MPS) is available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bfloat16 in hardware (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # AVX512-BF16 or AMX; e.g. an Ice Lake Xeon has neither and runs bf16 at 1/5 of fp32
        cpu = torch.cpu
        return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported",
                                                                       "_is_amx_tile_supported"))
    return False


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]
