"""Weight-only int8 and bfloat16 storage for generation, explicit options (never the default).

At batch 1 a decode step multiplies one vector by every weight matrix, so its time is the time
to read the weights: 43 MB in float32 for a 6-layer d384 GPT (more than a 32 MB L3 cache holds),
1.98 GB for Qwen2.5-0.5B. Stored as int8 with one float scale per output channel they take a
quarter of the bytes:

    W ≈ scale[:, None] * q,   q = round(W / scale[:, None]) in [-127, 127],   scale = max_j |W_ij| / 127

so each weight is off by at most scale_i / 2. The product runs in bfloat16 (torch's CPU kernel
for int8 weights reads bfloat16 inputs fast where the CPU has AVX512-BF16, and float32 inputs
several times slower), so the input row and the output are also rounded to bfloat16 (relative
error 2^-8 each); one float32 row on CPU, a decode step's, goes through glassformer.fast.matvec's
int8 kernel instead, in float32 without those two roundings, and so do a prompt's rows where
the CPU has no bfloat16 units (see int8_linear). `int8_error_bound` states what
the bfloat16 path adds up to for one matmul (the float32 kernel stays within it), and
bench/generate.py and bench/families.py report the logit difference to float32 and the greedy
tokens' agreement for whole models.

`quantize(model)` swaps the model's linear maps (attention, feed-forward, output head) for
Int8Linear in place; embeddings and norms stay as they are. The modules and the one-token
decode step (decode_step.DecodeStep) then compute with the same int8 weights.

The other explicit storage, `quantize(model, "bf16")`, keeps each matrix in bfloat16 (Bf16Linear)
and computes in the model's dtype: half of float32's bytes, each weight off by at most 2^-8 of
itself (none at all for a checkpoint stored in bfloat16, as most pretrained ones are, whose
values come back exactly), and the products and sums in float32, where bf16_linear widens
the weights; one float32 row goes through matvec's bf16 kernel, which widens them in registers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from glassformer.base.choices import WEIGHTS
from glassformer.base.device import native_bf16
from glassformer.fast import matvec

COMPUTE = torch.bfloat16  # the dtype the int8 product runs in (but see int8_linear: float32 where bf16 is emulated)
UNIT_ROUNDOFF = 2.0 ** -8  # bfloat16 rounds to 8 significant bits: relative error at most 2^-8
KERNEL_ROWS = 32  # from this many rows on, widening the weights for bfloat16's matmul is faster


def check_weights(weights: str) -> None:
    """Raises ValueError for a weight storage that is not one of WEIGHTS."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (out, in) -> (q int8 (out, in), scale float32 (out,)) with weight ≈ scale[:, None] * q.

    A row of zeros gets scale 1 (its q is 0 either way), so no scale is 0.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127  # (out,): the row's largest magnitude maps to 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale


def int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
                ) -> torch.Tensor:
    """x (..., in) -> x (scale * q)ᵀ + b, (..., out), in x's dtype; the product in bfloat16, but for
    one float32 row on CPU (a decode step of one sequence), which goes through matvec's int8
    kernel in float32 where it is available (matvec.MatVecInt8: 35% less time per token).

    For a few rows on CPU, with `in` a multiple of 16, this is torch's int8-weight kernel (aten's
    _weight_int8pack_mm, which reads the int8 weights without widening them in memory; other
    widths it computes wrongly). Its time grows with the rows, so from KERNEL_ROWS rows on (a
    prompt), and on other devices, the weights are widened for the call and multiplied by a
    matmul: in bfloat16 where the hardware multiplies it (measured on a 2-core Zen 4, a 4864 x
    896 matrix: at 1 row 0.24 ms against 1.8 ms widened; at 32 rows 4.0 against 3.2; at 128 rows
    16 against 7.2), in float32 where bfloat16 is emulated, which is also exact up to float32's
    sum (on a 2-core Zen 3, AVX2 only: at 32 rows 8.0 ms against 18.5 in bfloat16 and 3.9 in
    torch's kernel; at 128 rows 16.3 against 66.3 and 21.1).
    """
    shape = x.shape
    if x.dtype == torch.float32 and x.numel() == shape[-1] and not (torch.is_grad_enabled() and x.requires_grad):
        kernel = matvec.bind_int8(q, scale, bias)  # one float32 row on CPU: matvec's int8 kernel, in float32
        if kernel is not None:
            return kernel(x)
    rows = x.reshape(-1, shape[-1])  # (N, in)
    if x.device.type == "cpu" and q.size(1) % 16 == 0 and rows.size(0) < KERNEL_ROWS:
        y = torch.ops.aten._weight_int8pack_mm(rows.to(COMPUTE).contiguous(), q, scale.to(COMPUTE))  # (N, out)
    else:
        wide = COMPUTE if native_bf16(x.device) else torch.float32
        y = F.linear(rows.to(wide), q.to(wide)) * scale.to(wide)
    y = y.to(x.dtype).reshape(*shape[:-1], q.size(0))
    return y + bias if bias is not None else y


