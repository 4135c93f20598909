"""The fast path, swapped in from outside: faster equivalents of the model's modules, and the
one-token decode step. The model (layers, positions, gpt, seq2seq) knows nothing of this module.

    with accelerate.for_training(model):    # the Trainer: fused QKV, the attention core per
        ...                                 # device and dtype, fused.c's RMSNorm, SwiGLU, RoPE
    with accelerate.for_generation(model):  # generation's prompts: torch's fused attention kernel
        ...
    step = accelerate.decode_step(model, rows)  # a GPT's one-token step (decode_step.DecodeStep)

Swapping in changes only which `forward` runs: each readable module (MultiHeadAttention,
RMSNorm, FeedForward) becomes an instance of its fast subclass for the duration, the same object
with the same parameters, names, hooks and registration order, so optimizers, checkpoints,
DistributedDataParallel and FSDP see nothing change; on leaving the `with` block every module
is its readable class again. The subclasses add no state of their own.

The fast pieces compute what the readable ones compute, to rounding: tests/test_fast_path.py,
test_fused.py and test_generate_fast.py hold each to the model for every variant. They pass no
intermediates to observers, so generation asks for them only while nobody observes the model
(glassformer.observe.trace.observe), and the Trainer only while it trains.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from glassformer.fast import fused
from glassformer.fast.decode_step import DecodeStep
from glassformer.model.gpt import GPT
from glassformer.model.layers import (
    FeedForward,
    KVCacheLayer,
    MultiHeadAttention,
    RMSNorm,
    causal_mask,
    combine_masks,
    merge_heads,
    repeat_kv,
    split_heads,
)

# ---------------------------------------------------------------------------------------------
# The attention core: the fused kernel, or the written-out form where it is faster


def biased_attention(q, k, v, mask=None, dropout_p: float = 0.0):
    """`layers.attention` with the mask as an additive bias (0 where a query may attend a key, -inf
    where not) applied in the same pass as the scaling: softmax(Q Kᵀ · (1/sqrt(d_k)) + bias) V.

    The same function as `attention` (to rounding: it multiplies by 1/sqrt(d_k) instead of
    dividing), with one elementwise pass over the (B, h, Tq, Tk) scores instead of two, forward
    and backward (CPU bf16 training steps at 6/6/384: 7-10% faster). Returns (output, probabilities).
    """
    scores = q @ k.transpose(-2, -1)  # (B, h, Tq, Tk): QKᵀ
    scale = 1 / math.sqrt(q.size(-1))
    if mask is None:
        scores = scores * scale
    else:
        bias = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(~mask, float("-inf"))
        scores = torch.add(bias, scores, alpha=scale)  # bias + scale * QKᵀ, broadcast as the mask
    probs = torch.softmax(scores, dim=-1)
    dropped = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
    return dropped @ v, probs  # (B, h, Tq, d), (B, h, Tq, Tk)


def effective_mask(q, k, mask, is_causal: bool) -> tuple[torch.Tensor | None, bool]:
    """(mask, is_causal) as the fused kernel needs them: its causal flag aligns queries to the
    first key, so with a cache (Tq < Tk, the newest queries at the end) the mask is spelled out;
    a single newest query sees every key and needs none."""
    t_q, t_k = q.size(-2), k.size(-2)
    if is_causal and t_q == 1:
        return mask, False
    if is_causal and (mask is not None or t_q != t_k):
        return combine_masks(mask, causal_mask(t_q, t_k, q.device)), False
    return mask, is_causal


EXPLICIT_MAX_LEN = 512  # the longest sequence the written-out attention is chosen for (see explicit_is_faster)


def explicit_is_faster(q: torch.Tensor) -> bool:
    """Whether the written-out attention beats the fused kernel for this input (measured, not assumed).

    On a CPU in bfloat16, while autograd records, the fused kernel's backward is several times
    slower than the explicit matmuls (whole training steps: 28 against 40 ms at nanoGPT's CPU
    shape); up to EXPLICIT_MAX_LEN positions, beyond which the (T, T) scores outgrow the caches.
    In float32, in inference and on GPUs the fused kernel wins.
    """
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled()
            and q.size(-2) <= EXPLICIT_MAX_LEN)


def fast_attention(q, k, v, mask=None, is_causal: bool = False, dropout_p: float = 0.0) -> torch.Tensor:
    """Each head's output (B, h, Tq, d), as `layers.attention` computes it with `mask` (and the
    causal mask where is_causal): `biased_attention` where `explicit_is_faster`, else torch's
    fused kernel, which never forms the probabilities."""
    mask, is_causal = effective_mask(q, k, mask, is_causal)
    if explicit_is_faster(q):
        mask = causal_mask(q.size(-2), k.size(-2), q.device) if is_causal else mask  # written out for both
        return biased_attention(q, k, v, mask, dropout_p)[0]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


def fuses_qkv(attn: MultiHeadAttention) -> bool:
    """Whether self-attention applies W_Q, W_K and W_V as one matmul (`project_qkv`): in training,
    where the backward's three input gradients also become one matmul (bf16 steps at nanoGPT's CPU
    shape: 6% faster). Only for plain nn.Linear projections (not int8 or bf16 storage)."""
    return (attn.training and torch.is_grad_enabled()
            and all(type(p) is nn.Linear for p in (attn.q_proj, attn.k_proj, attn.v_proj)))


def project_qkv(attn: MultiHeadAttention, x: torch.Tensor):
    """x (B, T, C) -> q (B, h, T, d), k and v (B, h_kv, T, d) by one matmul with W_Q, W_K, W_V
    stacked; the same maps as the three modules (their weights are concatenated per call, and the
    gradient flows back to each module's own weight)."""
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    weight = torch.cat([p.weight for p in projections])  # ((h + 2*h_kv)*d, C)
    bias = torch.cat([p.bias for p in projections]) if attn.q_proj.bias is not None else None
    q, k, v = F.linear(x, weight, bias).split([p.out_features for p in projections], dim=-1)
    # (B, T, h*d) -> (B, h, T, d): views of the one output, as nanoGPT's c_attn split
    return split_heads(q, attn.n_head), split_heads(k, attn.n_kv_head), split_heads(v, attn.n_kv_head)


# ---------------------------------------------------------------------------------------------
# The fast modules: subclasses that override forward only


class FastAttention(MultiHeadAttention):
    """MultiHeadAttention.forward with one matmul for Q, K, V in training (`fuses_qkv`), fused.c's
    RoPE, and `fast_attention` for the core. No taps: observers see the readable module."""

    def forward(self, x, context=None, mask=None, is_causal=False, cache: KVCacheLayer | None = None,
                rotary=None):
        dropout_p = self.dropout if self.training else 0.0
        if context is not None and cache is not None and cache.length > 0:
            q = split_heads(self.q_proj(x), self.n_head)  # (B, Tq, h*d) -> (B, h, Tq, d)
            k, v = cache.keys_values()  # the memory's keys and values, computed at the first step
        else:
            if context is None and fuses_qkv(self):
                q, k, v = project_qkv(self, x)
            else:
                source = x if context is None else context
                q = split_heads(self.q_proj(x), self.n_head)
                k = split_heads(self.k_proj(source), self.n_kv_head)  # (B, h_kv, Tk, d)
                v = split_heads(self.v_proj(source), self.n_kv_head)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if rotary is not None:
                q, k = fused.rotary_or_torch(q, *rotary), fused.rotary_or_torch(k, *rotary)
            if cache is not None:
                k, v = cache.append(k, v)
        n_rep = self.n_head // self.n_kv_head
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, h_kv, Tk, d) -> (B, h, Tk, d)
        out = fast_attention(q, k, v, mask, is_causal, dropout_p)
        return self.o_proj(merge_heads(out))  # (B, h, Tq, d) -> (B, Tq, h*d) -> (B, Tq, C)


