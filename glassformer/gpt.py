"""GPT: a decoder-only Transformer mapping token ids (B, T) to next-token logits (B, T, V)."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig
from .layers import (
    Block,
    KVCache,
    RMSNorm,
    RotaryEmbedding,
    TokenEmbedding,
    apply_rotary,
    check_ids,
    init_weights,
    make_norm,
    make_positions,
)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = TokenEmbedding(c.vocab_size, c.n_embd)
        self.pos_emb = make_positions(c.position, c.block_size, c.n_embd)
        self.seg_emb = nn.Embedding(c.n_segments, c.n_embd) if c.n_segments else None
        self.rotary = RotaryEmbedding(c.head_dim, c.block_size, c.rope_theta) if c.position == "rope" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.n_embd, c.n_head, c.head_dim, c.ff_dim, dropout=c.dropout, bias=c.bias, norm=c.norm,
                  norm_eps=c.norm_eps, pre_norm=c.norm_position == "pre", activation=c.activation)
            for _ in range(c.n_layer)
        )
        # Pre-LN leaves the residual stream un-normalised, so GPT-2 adds a final norm; post-LN (GPT-1) does not.
        self.final_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.norm_position == "pre" else None
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.cls_head = nn.Linear(c.n_embd, c.n_classes) if c.n_classes else None
        init_weights(self, c.init, c.init_std, c.n_layer)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for incremental decoding, owned by the caller."""
        return KVCache(self.config.n_layer, self.config.block_size)

    def hidden(self, ids: torch.Tensor, cache: KVCache | None = None, segment_ids=None) -> torch.Tensor:
        """ids (B, T) -> final hidden states (B, T, C). With a cache, ids are the positions after it."""
        c = self.config
        past = cache.length if cache is not None else 0
        check_ids(ids, c.vocab_size, c.block_size, past)
        positions = torch.arange(past, past + ids.size(1), device=ids.device)  # (T,)
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)  # (T, C) broadcast over the batch
        if self.seg_emb is not None:
            if segment_ids is None:
                raise ValueError("this model has a segment embedding; pass segment_ids of the same shape as ids")
            check_ids(segment_ids, c.n_segments, c.block_size, past, name="segment_ids")
            x = x + self.seg_emb(segment_ids)
        x = self.drop(x)
        rotary = self.rotary(positions) if self.rotary is not None else None
        for i, block in enumerate(self.blocks):
            layer_cache = cache.self_attn[i] if cache is not None else None
            x = block(x, is_causal=True, cache=layer_cache, rotary=rotary)
        return self.final_norm(x) if self.final_norm is not None else x

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, segment_ids=None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V), for every position."""
        return self.lm_head(self.hidden(ids, cache, segment_ids))

    def next_logits(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, V) for the token after the last one: forward's last row, with
        the output projection applied to that row alone."""
        return self.lm_head(self.hidden(ids, cache)[:, -1])

    def decode_step(self, rows: int) -> DecodeStep | None:
        """A fast single-token step for generating `rows` sequences with a KV cache, or None where
        it would not compute what forward computes or would hide a step from observers: forward
        hooks on any module, a segment embedding, an attention core forced onto the explicit path."""
        hooked = bool(nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
        for module in self.modules():
            hooked = hooked or bool(module._forward_hooks or module._forward_pre_hooks)
        explicit = any(block.self_attn.core.path == "explicit" for block in self.blocks)
        if hooked or explicit or self.seg_emb is not None:
            return None
        return DecodeStep(self, rows)

    def classify(self, ids: torch.Tensor, lengths: torch.Tensor | None = None, segment_ids=None) -> torch.Tensor:
        """GPT-1's second output: the hidden state of each sequence's last real token -> (B, n_classes).

        `lengths` (B,) gives each right-padded sequence's real length; None means no padding.
        """
        if self.cls_head is None:
            raise ValueError("this model has no classification head; build it with n_classes > 0")
        h = self.hidden(ids, segment_ids=segment_ids)  # (B, T, C)
        if lengths is None:
            last = h[:, -1]
        else:
            last = h[torch.arange(h.size(0), device=h.device), lengths.to(h.device) - 1]  # (B, C)
        return self.cls_head(last)

    def num_params(self, embeddings: bool = True) -> int:
        """Parameter count (tied weights once); without position/token embeddings if `embeddings` is False."""
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= sum(p.numel() for m in (self.tok_emb, self.pos_emb, self.seg_emb)
                     if isinstance(m, nn.Embedding) for p in m.parameters())
        return n


class DecodeStep:
    """GPT.next_logits for one new token per row, (B, 1) ids after a KV cache -> (B, V), in eval mode.

    The same math and the same kernels as the modules, called directly on their weights: at
    one token per step a small model spends more time in module calls, attribute look-ups,
    id checks and reshapes than in its matmuls. Differences from the readable path: Q, K
    and V come from one matmul against the stacked W_Q, W_K, W_V; rows stay (B, C) with no
    time axis; dropout is off; the ids are not checked (generation feeds back ids the model
    chose); from 4 rows on the matmuls use a transposed copy of the weights (DecodeLinear).
    Reads the weights when built: build one per generation, for `rows` sequences.
    tests/test_generate_fast.py holds it to the modules.
    """

    def __init__(self, model: GPT, rows: int):
        c = model.config
        self.n_head, self.head_dim, self.pre_norm = c.n_head, c.head_dim, c.norm_position == "pre"
        self.tok_emb = model.tok_emb.weight  # (V, C)
        self.emb_scale = model.tok_emb.scale
        self.positions = model.pos_emb.weight if isinstance(model.pos_emb, nn.Embedding) else (
            model.pos_emb.table if model.pos_emb is not None else None)  # (block_size, C) or None
        self.rotary = (model.rotary.cos, model.rotary.sin) if model.rotary is not None else None  # (block_size, d/2)
        self.layers = [DecodeLayer(block, rows) for block in model.blocks]
        self.final_norm = norm_function(model.final_norm) if model.final_norm is not None else None
        self.lm_head = DecodeLinear(model.lm_head.weight, None, rows)

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        B, h, d = ids.size(0), self.n_head, self.head_dim
        past = cache.length  # the new token's position
        x = F.embedding(ids[:, 0], self.tok_emb)  # (B, C)
        if self.emb_scale != 1.0:
            x = x * self.emb_scale
        if self.positions is not None:
            x = x + self.positions[past]  # (C,) broadcast over the batch
        rotary = None
        if self.rotary is not None:
            rotary = tuple(table[past : past + 1] for table in self.rotary)  # cos, sin: (1, d/2) each
        for layer, layer_cache in zip(self.layers, cache.self_attn):
            a = layer.attn_norm(x) if self.pre_norm else x
            q, k, v = layer.qkv(a).view(B, 3, h, 1, d).unbind(1)  # (B, 3*h*d) -> 3 x (B, h, 1, d)
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            k, v = layer_cache.append(k, v)  # (B, h, past + 1, d)
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, d): one query sees every key, no mask
            y = layer.o_proj(out.reshape(B, h * d))  # heads concatenated -> (B, C)
            x = x + y if self.pre_norm else layer.attn_norm(x + y)
            a = layer.ffn_norm(x) if self.pre_norm else x
            u = layer.up(a)  # (B, d_ff)
            u = layer.act(layer.gate(a)) * u if layer.gate is not None else layer.act(u)
            y = layer.down(u)  # (B, C)
            x = x + y if self.pre_norm else layer.ffn_norm(x + y)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.lm_head(x)  # (B, V)


