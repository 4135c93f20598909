"""What a batch-1 decode step cannot go below, and where its time goes: shared by bench/generate.py
and bench/families.py.

  weight floor   every matrix the step multiplies by, read once: the bytes scanned by torch
                 (the largest of their 4-byte words: a read at memory speed, whatever the
                 dtype), and one row multiplied by each of them as the step's DecodeLinear
                 maps do, in the step's order, so that each comes from memory rather than
                 from a cache that held it for the previous call
  profile        torch.profiler over whole decode steps: each op's own time summed into
                 the whole step in C (decode_step.StepKernel, one call where it applies),
                 weight matmuls, attention, norms and activations, and other ops; what the
                 wall clock shows beyond all ops is Python and dispatch
  whole_step_in_c  whether the step runs as one C call (decode_step.StepKernel: one row, float32
                 norms, every matmul on the kernels below)
  matvec_kernel  whether the step's one-row matmuls (float32, int8) use glassformer.fast.matvec's C kernels,
                 or why not
  options        a weight option's logits and greedy tokens against float32's
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from glassformer.fast import matvec
from glassformer.fast.decode_step import StepKernel

# our C kernels (glassformer.fast.matvec), which the profiler sees only when named (see kernel_named)
KERNEL, ATTEND, STEP = "glassformer::matvec", "glassformer::attend", "glassformer::decode_step"
KERNELS = {matvec.MatVec: KERNEL, matvec.MatVecInt8: KERNEL, matvec.MatVecBf16: KERNEL, matvec.Attend: ATTEND,
           StepKernel: STEP}
MATMULS = (KERNEL, "aten::addmm", "aten::mm", "aten::_weight_int8pack_mm", "aten::matmul", "aten::linear")
ATTENTION = (ATTEND, "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm", "aten::_softmax",
             "aten::_safe_softmax", "aten::masked_fill", "aten::scaled_dot_product_attention")
ELEMENTWISE = ("aten::native_layer_norm", "aten::_fused_rms_norm", "aten::rms_norm", "aten::gelu", "aten::silu",
               "aten::relu", "aten::mul", "aten::add", "aten::sub", "aten::neg", "aten::layer_norm",
               "aten::add_", "aten::cat")


def best_ms(fn, runs: int, chunks: int = 5) -> float:
    """Milliseconds of one call of fn: the fastest of `chunks` averages over `runs` calls (a floor,
    so the fastest; steadier on a shared machine than the median), after one warm-up chunk."""
    for _ in range(runs):
        fn()
    best = float("inf")
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(runs):
            fn()
        best = min(best, (time.perf_counter() - start) / runs)
    return best * 1e3


def weight_floor(step, runs: int = 20, chunks: int = 5) -> dict:
    """The step's weight bytes and the two floors: all bytes summed once (stream), one row through
    every matmul (matvec); milliseconds, the fastest of several repeats."""
    maps = step.linears()
    tensors = [m.q if m.int8 else m.weight for m in maps]
    rows = {t.size(0 if not m.int8 and m.transposed else 1) for m, t in zip(maps, tensors)}
    dtype = step.model.tok_emb.weight.dtype
    x = {n: torch.randn(1, n, dtype=dtype) for n in rows}

    words = [t.reshape(-1).view(torch.int32 if t.numel() * t.element_size() % 4 == 0 else torch.uint8)
             for t in tensors]  # the same bytes as 4-byte integers, whatever the dtype: the read, not the arithmetic

    def stream():
        for w in words:
            w.amax()

    def one_row():
        for m, t in zip(maps, tensors):
            m(x[t.size(0 if not m.int8 and m.transposed else 1)])

    with torch.inference_mode():
        kernel = ("used" if any(m.matvec is not None for m in maps)
                  else matvec.unavailable_reason() or "for float32, int8 and bf16 weights at one row only")
        return {"weight_mb": round(sum(t.numel() * t.element_size() for t in tensors) / 1e6, 2),
                "matmuls": len(maps), "matvec_kernel": kernel, "whole_step_in_c": step.kernel is not None,
                "stream_floor_ms": round(best_ms(stream, runs, chunks), 3),
                "matvec_floor_ms": round(best_ms(one_row, runs, chunks), 3)}


@contextlib.contextmanager
def kernel_named():
    """Each call of our kernels as a profiler event (KERNEL for the matmuls, float32, int8 and bf16;
    ATTEND for the attention; STEP for the whole step in C: a ctypes call has no aten op to show
    it, so without this its time would count as Python), for the profiled run only."""
    calls = {kind: kind.__call__ for kind in KERNELS}

    def naming(kind):
        def named(self, *args):
            with record_function(KERNELS[kind]):
                return calls[kind](self, *args)
        return named

    for kind in KERNELS:
        kind.__call__ = naming(kind)
    try:
        yield
    finally:
        for kind, call in calls.items():
            kind.__call__ = call


def profile_decode(generate_once, new_tokens: int) -> dict:
    """ms per generated token split by what the ops do, from torch.profiler over one generation
    (prompt included, a small share at these lengths), and the same generation timed without
    the profiler; Python and dispatch = unprofiled wall time - all ops' own time (the profiler
    slows ops a little, so this is a lower bound)."""
    generate_once()  # warm-up
    start = time.perf_counter()
    generate_once()
    wall = (time.perf_counter() - start) * 1e3 / new_tokens
    with kernel_named(), profile(activities=[ProfilerActivity.CPU]) as prof:
        generate_once()
    split = {"whole_step_in_c": 0.0, "weight_matmuls": 0.0, "attention": 0.0, "norms_activations_residuals": 0.0,
             "other_ops": 0.0}
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / new_tokens
        kind = ("whole_step_in_c" if event.key == STEP else "weight_matmuls" if event.key in MATMULS
                else "attention" if event.key in ATTENTION
                else "norms_activations_residuals" if event.key in ELEMENTWISE else "other_ops")
        split[kind] += ms
    ops = sum(split.values())
    return {"wall_ms_per_token": round(wall, 3), **{f"{k}_ms": round(v, 3) for k, v in split.items()},
            "python_dispatch_ms": round(max(wall - ops, 0.0), 3)}


def shared_prefix(reference: list[list[int]], other: list[list[int]], prompt_len: int) -> int:
    """How many tokens two greedy generations share before their first difference (per row, the least)."""
    def shared(a: list[int], b: list[int]) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))

    return min(shared(a[prompt_len:], b[prompt_len:]) for a, b in zip(reference, other))


def logit_difference(reference: torch.nn.Module, other: torch.nn.Module, ids: torch.Tensor, prompt_len: int
                     ) -> dict:
    """Teacher-forced over ids (B, T), the reference's greedy text: the largest |logit difference|
    at any position, the largest |logit| of the reference for scale, and the share of generated
    positions where both models' argmax (their greedy choice in the same context) agree."""
    with torch.inference_mode():
        want, got = reference(ids).float(), other(ids).float()  # (B, T, V)
    chosen = slice(prompt_len - 1, -1)  # the positions whose argmax chose a generated token
    same = (want[:, chosen].argmax(-1) == got[:, chosen].argmax(-1)).float().mean()
    return {"max_logit_diff": round(float((got - want).abs().max()), 5),
            "max_abs_logit": round(float(want.abs().max()), 3),
            "greedy_agreement_teacher_forced": round(float(same), 4)}