class FastRMSNorm(RMSNorm):
    """RMSNorm.forward through fused.c's kernels (float32 on CPU), forward and backward in one pass each."""

    def forward(self, x):
        return fused.rms_norm_or_torch(x, self.weight, self.eps)


class FastFeedForward(FeedForward):
    """FeedForward.forward with SwiGLU's silu(g) * u through fused.c while autograd records: one
    pass each way instead of three forward and four backward."""

    def forward(self, x):
        if self.gate is None:
            return self.down(self.act(self.up(x)))
        return self.down(fused.swiglu_or_torch(self.gate(x), self.up(x), self.act))


FAST = {MultiHeadAttention: FastAttention, RMSNorm: FastRMSNorm, FeedForward: FastFeedForward}  # readable -> fast


# ---------------------------------------------------------------------------------------------
# Swapping in


class Swap:
    """The readable modules of a model, found once, turned into their fast subclasses by `install`
    (or while a `with` block is open) and back by `remove`. Modules already fast (an enclosing
    Swap's) are left alone."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if type(m) in FAST]

    def install(self) -> None:
        for module in self.modules:
            module.__class__ = FAST[type(module)]  # the same object: only which forward runs changes

    def remove(self) -> None:
        readable = {fast: plain for plain, fast in FAST.items()}
        for module in self.modules:
            module.__class__ = readable[type(module)]

    def __enter__(self) -> Swap:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def for_training(model: nn.Module) -> Swap:
    """The model's fast modules for the duration of a `with` block: what the Trainer trains with."""
    return Swap(model)


def for_generation(model: nn.Module) -> Swap:
    """The model's fast modules for the duration of a `with` block (a prompt's forward: torch's
    fused attention kernel, fused.c's norms and RoPE). Ask only while the model is unobserved."""
    return Swap(model)


def decode_step(model: nn.Module, rows: int) -> DecodeStep | None:
    """A GPT's one-token step for `rows` sequences with a KV cache (decode_step.DecodeStep), or None
    where there is none: another model, or a GPT with a segment embedding. Ask only while the model
    is unobserved: the step computes around the modules, where hooks would not see it."""
    if not isinstance(model, GPT) or model.seg_emb is not None:
        return None
    return DecodeStep(model, rows)

