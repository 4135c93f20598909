"""GPT: a decoder-only Transformer mapping token ids (B, T) to next-token logits (B, T, V)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import GPTConfig
from .layers import Block, KVCache, RotaryEmbedding, TokenEmbedding, check_ids, init_weights, make_norm, make_positions


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
