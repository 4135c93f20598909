"""Every layer of the Transformer, written once and shared by GPT and Seq2Seq (token embeddings
and positions are in `glassformer.positions`).

Shapes: B batch, T sequence length (Tq queries, Tk keys), C model width, h heads,
d per-head width (d_k = d_v), V vocabulary. Masks are boolean, True where a query may
attend to a key, and broadcast to (B, h, Tq, Tk).

Each module is small and named so that an outside recorder can observe it with forward
hooks (see `glassformer.trace`); nothing here records anything itself.
"""

from __future__ import annotations

import functools
import math
import typing

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fused
from .positions import apply_rotary

# ---------------------------------------------------------------------------------------------
# Masks


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """(Tq, Tk): query i sits at absolute position Tk - Tq + i and sees keys at or before it."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def padding_mask(keep: torch.Tensor) -> torch.Tensor:
    """(B, Tk) True for real tokens -> (B, 1, 1, Tk), broadcast over heads and queries."""
    return keep[:, None, None, :].bool()


def combine_masks(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Both conditions must hold; None means no restriction."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


# ---------------------------------------------------------------------------------------------
# Attention


class Tap(nn.Module):
    """Passes a named intermediate through unchanged, so that a forward hook can see it.

    `attention` hands its inner steps (QKᵀ, the scaled and masked scores) to a Tap; the
    recorder in glassformer.trace hooks it. Without hooks a Tap costs one function call.
    """

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x


def attention(q, k, v, mask=None, dropout_p: float = 0.0, tap: Tap | None = None):
    """softmax(Q Kᵀ / sqrt(d_k) + mask) V, written out; returns (output, probabilities).

    q (B, h, Tq, d), k and v (B, h, Tk, d), mask broadcastable to (B, h, Tq, Tk).
    The returned probabilities are those before attention dropout.
    """
    scores = q @ k.transpose(-2, -1)  # (B, h, Tq, Tk): QKᵀ
    if tap is not None:
        scores = tap("scores", scores)
    scores = scores / math.sqrt(q.size(-1))
    if tap is not None:
        scores = tap("scaled", scores)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
        if tap is not None:
            scores = tap("masked", scores)
    probs = torch.softmax(scores, dim=-1)
    dropped = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
    return dropped @ v, probs  # (B, h, Tq, d), (B, h, Tq, Tk)


def biased_attention(q, k, v, mask=None, dropout_p: float = 0.0):
    """`attention` with the mask as an additive bias (0 where a query may attend a key, -inf where
    not) applied in the same pass as the scaling: softmax(Q Kᵀ · (1/sqrt(d_k)) + bias) V.

    The same function as `attention` (to rounding: it multiplies by 1/sqrt(d_k) instead of
    dividing), with one elementwise pass over the (B, h, Tq, Tk) scores instead of two, forward
    and backward: the explicit path's form in training (CPU bf16 at 6/6/384, block 256: 7-10%
    faster steps than `attention`; 4-6% at nanoGPT's CPU shape). No taps: observers use `attention`.
    Returns (output, probabilities), as `attention`.
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