def int8_error_bound(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """An upper bound on |int8_linear(x, q, scale) - x Wᵀ| per output, (..., out), for float32 W.

    Each rounding bounded in turn, u = 2^-8 the bfloat16 unit roundoff:
      - a weight is off by at most scale_i / 2, so output i by scale_i / 2 · Σ_j |x_j|;
      - the input row rounded to bfloat16 moves x_j by at most u |x_j|, so output i by
        u Σ_j |q_ij scale_i| |x_j| <= u Σ_j (|W_ij| + scale_i / 2) |x_j|;
      - the float32 sum of `in` products adds at most in · 2^-24 of the same sum of magnitudes;
      - the scale and the output are rounded to bfloat16 (and the fallback path rounds its
        product once more): at most three relative errors u on the computed output, whose
        size is at most |x Wᵀ| plus the errors above.
    """
    u, n = UNIT_ROUNDOFF, x.size(-1)
    ax = x.float().abs()
    weight_part = ax.sum(-1, keepdim=True) * (scale / 2)  # (..., out)
    magnitudes = F.linear(ax, weight.float().abs() + scale[:, None] / 2)  # Σ_j |q_ij scale_i| |x_j| at most
    input_part = (u + n * 2.0 ** -24) * magnitudes
    exact = F.linear(x.float(), weight.float()).abs()
    output_part = ((1 + u) ** 3 - 1) * (exact + weight_part + input_part)
    return weight_part + input_part + output_part


class Int8Linear(nn.Module):
    """nn.Linear's map, x (..., in) -> (..., out), with its weight stored as int8 and one scale per
    output channel (see the module's docstring); the bias stays in its dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight)
        self.register_buffer("q", q.to(linear.weight.device))  # (out, in) int8
        self.register_buffer("scale", scale.to(linear.weight.device))  # (out,) float32
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.q, self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per output channel"


def bf16_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., in) -> x Wᵀ + b, (..., out), in x's dtype, for bfloat16 weights W (out, in): the
    product of W's values (exact in float32) in x's dtype. One float32 row on CPU (a decode step of
    one sequence) goes through matvec's bf16 kernel, which widens the weights in registers; more
    rows (a prompt) widen W for the call and multiply by a matmul."""
    recorded = torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))
    if x.dtype == torch.float32 and x.numel() == x.size(-1) and not recorded:  # autograd has nothing to follow
        kernel = matvec.bind_bf16(weight, bias)
        if kernel is not None:
            return kernel(x)
    return F.linear(x, weight.to(x.dtype), bias)


class Bf16Linear(nn.Module):
    """nn.Linear's map, x (..., in) -> (..., out), with its weight stored in bfloat16 and the
    arithmetic in x's dtype (see the module's docstring); the bias stays in its dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_bf16", linear.weight.detach().to(torch.bfloat16).contiguous())  # (out, in)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bf16_linear(x, self.weight_bf16, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bfloat16 weights"


def quantize(model: nn.Module, weights: str = "int8") -> nn.Module:
    """Swaps every nn.Linear of `model` for an Int8Linear holding its weight in int8 (weights
    "int8") or a Bf16Linear holding it in bfloat16 (weights "bf16"), in place; returns the model.
    weights "float" leaves it as it is.

    For generation: the stored weights cannot be trained, saved as a checkpoint or exported. An
    output head tied to the token embedding gets its own copy, and the embedding (one row read
    per token) stays in its dtype.
    """
    check_weights(weights)
    if weights == "float":
        return model
    storage = Int8Linear if weights == "int8" else Bf16Linear
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, storage(child))
    return model
