"""Training's elementwise layers in one pass each way: RMSNorm, the SwiGLU gate silu(g) * u and
RoPE's rotation, forward and backward, through the C kernels of fused.c, for float32 on CPU.

Each is an autograd function whose forward computes what the readable layer computes
(`layers.RMSNorm`, `layers.FeedForward`'s gate, `positions.apply_rotary`) and whose backward is
the derivative worked out by hand (in fused.c's comments); tests/test_fused.py holds both to
torch's autograd through the readable form. Where a kernel does not apply (another dtype or
device, under torch.compile, no C compiler, GLASSFORMER_NO_KERNEL=1) the callers compute the
readable form with torch's ops. RMSNorm's and RoPE's forward also serve evaluation and the
prompts of generation; the gate's kernel runs only while autograd records (training), so that
an observer of the activation module sees it called.

Why: on CPU, torch 2.13's ops for these are a pass over memory each, with autograd's bookkeeping
between them, and F.rms_norm is differentiated through its decomposition (the preset's whole
training step in float32: 1.14-1.24x faster with the kernels; figures on the docs' performance page).

`rms_norm_or_torch`, `swiglu_or_torch` and `rotary_or_torch` are the maps the fast modules
(glassformer.fast.accelerate) and the one-token decode step call: the kernel where it applies, else
the readable form in torch's ops.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from glassformer.fast import matvec
from glassformer.model.positions import apply_rotary

SOURCE = matvec.SOURCE.with_name("fused.c")

_loaded: dict[str, object] = {}  # "library": the ctypes library or None, "reason": why None


class Rows(ctypes.Structure):
    """fused.c's gf_rows: n0 x n1 x n2 rows, s0, s1, s2 numbers apart, each of d contiguous numbers."""

    _fields_ = [(name, ctypes.c_long) for name in ("n0", "n1", "n2", "s0", "s1", "s2")]


def rows_of(x: torch.Tensor) -> Rows | None:
    """The rows of x (..., d) as fused.c reads them, or None where its last dimension is not
    contiguous or it has more than three leading dimensions that are not one."""
    if x.stride(-1) != 1 or x.dim() < 2:
        return None
    lead = [(n, s) for n, s in zip(x.shape[:-1], x.stride()[:-1]) if n != 1]
    if len(lead) > 3:
        return None
    lead = [(1, 0)] * (3 - len(lead)) + lead  # (n0, s0), (n1, s1), (n2, s2), the last the fastest
    return Rows(lead[0][0], lead[1][0], lead[2][0], lead[0][1], lead[1][1], lead[2][1])


def readable(x: torch.Tensor) -> tuple[torch.Tensor, Rows]:
    """x and its rows as fused.c reads them: x itself where its strides allow, else a contiguous
    copy, flattened to (rows, d) where it has more than three leading dimensions. Row r is row r
    of x in C order either way."""
    rows = rows_of(x)
    if rows is None:
        x = x.contiguous()
        rows = rows_of(x)
        if rows is None:
            x = x.view(-1, x.size(-1))
            rows = rows_of(x)
    return x, rows


def load() -> tuple[object | None, str | None]:
    """(the library, None) or (None, why not): built and checked as matvec's kernel is."""
    library, reason = matvec.open_library(SOURCE)
    if library is None:
        return None, reason
    p, n, f, i, rows = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int, Rows
    signatures = {
        "glassformer_rms_norm_forward": [p, rows, n, p, f, p, p, i],
        "glassformer_rms_norm_backward": [p, p, rows, n, p, p, p, p, p, i],
        "glassformer_swiglu_forward": [p, n, p, n, p, n, n, i],
        "glassformer_swiglu_backward": [p, p, n, p, n, p, n, p, n, n, n, i],
        "glassformer_rotary": [p, rows, n, p, p, f, p, i],
    }
    for name, argtypes in signatures.items():
        function = getattr(library, name)
        function.restype, function.argtypes = None, argtypes
    return library, None


def library():
    """The kernels' library, or None where they are unavailable (see unavailable_reason)."""
    if matvec.disabled():
        return None
    if "library" not in _loaded:
        _loaded["library"], _loaded["reason"] = load()
    return _loaded["library"]


def unavailable_reason() -> str | None:
    """Why the readable forms are used for every call (None when the kernels are there to use)."""
    if matvec.disabled():
        return f"{matvec.DISABLE} is set"
    library()
    return _loaded["reason"]


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors: float32 on CPU, not under torch.compile, the
    kernels built."""
    return (all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)
            and not torch.compiler.is_compiling() and library() is not None)


def threads() -> int:
    """The kernels' OpenMP team: torch's thread count, so the cores are never oversubscribed."""
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# RMSNorm


class RMSNormFunction(torch.autograd.Function):
    """x (..., d), weight (d,) -> x / sqrt(mean(x²) + eps) * weight."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.shape = x.shape
        x, rows = readable(x)
        y = torch.empty(ctx.shape, dtype=x.dtype)
        rstd = torch.empty(ctx.shape[:-1], dtype=x.dtype)  # 1 / sqrt(mean(x²) + eps) per row
        library().glassformer_rms_norm_forward(x.data_ptr(), rows, x.size(-1), weight.data_ptr(), eps, y.data_ptr(),
                                               rstd.data_ptr(), threads())
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable  # a second derivative through it raises, never comes out wrong
    def backward(ctx, gy):
        x, weight, rstd = ctx.saved_tensors
        gy = gy.contiguous()
        d, team = x.size(-1), threads()
        gx = torch.empty(ctx.shape, dtype=x.dtype)
        want_gw = ctx.needs_input_grad[1]
        gw = torch.empty(d, dtype=x.dtype) if want_gw else None
        partial = torch.empty(team, d, dtype=x.dtype) if want_gw else None  # each thread's sum over its rows
        library().glassformer_rms_norm_backward(gy.data_ptr(), x.data_ptr(), rows_of(x), d, weight.data_ptr(),
                                                rstd.data_ptr(), gx.data_ptr(), gw.data_ptr() if want_gw else None,
                                                partial.data_ptr() if want_gw else None, team)
        return gx, gw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    """layers.RMSNorm's map through the kernels, or None where they do not apply."""
    if not applies(x, weight) or x.dim() < 2 or x.numel() == 0:
        return None
    return RMSNormFunction.apply(x, weight, eps)