class ScaledDotProductAttention(nn.Module):
    """The attention core: (q, k, v, mask, is_causal) -> (output, probabilities or None).

    path "explicit": `attention` above, which forms the probability matrix.
    path "fused": `F.scaled_dot_product_attention`, which never forms it (probabilities None).
    path "auto" (default): the fused kernel, or where `explicit_is_faster` the same math as
    `attention` in its faster form, `biased_attention`.
    An observer that wants the probabilities of a fused call computes them with
    `probabilities` (glassformer.trace does), so observing never changes what the model computes.
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.path = "auto"  # "auto" | "explicit" | "fused"
        self.tap = Tap()

    def forward(self, q, k, v, mask=None, is_causal: bool = False):
        mask, is_causal = effective_mask(q, k, mask, is_causal)
        dropout_p = self.dropout if self.training else 0.0
        if self.path == "explicit" or (self.path == "auto" and explicit_is_faster(q)):
            mask = causal_mask(q.size(-2), k.size(-2), q.device) if is_causal else mask  # written out for both forms
            if self.path == "explicit":
                return attention(q, k, v, mask, dropout_p, self.tap)
            return biased_attention(q, k, v, mask, dropout_p)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        return out, None

    def probabilities(self, q, k, v, mask=None, is_causal: bool = False) -> torch.Tensor:
        """The probabilities (B, h, Tq, Tk) a call with these arguments attends with, by `attention`,
        its inner steps passing through the tap."""
        mask, is_causal = effective_mask(q, k, mask, is_causal)
        return attention(q, k, v, causal_mask(q.size(-2), k.size(-2), q.device) if is_causal else mask, 0.0,
                         self.tap)[1]


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

    On a CPU in bfloat16 the fused kernel's backward is several times slower than the
    explicit matmuls (fwd+bwd at 12x4 heads x 64 positions: 7.2 ms fused vs 2.6 ms explicit;
    whole training steps on a Zen 4, `biased_attention` against the fused kernel: 28 vs 40 ms at
    nanoGPT's CPU shape, 507 vs 617 ms at 6/6/384 block 256). Up to EXPLICIT_MAX_LEN positions:
    the (T, T) scores the written-out form keeps outgrow the caches, and fwd+bwd at 12 heads of
    64 on the Zen 4 took 60.6 against 77.0 ms (fused) at 512 positions, 92.9 against 100.6 at
    640, but 147.9 against 86.1 at 768 and 980 against 604 at 1024 (batch 12). In float32 and
    on GPUs the fused kernel wins (steps on the Zen 4: 38.8 ms fused, 40.7 biased, 44.1
    `attention`; 934 vs 952 ms).
    """
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled()
            and q.size(-2) <= EXPLICIT_MAX_LEN)


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, h*d) -> (B, h, T, d)"""
    B, T, _ = x.shape
    return x.view(B, T, n_head, -1).transpose(1, 2)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, h_kv, T, d) -> (B, h_kv * n_rep, T, d): each key/value head shared by n_rep query heads
    in a row (grouped-query attention; multi-query when h_kv is 1)."""
    if n_rep == 1:
        return x
    B, h_kv, T, d = x.shape
    return x[:, :, None].expand(B, h_kv, n_rep, T, d).reshape(B, h_kv * n_rep, T, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d) -> (B, T, h*d): the heads' outputs concatenated."""
    B, h, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, h * d)


class KVCacheLayer:
    """Keys and values one attention layer has computed so far, in buffers the caller owns.

    Self-attention appends each step's new keys and values; cross-attention stores the
    encoder memory's keys and values once and reuses them.
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: torch.Tensor | None = None  # (B, h, capacity, d), capacity <= max_len
        self.v: torch.Tensor | None = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds (B, h, T_new, d) keys and values; returns all of them, (B, h, length, d)."""
        start, end = self.length, self.length + k.size(-2)
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; {end} were asked for")
        if self.k is None or end > self.k.size(-2):
            self.grow(k, v, end)
        self.k.narrow(2, start, end - start).copy_(k)  # into positions start..end-1
        self.v.narrow(2, start, end - start).copy_(v)
        self.length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)  # narrow, not [:, :, :end]: one op, not three

    def grow(self, k: torch.Tensor, v: torch.Tensor, needed: int) -> None:
        """New buffers for at least `needed` positions, holding what the old ones held. The
        capacity doubles (from 256), up to max_len: a model with a context of 32768 positions
        need not hold them all to generate a few hundred tokens."""
        B, h, _, d = k.shape
        capacity = min(self.max_len, max(needed, 256, 2 * (self.k.size(-2) if self.k is not None else 0)))
        old_k, old_v = self.k, self.v
        self.k = k.new_empty(B, h, capacity, d)  # only positions below `length` are ever read
        self.v = v.new_empty(B, h, capacity, v.size(-1))
        if old_k is not None:
            self.k[:, :, : self.length] = old_k[:, :, : self.length]
            self.v[:, :, : self.length] = old_v[:, :, : self.length]

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything stored so far, (B, h, length, d) each."""
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def keep(self, rows: torch.Tensor) -> None:
        """Row i becomes old row rows[i] (a row may be kept twice or dropped): beam search's
        reordering, or the rows of a batch that are still decoding.

        Only the filled positions are copied, and back into the buffers held unless there
        are more rows than before; a generation fills few of block_size positions.
        """
        if self.k is not None:
            self.k, self.v = (kept_rows(buffer, self.length, rows) for buffer in (self.k, self.v))


def kept_rows(buffer: torch.Tensor, length: int, rows: torch.Tensor) -> torch.Tensor:
    """buffer (N, h, P, d) -> (len(rows), h, P, d): old rows `rows` at the positions below `length`."""
    filled = buffer[:, :, :length].index_select(0, rows)  # (A, h, length, d): a copy, so the buffer may be reused
    if rows.numel() > buffer.size(0):
        buffer = buffer.new_empty(rows.numel(), *buffer.shape[1:])
    buffer = buffer[: rows.numel()]  # (A, h, P, d), contiguous
    buffer[:, :, :length] = filled
    return buffer


class KVCache:
    """All layers' caches for incremental decoding; create one per generation and pass it in."""

    def __init__(self, n_layers: int, max_len: int, cross_attention: bool = False):
        self.self_attn = [KVCacheLayer(max_len) for _ in range(n_layers)]
        self.cross_attn = [KVCacheLayer(max_len) for _ in range(n_layers)] if cross_attention else None
        self.last_ids: torch.Tensor | None = None  # (B,) each row's last token so far, kept by a GPT with bigram

    @property
    def length(self) -> int:
        """Number of positions already processed."""
        return self.self_attn[0].length

    def keep(self, rows: torch.Tensor) -> None:
        """The self-attention caches' rows `rows` (see KVCacheLayer.keep); cross-attention
        caches hold the memory, whose rows their owner gathers (decode.Seq2SeqDecoder)."""
        for layer in self.self_attn:
            layer.keep(rows)
        if self.last_ids is not None:
            self.last_ids = self.last_ids.index_select(0, rows)


