"""Seq2Seq: the encoder-decoder Transformer of "Attention Is All You Need".

encode(src, src_mask) -> memory (B, S, C); decode(tgt, memory, ...) -> logits (B, T, V).
Masks given to the model are (B, length) booleans, True for real tokens, False for padding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from glassformer.model.config import Seq2SeqConfig, check_fits_in_memory
from glassformer.model.layers import (
    KVCache,
    check_ids,
    init_weights,
    make_block,
    make_norm,
    padding_mask,
)
from glassformer.model.positions import TokenEmbedding, add_positions, make_positions


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        check_fits_in_memory(config)
        self.config = c = config
        self.src_emb = TokenEmbedding(c.src_vocab_size, c.d_model, scale=c.scale_embeddings)
        # With a shared vocabulary the decoder reads the same table as the encoder.
        self.tgt_emb = None if c.shared_vocab else TokenEmbedding(c.tgt_vocab_size, c.d_model, scale=c.scale_embeddings)
        self.pos_emb, self.rotary = make_positions(c, c.d_model)
        self.src_drop = nn.Dropout(c.dropout)
        self.tgt_drop = nn.Dropout(c.dropout)

        self.encoder = nn.ModuleList(make_block(c) for _ in range(c.n_encoder_layers))
        self.decoder = nn.ModuleList(make_block(c, cross_attention=True) for _ in range(c.n_decoder_layers))
        final = c.use_final_norm
        self.encoder_norm = make_norm(c.norm, c.d_model, c.norm_eps, c.bias) if final else None
        self.decoder_norm = make_norm(c.norm, c.d_model, c.norm_eps, c.bias) if final else None
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        if c.tie_output:
            self.lm_head.weight = self.target_embedding.weight
        init_weights(self, c.init, c.init_std, c.n_encoder_layers + c.n_decoder_layers)

    @property
    def target_embedding(self) -> TokenEmbedding:
        return self.src_emb if self.tgt_emb is None else self.tgt_emb

    def new_cache(self) -> KVCache:
        """An empty cache for the decoder's self- and cross-attention, owned by the caller."""
        return KVCache(self.config.n_decoder_layers, self.config.block_size, cross_attention=True)

    def _embed(self, emb: TokenEmbedding, ids: torch.Tensor, past: int, drop: nn.Dropout):
        x, rotary = add_positions(emb(ids), past, self.pos_emb, self.rotary)  # (B, T, C)
        return drop(x), rotary

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S) -> memory (B, S, C). `src_mask` (B, S): True for real tokens, None for no padding."""
        c = self.config
        check_ids(src, c.src_vocab_size, c.block_size, name="src")
        x, rotary = self._embed(self.src_emb, src, 0, self.src_drop)
        mask = padding_mask(src_mask) if src_mask is not None else None  # (B, 1, 1, S)
        for block in self.encoder:
            x = block(x, mask=mask, rotary=rotary)
        return self.encoder_norm(x) if self.encoder_norm is not None else x

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None,
               tgt_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """tgt (B, T) and memory (B, S, C) -> logits (B, T, V).

        `tgt_mask` (B, past + T) marks real target tokens; the causal mask is always applied.
        With a cache, `tgt` holds only the positions after those already decoded.
        """
        c = self.config
        past = cache.length if cache is not None else 0
        check_ids(tgt, c.tgt_vocab_size, c.block_size, past, name="tgt")
        x, rotary = self._embed(self.target_embedding, tgt, past, self.tgt_drop)
        self_mask = padding_mask(tgt_mask) if tgt_mask is not None else None  # (B, 1, 1, past + T)
        memory_mask = padding_mask(src_mask) if src_mask is not None else None  # (B, 1, 1, S)
        for i, block in enumerate(self.decoder):
            x = block(x, mask=self_mask, is_causal=True, memory=memory, memory_mask=memory_mask,
                      cache=cache.self_attn[i] if cache is not None else None,
                      cross_cache=cache.cross_attn[i] if cache is not None else None, rotary=rotary)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.lm_head(x)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) -> logits (B, T, V)."""
        return self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