# ---------------------------------------------------------------------------------------------
# SwiGLU's gate


def gate_rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """t (..., m), its last dimension contiguous -> (t as (rows, m), the distance between rows): a
    view where the leading dimensions merge (the halves of one projection too), else a copy."""
    flat = t.reshape(-1, t.size(-1))
    return flat, flat.stride(0) if flat.size(0) > 1 else t.size(-1)


class SwiGLUFunction(torch.autograd.Function):
    """g, u (..., m) -> silu(g) * u."""

    @staticmethod
    def forward(ctx, g, u):
        (gf, gs), (uf, us) = gate_rows(g), gate_rows(u)
        h = torch.empty(g.shape, dtype=g.dtype)
        library().glassformer_swiglu_forward(gf.data_ptr(), gs, uf.data_ptr(), us, h.data_ptr(), gf.size(0),
                                             g.size(-1), threads())
        ctx.save_for_backward(gf, uf)
        ctx.strides, ctx.shape = (gs, us), g.shape
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gh):
        gf, uf = ctx.saved_tensors
        gs, us = ctx.strides
        gh = gh.contiguous()
        rows, m = gf.shape
        dg, du = torch.empty(rows, m), torch.empty(rows, m)
        library().glassformer_swiglu_backward(gh.data_ptr(), gf.data_ptr(), gs, uf.data_ptr(), us, dg.data_ptr(), m,
                                              du.data_ptr(), m, rows, m, threads())
        return dg.view(ctx.shape), du.view(ctx.shape)


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor | None:
    """silu(g) * u through the kernels, or None where they do not apply."""
    if (not applies(g, u) or g.shape != u.shape or g.dim() < 2 or g.numel() == 0
            or not g.stride(-1) == u.stride(-1) == 1):
        return None
    return SwiGLUFunction.apply(g, u)


# ---------------------------------------------------------------------------------------------
# RoPE


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """x (B, h, T, d) turned by the angles (T, d/2) (sign -1: turned back), contiguous."""
    x, rows = readable(x)  # four dimensions: x itself, or a contiguous copy of it
    y = torch.empty(x.shape, dtype=x.dtype)
    library().glassformer_rotary(x.data_ptr(), rows, x.size(-1), cos.data_ptr(), sin.data_ptr(), sign, y.data_ptr(),
                                 threads())
    return y


class RotaryFunction(torch.autograd.Function):
    """x (B, h, T, d), cos and sin (T, d/2) -> x rotated ("rotate half" layout)."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return rotate(x, cos, sin, 1.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        cos, sin = ctx.saved_tensors
        return rotate(gy, cos, sin, -1.0), None, None  # a rotation's transpose turns back


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor | None:
    """positions.apply_rotary through the kernels, or None where they do not apply (the angles
    differentiable, not (T, d/2) contiguous, an odd d, or one position: fused.c's rows leave out
    dimensions of one, and the positions would not be the fastest index)."""
    if (not applies(x, cos, sin) or x.dim() != 4 or x.size(-1) % 2 or x.numel() == 0
            or cos.shape != (x.size(-2), x.size(-1) // 2) or sin.shape != cos.shape
            or not (cos.is_contiguous() and sin.is_contiguous()) or cos.requires_grad or sin.requires_grad):
        return None
    if x.size(-2) == 1:
        return None
    return RotaryFunction.apply(x, cos, sin)


# ---------------------------------------------------------------------------------------------
# The maps with their readable fallbacks


def rms_norm_or_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """layers.RMSNorm's map: through the kernels where they apply, else torch's rms_norm."""
    weight = weight if weight.dtype == x.dtype else weight.to(x.dtype)  # bf16 input under autocast (qk_norm)
    y = rms_norm(x, weight, eps)
    return y if y is not None else F.rms_norm(x, (x.size(-1),), weight, eps)


def swiglu_or_torch(g: torch.Tensor, u: torch.Tensor, act) -> torch.Tensor:
    """act(g) * u, SwiGLU's gate: through the kernels while autograd records (training) and `act` is
    SiLU, so that outside training an observer of the activation module sees it called."""
    if type(act) is torch.nn.SiLU and torch.is_grad_enabled() and (g.requires_grad or u.requires_grad):
        hidden = swiglu(g, u)
        if hidden is not None:
            return hidden
    return act(g) * u


def rotary_or_torch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """positions.apply_rotary: through the kernels where they apply, else in torch's ops."""
    y = rotary(x, cos, sin)
    return y if y is not None else apply_rotary(x, cos, sin)
