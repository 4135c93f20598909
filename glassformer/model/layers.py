"""Every layer of the Transformer, written once and shared by GPT and Seq2Seq (token embeddings
and positions are in `glassformer.model.positions`).

Shapes: B batch, T sequence length (Tq queries, Tk keys), C model width, h heads,
d per-head width (d_k = d_v), V vocabulary. Masks are boolean, True where a query may
attend to a key, and broadcast to (B, h, Tq, Tk).

Each module is small and named so that an outside recorder can observe it with forward
hooks (see `glassformer.observe.trace`); nothing here records anything itself.
"""

from __future__ import annotations

import functools
import math
import typing

import torch
import torch.nn as nn
import torch.nn.functional as F

from glassformer.model.positions import apply_rotary

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
    """Passes a named intermediate of `attention` through unchanged, so that a forward hook can see it.

    Each attention layer owns one, as `core`; `attention` hands it q, k, v, the mask, QKᵀ, the scaled
    and masked scores, the probabilities and the output, each by name. The recorder in
    glassformer.observe.trace hooks it (and analysis replaces a head's output through it). Without hooks a
    Tap costs one function call per intermediate.
    """

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x


def unobserved(name: str, x: torch.Tensor) -> torch.Tensor:
    """What `attention` passes its intermediates through when no Tap is given."""
    return x


def attention(q, k, v, mask=None, dropout_p: float = 0.0, tap: Tap | None = None):
    """softmax(Q Kᵀ / sqrt(d_k) + mask) V, written out; returns (output, probabilities).

    q (B, h, Tq, d), k and v (B, h, Tk, d), mask broadcastable to (B, h, Tq, Tk), True where a
    query may attend to a key. The returned probabilities are those before attention dropout.
    Every intermediate passes through `tap` under its name (see Tap).
    """
    see = tap if tap is not None else unobserved
    q, k, v = see("q", q), see("k", k), see("v", v)
    scores = see("scores", q @ k.transpose(-2, -1))  # (B, h, Tq, Tk): QKᵀ
    scores = see("scaled", scores / math.sqrt(q.size(-1)))
    if mask is not None:
        mask = see("mask", mask)
        scores = see("masked", scores.masked_fill(~mask, float("-inf")))
    probs = see("probs", torch.softmax(scores, dim=-1))
    dropped = F.dropout(probs, dropout_p) if dropout_p > 0 else probs
    return see("out", dropped @ v), probs  # (B, h, Tq, d), (B, h, Tq, Tk)


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
        self.dropout = dropout  # on the attention probabilities, in training
        qkv_bias = bias if qkv_bias is None else qkv_bias
        self.q_proj = nn.Linear(d_model, n_head * d_head, bias=qkv_bias)  # W_Q
        self.k_proj = nn.Linear(d_model, self.n_kv_head * d_head, bias=qkv_bias)  # W_K
        self.v_proj = nn.Linear(d_model, self.n_kv_head * d_head, bias=qkv_bias)  # W_V
        self.q_norm = RMSNorm(d_head, norm_eps) if qk_norm else None  # one scale per channel, shared by heads
        self.k_norm = RMSNorm(d_head, norm_eps) if qk_norm else None
        self.core = Tap()  # what `attention` computes, by name, for observers
        self.o_proj = nn.Linear(n_head * d_head, d_model, bias=bias)  # W_O

    def forward(self, x, context=None, mask=None, is_causal=False, cache: KVCacheLayer | None = None,
                rotary=None):
        """x (B, Tq, C) -> (B, Tq, C). context: (B, Tk, C) for cross-attention; mask: True where a
        query may see a key; is_causal: also hide later keys; cache: this layer's keys and values
        so far (appended to; cross-attention stores the memory's once); rotary: RoPE's (cos, sin)."""
        q = split_heads(self.q_proj(x), self.n_head)  # (B, Tq, h*d) -> (B, h, Tq, d)
        if context is not None and cache is not None and cache.length > 0:
            k, v = cache.keys_values()  # the memory's keys and values, computed at the first step
        else:
            source = x if context is None else context
            k = split_heads(self.k_proj(source), self.n_kv_head)  # (B, Tk, h_kv*d) -> (B, h_kv, Tk, d)
            v = split_heads(self.v_proj(source), self.n_kv_head)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)  # over each head's d channels
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if cache is not None:
                k, v = cache.append(k, v)  # with everything before: (B, h_kv, past + Tk, d)
        n_rep = self.n_head // self.n_kv_head
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, h_kv, Tk, d) -> (B, h, Tk, d)
        if is_causal:
            mask = combine_masks(mask, causal_mask(q.size(-2), k.size(-2), q.device))
        out, _ = attention(q, k, v, mask, self.dropout if self.training else 0.0, self.core)
        return self.o_proj(merge_heads(out))  # (B, h, Tq, d) -> (B, Tq, h*d) -> (B, Tq, C)


