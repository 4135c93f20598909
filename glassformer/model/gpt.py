"""GPT: a decoder-only Transformer mapping token ids (B, T) to next-token logits (B, T, V)."""

from __future__ import annotations

import torch
import torch.nn as nn

from glassformer.model.config import GPTConfig, check_fits_in_memory
from glassformer.model.layers import (
    KVCache,
    check_ids,
    init_weights,
    make_block,
    make_norm,
)
from glassformer.model.positions import TokenEmbedding, add_positions, make_positions


def bigram_ids(ids: torch.Tensor, vocab_size: int, previous: torch.Tensor | None = None) -> torch.Tensor:
    """ids (B, T) -> the bigram table's row for each position (B, T): previous token x V + token.

    The token before ids[:, 0] is `previous` (B,), or, at the start of a text, the number V, which
    no token has: the table's last V rows are for a first token."""
    before = ids.new_full((ids.size(0), 1), vocab_size) if previous is None else previous.view(-1, 1)
    return torch.cat([before, ids[:, :-1]], dim=1) * vocab_size + ids


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if torch.get_default_device().type != "meta":  # on meta nothing is allocated (GPT.from_tensors)
            check_fits_in_memory(config)
        self.config = c = config
        self.tok_emb = TokenEmbedding(c.vocab_size, c.n_embd)
        self.pos_emb, self.rotary = make_positions(c, c.n_embd)
        self.seg_emb = nn.Embedding(c.n_segments, c.n_embd) if c.n_segments else None
        self.bigram_emb = nn.Embedding(c.bigram_rows, c.n_embd) if c.bigram else None  # a row per token pair
        self.drop = nn.Dropout(c.dropout)
        self.embed_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.embed_norm else None
        self.blocks = nn.ModuleList(make_block(c) for _ in range(c.n_layer))
        # Pre-LN leaves the residual stream un-normalised, so GPT-2 adds a final norm; post-LN (GPT-1) does not.
        self.final_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.norm_position == "pre" else None
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.cls_head = nn.Linear(c.n_embd, c.n_classes) if c.n_classes else None
        init_weights(self, c.init, c.init_std, c.n_layer, zero_out=c.zero_init)

    @classmethod
    def from_tensors(cls, config: GPTConfig, tensors: dict[str, torch.Tensor]) -> GPT:
        """A GPT whose parameters are `tensors` themselves, not copies of them (e.g. memory-mapped
        from a safetensors file), in their dtype; in eval mode.

        Args:
            config: the model's config.
            tensors: every parameter by its name in the state dict, a tied matrix once (as
                tok_emb.weight); shapes already checked against the config.

        The model is built on the meta device, so no other weights are ever allocated, then
        handed the tensors; the position tables, which are computed, not stored, are built again.
        """
        with torch.device("meta"):
            model = cls(config)
        if config.tie_weights:
            tensors = {**tensors, "lm_head.weight": tensors["tok_emb.weight"]}
        model.load_state_dict(tensors, strict=True, assign=True)
        if config.tie_weights:
            model.lm_head.weight = model.tok_emb.weight  # one Parameter again, as GPT.__init__ ties it
        table, model.rotary = make_positions(config, config.n_embd)
        if not isinstance(model.pos_emb, nn.Embedding):  # a learned table came with the tensors
            model.pos_emb = table
        return model.eval()

    def new_cache(self) -> KVCache:
        """An empty key/value cache for incremental decoding, owned by the caller."""
        return KVCache(self.config.n_layer, self.config.block_size)

    def check(self, ids: torch.Tensor, past: int = 0, segment_ids=None) -> None:
        """Raises ValueError for ids (and segment ids) this model cannot read after `past` positions."""
        c = self.config
        check_ids(ids, c.vocab_size, c.block_size, past)
        if self.seg_emb is not None:
            if segment_ids is None:
                raise ValueError("this model has a segment embedding; pass segment_ids of the same shape as ids")
            check_ids(segment_ids, c.n_segments, c.block_size, past, name="segment_ids")

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, segment_ids=None) -> torch.Tensor:
        """ids (B, T) -> logits (B, T, V), for every position. With a cache, ids are the positions after it."""
        past = cache.length if cache is not None else 0
        self.check(ids, past, segment_ids)
        x, rotary = self.embed(ids, past, segment_ids, cache)  # (B, T, C), RoPE's (cos, sin) or None
        for i, block in enumerate(self.blocks):
            x = block(x, is_causal=True, cache=cache.self_attn[i] if cache is not None else None, rotary=rotary)
        return self.lm_head(self.final(x))  # (B, T, C) -> (B, T, V)

    def hidden(self, ids: torch.Tensor, cache: KVCache | None = None, segment_ids=None) -> torch.Tensor:
        """ids (B, T) -> final hidden states (B, T, C): `forward` without the output projection."""
        past = cache.length if cache is not None else 0
        self.check(ids, past, segment_ids)
        x, rotary = self.embed(ids, past, segment_ids, cache)
        for i, block in enumerate(self.blocks):
            x = block(x, is_causal=True, cache=cache.self_attn[i] if cache is not None else None, rotary=rotary)
        return self.final(x)

    def embed(self, ids: torch.Tensor, past: int = 0, segment_ids=None, cache: KVCache | None = None):
        """ids (B, T) at positions past.. -> (the residual stream's start (B, T, C), RoPE's (cos, sin) or None).

        cache: the KV cache the ids continue, if any. The bigram embedding reads the token before
        ids[:, 0] from it (none at the start of a text) and leaves ids[:, -1] there for the next call."""
        x = self.tok_emb(ids)  # (B, T, C)
        if self.bigram_emb is not None:
            previous = cache.last_ids if cache is not None and past > 0 else None
            x = x + self.bigram_emb(bigram_ids(ids, self.config.vocab_size, previous))  # (B, T, C)
            if cache is not None:
                cache.last_ids = ids[:, -1].clone()
        x, rotary = add_positions(x, past, self.pos_emb, self.rotary)  # (B, T, C)
        if self.seg_emb is not None:
            x = x + self.seg_emb(segment_ids)
        if self.embed_norm is not None:
            x = self.embed_norm(x)  # (B, T, C), each position's vector normed
        return self.drop(x) if self.drop.training else x, rotary  # no call at all to an idle dropout

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """The last blocks' output through the final norm, where the model has one (pre-LN)."""
        return self.final_norm(x) if self.final_norm is not None else x

    def next_logits(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """ids (B, T) -> logits (B, V) for the token after the last one: forward's last row, with
        the output projection applied to that row alone."""
        return self.lm_head(self.hidden(ids, cache)[:, -1])

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
        """Parameter count (tied weights once); without the token, position, segment and pair
        embeddings if `embeddings` is False."""
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= sum(p.numel() for m in (self.tok_emb, self.pos_emb, self.seg_emb, self.bigram_emb)
                     if isinstance(m, nn.Embedding) for p in m.parameters())
        return n