class MultiHeadAttention(nn.Module):
    """Projects to Q, K, V (W_Q, W_K, W_V), attends per head, concatenates heads, projects (W_O).

    Self-attention when `context` is None; cross-attention otherwise (queries from `x`,
    keys and values from `context`, e.g. the encoder output).
    n_kv_head < n_head: grouped-query attention, fewer key/value heads, each shared by a group
    of query heads (`repeat_kv`); 1 is multi-query attention. qkv_bias: biases on W_Q, W_K,
    W_V (None: as `bias`, which also covers W_O). qk_norm: an RMSNorm over each head's q and k
    (Qwen3), before the rotation.
    """

    def __init__(self, d_model: int, n_head: int, d_head: int, dropout: float = 0.0, bias: bool = True, *,
                 n_kv_head: int | None = None, qkv_bias: bool | None = None, qk_norm: bool = False,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head or n_head
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.q_proj = nn.Linear(d_model, n_head * d_head, bias=qkv_bias)  # W_Q
        self.k_proj = nn.Linear(d_model, self.n_kv_head * d_head, bias=qkv_bias)  # W_K
        self.v_proj = nn.Linear(d_model, self.n_kv_head * d_head, bias=qkv_bias)  # W_V
        self.q_norm = RMSNorm(d_head, norm_eps) if qk_norm else None  # one scale per channel, shared by heads
        self.k_norm = RMSNorm(d_head, norm_eps) if qk_norm else None
        self.core = ScaledDotProductAttention(dropout)
        self.o_proj = nn.Linear(n_head * d_head, d_model, bias=bias)  # W_O

    def forward(self, x, context=None, mask=None, is_causal=False, cache: KVCacheLayer | None = None,
                rotary=None):
        if context is None and self.fuses_qkv():
            q, k, v = self.project_qkv(x)
            return self.o_proj(merge_heads(self.attend(q, k, v, mask, is_causal, cache, rotary)))
        q = split_heads(self.q_proj(x), self.n_head)  # (B, Tq, h*d) -> (B, h, Tq, d)
        if context is not None and cache is not None and cache.length > 0:
            k, v = (repeat_kv(t, self.n_head // self.n_kv_head) for t in cache.keys_values())
            out, _ = self.core(q, k, v, mask, is_causal)  # the memory's keys and values, seen before
        else:
            source = x if context is None else context
            k = split_heads(self.k_proj(source), self.n_kv_head)  # (B, h_kv, Tk, d)
            v = split_heads(self.v_proj(source), self.n_kv_head)
            out = self.attend(q, k, v, mask, is_causal, cache, rotary)
        return self.o_proj(merge_heads(out))  # (B, h, Tq, d) -> (B, Tq, h*d) -> (B, Tq, C)

    def fuses_qkv(self) -> bool:
        """Whether self-attention applies W_Q, W_K and W_V as one matmul (`project_qkv`): in training
        (train mode, gradients on), where the backward's three input gradients also become one
        matmul instead of three and two sums (bench/train_step.py --separate-qkv, on a Zen 4: 6%
        faster steps in bf16 at nanoGPT's CPU shape, 2% at 6/6/384, even in fp32 at the small shape). Elsewhere each
        projection is called as its module, so forward hooks on it (Trace, explain and analysis
        observe in eval mode or without gradients) see it. Only for plain nn.Linear projections."""
        return (self.training and torch.is_grad_enabled()
                and all(type(p) is nn.Linear for p in (self.q_proj, self.k_proj, self.v_proj)))

    def project_qkv(self, x):
        """x (B, T, C) -> q (B, h, T, d), k and v (B, h_kv, T, d) by one matmul with W_Q, W_K, W_V
        stacked; the same maps as the three modules (their weights are concatenated per call, a
        copy of 3 C x C numbers, and the gradient flows back to each module's own weight)."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projections])  # ((h + 2*h_kv)*d, C)
        bias = torch.cat([p.bias for p in projections]) if self.q_proj.bias is not None else None
        q, k, v = F.linear(x, weight, bias).split([p.out_features for p in projections], dim=-1)
        # (B, T, h*d) -> (B, h, T, d): views of the one output, as nanoGPT's c_attn split
        return split_heads(q, self.n_head), split_heads(k, self.n_kv_head), split_heads(v, self.n_kv_head)

    def attend(self, q, k, v, mask=None, is_causal=False, cache: KVCacheLayer | None = None, rotary=None,
               core=None, qk_norm=None):
        """New queries (B, h, T, d), keys and values (B, h_kv, T, d) -> each head's output (B, h, Tq, d):
        q and k normed per head (qk_norm), positions rotated in (RoPE), the keys and values added
        to the cache (h_kv heads), shared across their query heads, then the attention core.
        The one-token decode step (decode_step.DecodeStep) calls this too, after its own projection,
        with `core` and `qk_norm` (the two norms) called without module dispatch."""
        q_norm, k_norm = qk_norm or (self.q_norm, self.k_norm)
        if q_norm is not None:
            q, k = q_norm(q), k_norm(k)  # over each head's d channels
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.append(k, v)  # with everything before: (B, h_kv, past + Tk, d)
        n_rep = self.n_head // self.n_kv_head
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, h_kv, Tk, d) -> (B, h, Tk, d)
        return (core or self.core)(q, k, v, mask, is_causal)[0]


# ---------------------------------------------------------------------------------------------
# Norms, feed-forward, residual connections


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dimension (biased variance),
    with a learnable scale and optional shift; computed by torch's fused kernel."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps, self.shape = eps, (d_model,)
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)

    def statistics(self, x) -> dict[str, torch.Tensor]:
        """What the norm divides by and subtracts, per row of x (..., C): for display (explain)."""
        mean = x.mean(-1)
        return {"μ": mean, "σ": torch.sqrt(((x - mean[..., None]) ** 2).mean(-1) + self.eps)}


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight: scale only, no centring (Llama); torch's fused kernel, or
    in float32 on CPU fused.c's, forward and backward in one pass each (`fused.rms_norm`)."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.shape = eps, (d_model,)
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        # Under bf16 autocast the per-head q/k norms (qk_norm) get bf16 input: torch's fused
        # rms_norm wants the scale in the input's dtype (else a slower path, and a warning each call).
        weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        y = fused.rms_norm(x, weight, self.eps)
        return y if y is not None else F.rms_norm(x, self.shape, weight, self.eps)

    def statistics(self, x) -> dict[str, torch.Tensor]:
        """What the norm divides by, per row of x (..., C): for display (explain)."""
        return {"rms": torch.sqrt((x * x).mean(-1) + self.eps)}


NORMS = ("layernorm", "rmsnorm")  # the `norm` option's values


def make_norm(kind: str, d_model: int, eps: float, bias: bool) -> nn.Module:
    return RMSNorm(d_model, eps) if kind == "rmsnorm" else LayerNorm(d_model, eps, bias)


class ReLUSquared(nn.Module):
    """relu(x)²: zero for negative inputs, x² for positive ones (Primer, 2021; modded-nanogpt's MLP)."""

    def forward(self, x):
        return torch.relu(x).square()


class Activation(typing.NamedTuple):
    module: typing.Callable[[], nn.Module]  # builds the activation
    gated: bool = False  # down(act(gate(x)) * up(x)) instead of down(act(up(x)))


# The `activation` option's values: adding one here is all a new activation needs.
ACTIVATIONS = {
    "relu": Activation(nn.ReLU),  # the 2017 paper
    "relu2": Activation(ReLUSquared),  # relu(x)² (Primer, modded-nanogpt)
    "gelu": Activation(nn.GELU),  # exact erf form (nanoGPT)
    "gelu_tanh": Activation(functools.partial(nn.GELU, approximate="tanh")),  # GPT-2's "gelu_new"
    "swiglu": Activation(nn.SiLU, gated=True),  # Llama's SwiGLU: silu(gate(x)) * up(x)
}


class FeedForward(nn.Module):
    """Position-wise Linear -> activation -> Linear; gated (SwiGLU): down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", bias: bool = True):
        super().__init__()
        kind = ACTIVATIONS[activation]
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if kind.gated else None
        self.act = kind.module()
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x):
        return feed_forward(x, self.up, self.down, self.act, self.gate)


def feed_forward(x, up, down, act, gate=None):
    """(B, T, C) -> (B, T, d_ff) -> (B, T, C): down(act(up(x))), or with a gate down(act(gate(x)) * up(x)).

    up, down and gate are linear maps: the modules' own, or the one-token step's (decode_step.DecodeStep).
    While autograd records (training), SwiGLU's silu(g) * u goes through `fused.swiglu` where it
    applies: one pass each way instead of three forward and four backward.
    """
    if gate is None:
        return down(act(up(x)))
    g, u = gate(x), up(x)
    hidden = None
    if type(act) is nn.SiLU and torch.is_grad_enabled() and (g.requires_grad or u.requires_grad):
        hidden = fused.swiglu(g, u)  # None where the kernel does not apply
    return down(hidden if hidden is not None else act(g) * u)


def residual_input(x, norm, pre_norm: bool):
    """What a sublayer reads: x through the norm first (pre-LN), or x itself (post-LN)."""
    return norm(x) if pre_norm else x


def residual_output(x, y, norm, pre_norm: bool):
    """The sublayer's output y added back onto x, and the sum through the norm when post-LN ("Add & Norm")."""
    x = x + y
    return x if pre_norm else norm(x)


class Residual(nn.Module):
    """x + dropout(sublayer(·)), with its norm before the sublayer (pre-LN) or after the sum (post-LN).

    A block calls `sublayer_input(x)` to get what the sublayer reads, runs the sublayer,
    then `residual(x, y)` to add its output back ("Add & Norm" when post-LN).
    """

    def __init__(self, d_model: int, norm: str, eps: float, bias: bool, pre_norm: bool, dropout: float):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm = make_norm(norm, d_model, eps, bias)
        self.dropout = nn.Dropout(dropout)

    def sublayer_input(self, x):
        return residual_input(x, self.norm, self.pre_norm)

    def forward(self, x, y):
        y = self.dropout(y) if self.dropout.training else y  # an idle dropout is not called at all
        return residual_output(x, y, self.norm, self.pre_norm)


def make_block(config, cross_attention: bool = False) -> Block:
    """A Block with the layer options of a model config (GPTConfig or Seq2SeqConfig)."""
    c = config
    return Block(c.d_model, c.n_head, c.head_dim, c.ff_dim, dropout=c.dropout, bias=c.bias, norm=c.norm,
                 norm_eps=c.norm_eps, pre_norm=c.norm_position == "pre", activation=c.activation,
                 cross_attention=cross_attention, n_kv_head=c.n_kv_head, qkv_bias=c.qkv_bias, qk_norm=c.qk_norm)


def wire(x, sublayers):
    """A layer's sublayers in turn, each inside its residual connection: (B, T, C) -> (B, T, C).

    sublayers: (residual, function) pairs, as `Block.sublayers` lists them.
    """
    for residual, sublayer in sublayers:
        x = residual(x, sublayer(residual.sublayer_input(x)))
    return x


class Block(nn.Module):
    """One Transformer layer: self-attention, cross-attention (decoder only), feed-forward.

    GPT blocks and Seq2Seq decoder blocks use a causal self-attention mask; encoder blocks do not.
    """

    def __init__(self, d_model: int, n_head: int, d_head: int, d_ff: int, *, dropout: float, bias: bool,
                 norm: str, norm_eps: float, pre_norm: bool, activation: str, cross_attention: bool = False,
                 n_kv_head: int | None = None, qkv_bias: bool | None = None, qk_norm: bool = False):
        super().__init__()

        def residual():
            return Residual(d_model, norm, norm_eps, bias, pre_norm, dropout)

        def attention():
            return MultiHeadAttention(d_model, n_head, d_head, dropout, bias, n_kv_head=n_kv_head,
                                      qkv_bias=qkv_bias, qk_norm=qk_norm, norm_eps=norm_eps)

        self.self_attn = attention()
        self.attn_res = residual()
        self.cross_attn = attention() if cross_attention else None
        self.cross_res = residual() if cross_attention else None
        self.ffn = FeedForward(d_model, d_ff, activation, bias)
        self.ffn_res = residual()

    def forward(self, x, mask=None, is_causal=False, memory=None, memory_mask=None, cache=None, cross_cache=None,
                rotary=None):
        self_attention = functools.partial(self.self_attn, mask=mask, is_causal=is_causal, cache=cache,
                                           rotary=rotary)
        cross_attention = None
        if self.cross_attn is not None:
            cross_attention = functools.partial(self.cross_attn, context=memory, mask=memory_mask, cache=cross_cache)
        return wire(x, self.sublayers(self_attention, self.ffn, cross_attention))

    def sublayers(self, self_attention, feed_forward, cross_attention=None, residual=None) -> list:
        """The layer's wiring: its sublayers in order, each with its residual connection, as
        (residual, function) pairs for `wire`.

        The functions map a sublayer's input to its output; `forward` passes the modules, and
        the one-token decode step (decode_step.DecodeStep) its own faster ones, with `residual`
        wrapping each Residual so that its norm is called without module dispatch.
        """
        pairs = [(self.attn_res, self_attention)]
        if cross_attention is not None:
            pairs.append((self.cross_res, cross_attention))
        pairs.append((self.ffn_res, feed_forward))
        return pairs if residual is None else [(residual(r), f) for r, f in pairs]


# ---------------------------------------------------------------------------------------------
# Checks and initialisation


def check_ids(ids, vocab_size: int, max_len: int, past: int = 0, name: str = "ids") -> None:
    """Raises ValueError for ids that are not a (B, T) integer tensor within the vocabulary and length."""
    if not isinstance(ids, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of token ids; got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer tensor (torch.long); got {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, time); got {tuple(ids.shape)}")
    if past + ids.size(1) > max_len:
        raise ValueError(f"sequence of {past + ids.size(1)} positions exceeds block_size {max_len}")
    # The value check reads the ids back to the host: a sync per forward on a GPU and a graph
    # break under torch.compile. There the data path has checked the ids already.
    if ids.is_cuda or torch.compiler.is_compiling():
        return
    if ids.numel() and bool(((ids < 0) | (ids >= vocab_size)).any()):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0].item()
        raise ValueError(f"{name} contain {bad}, outside the vocabulary of size {vocab_size}")


def init_weights(model: nn.Module, scheme: str, std: float = 0.02, n_layers: int = 1, zero_out: bool = False) -> None:
    """All weight initialisation, in one place.

    "gpt2": N(0, std) for every matrix, and std / sqrt(2 * n_layers) for the projections
    that write into the residual stream (W_O and the feed-forward's down), as GPT-2 does.
    "xavier": Glorot-uniform matrices (2017 paper, torch.nn.Transformer), N(0, 1/sqrt(C)) embeddings.
    Biases start at 0, norm scales at 1.
    zero_out: W_O, the feed-forward's down and an untied output head (`lm_head`) start at 0
    (modded-nanogpt): every block starts as the identity and the first logits are uniform.
    """
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if id(module.weight) in embedding_weights:
                continue  # tied to an embedding, initialised there
            if zero_out and name.endswith(("o_proj", "ffn.down", "lm_head")):
                nn.init.zeros_(module.weight)
            elif scheme == "gpt2":
                residual_out = name.endswith(("o_proj", "ffn.down"))
                nn.init.normal_(module.weight, 0.0, std / math.sqrt(2 * n_layers) if residual_out else std)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std if scheme == "gpt2" else module.embedding_dim ** -0.5)
        elif isinstance(module, (LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