# ---------------------------------------------------------------------------------------------
# Norms, feed-forward, the block


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
    """x / sqrt(mean(x²) + eps) * weight: scale only, no centring (Llama); computed by torch's fused kernel."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.shape = eps, (d_model,)
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        # Under bf16 autocast the per-head q/k norms (qk_norm) get bf16 input: torch's fused
        # rms_norm wants the scale in the input's dtype (else a slower path, and a warning each call).
        weight = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
        return F.rms_norm(x, self.shape, weight, self.eps)

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
        """(B, T, C) -> (B, T, d_ff) -> (B, T, C)."""
        if self.gate is None:
            return self.down(self.act(self.up(x)))
        return self.down(self.act(self.gate(x)) * self.up(x))


def make_block(config, cross_attention: bool = False) -> Block:
    """A Block with the layer options of a model config (GPTConfig or Seq2SeqConfig)."""
    c = config
    return Block(c.d_model, c.n_head, c.head_dim, c.ff_dim, dropout=c.dropout, bias=c.bias, norm=c.norm,
                 norm_eps=c.norm_eps, pre_norm=c.norm_position == "pre", activation=c.activation,
                 cross_attention=cross_attention, n_kv_head=c.n_kv_head, qkv_bias=c.qkv_bias, qk_norm=c.qk_norm)


class Block(nn.Module):
    """One Transformer layer: self-attention, cross-attention (decoder only), feed-forward, each
    inside a residual connection with its norm before the sublayer (pre-LN: x + f(norm(x))) or
    after the sum (post-LN, the 2017 paper's "Add & Norm": norm(x + f(x))).

    GPT blocks and Seq2Seq decoder blocks use a causal self-attention mask; encoder blocks do not.
    """

    def __init__(self, d_model: int, n_head: int, d_head: int, d_ff: int, *, dropout: float, bias: bool,
                 norm: str, norm_eps: float, pre_norm: bool, activation: str, cross_attention: bool = False,
                 n_kv_head: int | None = None, qkv_bias: bool | None = None, qk_norm: bool = False):
        super().__init__()
        self.pre_norm = pre_norm

        def attention():
            return MultiHeadAttention(d_model, n_head, d_head, dropout, bias, n_kv_head=n_kv_head,
                                      qkv_bias=qkv_bias, qk_norm=qk_norm, norm_eps=norm_eps)

        # in this order: the parameters' order, which optimizer states saved by position follow
        self.self_attn = attention()
        self.attn_norm = make_norm(norm, d_model, norm_eps, bias)
        self.cross_attn = attention() if cross_attention else None
        self.cross_norm = make_norm(norm, d_model, norm_eps, bias) if cross_attention else None
        self.ffn = FeedForward(d_model, d_ff, activation, bias)
        self.ffn_norm = make_norm(norm, d_model, norm_eps, bias)
        self.dropout = nn.Dropout(dropout)  # on each sublayer's output, before it is added

    def forward(self, x, mask=None, is_causal=False, memory=None, memory_mask=None, cache=None, cross_cache=None,
                rotary=None):
        """x (B, T, C) -> (B, T, C). memory (B, S, C): the encoder's output, for cross-attention."""
        if self.pre_norm:
            x = x + self.dropout(self.self_attn(self.attn_norm(x), mask=mask, is_causal=is_causal, cache=cache,
                                                rotary=rotary))
            if self.cross_attn is not None:
                x = x + self.dropout(self.cross_attn(self.cross_norm(x), context=memory, mask=memory_mask,
                                                     cache=cross_cache))
            return x + self.dropout(self.ffn(self.ffn_norm(x)))
        x = self.attn_norm(x + self.dropout(self.self_attn(x, mask=mask, is_causal=is_causal, cache=cache,
                                                           rotary=rotary)))
        if self.cross_attn is not None:
            x = self.cross_norm(x + self.dropout(self.cross_attn(x, context=memory, mask=memory_mask,
                                                                 cache=cross_cache)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


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