class DecodeLayer:
    """One block's weights as plain tensors and functions, for DecodeStep."""

    def __init__(self, block: Block, rows: int):
        attn, ffn = block.self_attn, block.ffn
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv_bias = torch.cat([p.bias for p in projections]) if attn.q_proj.bias is not None else None
        qkv_weight = torch.cat([p.weight for p in projections])  # (3*h*d, C): W_Q, W_K, W_V stacked
        self.qkv = DecodeLinear(qkv_weight, qkv_bias, rows)
        self.o_proj = DecodeLinear(attn.o_proj.weight, attn.o_proj.bias, rows)
        self.up = DecodeLinear(ffn.up.weight, ffn.up.bias, rows)
        self.gate = DecodeLinear(ffn.gate.weight, ffn.gate.bias, rows) if ffn.gate is not None else None
        self.down = DecodeLinear(ffn.down.weight, ffn.down.bias, rows)
        self.act = ffn.act.forward  # e.g. F.gelu with the module's settings
        self.attn_norm = norm_function(block.attn_res.norm)
        self.ffn_norm = norm_function(block.ffn_res.norm)


def norm_function(norm: nn.Module):
    """A LayerNorm or RMSNorm module as a function of x alone, calling the same kernel."""
    if isinstance(norm, RMSNorm):
        return functools.partial(F.rms_norm, normalized_shape=norm.weight.shape, weight=norm.weight, eps=norm.eps)
    return functools.partial(F.layer_norm, normalized_shape=norm.weight.shape, weight=norm.weight, bias=norm.bias,
                             eps=norm.eps)


class DecodeLinear:
    """x (rows, in) -> x Wᵀ + b, nn.Linear's map, for a few rows at a time.

    For 4 or more rows MKL's matmul is up to twice as fast with W stored (in, out), as
    GPT-2's Conv1D keeps it, than with nn.Linear's (out, in) (measured on CPU: 25 matmuls of
    a 6-layer d384 model at 8 rows, 5.6 ms against 7.8 ms); so there the weight is copied
    transposed once. For 1 to 3 rows both are as fast, and the model's weight is used as is.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: int):
        self.transposed = rows >= 4
        self.weight = weight.t().contiguous() if self.transposed else weight  # (in, out) or (out, in)
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transposed:
            return F.linear(x, self.weight, self.bias)
        return x @ self.weight if self.bias is None else torch.addmm(self.bias, x, self.weight)
