"""GPT: a decoder-only Transformer mapping token ids (B, T) to next-token logits (B, T, V)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig, check_fits_in_memory
from .layers import (
    Block,
    KVCache,
    TokenEmbedding,
    add_positions,
    check_ids,
    feed_forward,
    init_weights,
    make_block,
    make_norm,
    make_positions,
    residual_input,
    residual_output,
    wire,
)
from .trace import observed


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if torch.get_default_device().type != "meta":  # on meta nothing is allocated (GPT.from_tensors)
            check_fits_in_memory(config)
        self.config = c = config
        self.tok_emb = TokenEmbedding(c.vocab_size, c.n_embd)
        self.pos_emb, self.rotary = make_positions(c, c.n_embd)
        self.seg_emb = nn.Embedding(c.n_segments, c.n_embd) if c.n_segments else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(make_block(c) for _ in range(c.n_layer))
        # Pre-LN leaves the residual stream un-normalised, so GPT-2 adds a final norm; post-LN (GPT-1) does not.
        self.final_norm = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias) if c.norm_position == "pre" else None
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.cls_head = nn.Linear(c.n_embd, c.n_classes) if c.n_classes else None
        init_weights(self, c.init, c.init_std, c.n_layer)

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

    def hidden(self, ids: torch.Tensor, cache: KVCache | None = None, segment_ids=None) -> torch.Tensor:
        """ids (B, T) -> final hidden states (B, T, C). With a cache, ids are the positions after it."""
        c = self.config
        past = cache.length if cache is not None else 0
        check_ids(ids, c.vocab_size, c.block_size, past)
        if self.seg_emb is not None:
            if segment_ids is None:
                raise ValueError("this model has a segment embedding; pass segment_ids of the same shape as ids")
            check_ids(segment_ids, c.n_segments, c.block_size, past, name="segment_ids")
        x, rotary = self.embed(ids, past, segment_ids)
        for i, block in enumerate(self.blocks):
            layer_cache = cache.self_attn[i] if cache is not None else None
            x = block(x, is_causal=True, cache=layer_cache, rotary=rotary)
        return self.final(x)

    def embed(self, ids: torch.Tensor, past: int = 0, segment_ids=None):
        """ids (B, T) at positions past.. -> (the residual stream's start (B, T, C), RoPE's (cos, sin) or None)."""
        x, rotary = add_positions(self.tok_emb(ids), past, self.pos_emb, self.rotary)  # (B, T, C)
        if self.seg_emb is not None:
            x = x + self.seg_emb(segment_ids)
        return self.drop(x) if self.drop.training else x, rotary  # no call at all to an idle dropout

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """The last blocks' output through the final norm, where the model has one (pre-LN)."""
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
        it would hide steps from an observer (`glassformer.trace.observe`, which Trace uses) or the
        model has a segment embedding."""
        if observed(self) or self.seg_emb is not None:
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

    The model's own functions (`GPT.embed`, `Block.sublayers` and `wire`, the residuals'
    `residual_input`/`residual_output`, `MultiHeadAttention.attend`, `feed_forward`, `GPT.final`)
    with faster pieces: at one token per step a small model spends much of its time around its
    matmuls. Q, K and V come from one matmul against the stacked W_Q, W_K, W_V; from 4 rows on
    the matmuls use a transposed copy of the weights (DecodeLinear); norms, the attention core
    and the activation are called without module dispatch (no hooks: the step is used only
    while nobody observes the model); rows have no time axis; the ids are not checked
    (generation feeds back ids the model chose). Reads the weights when built: build one per
    generation, for `rows` sequences. tests/test_generate_fast.py holds it to the modules.
    """

    def __init__(self, model: GPT, rows: int):
        self.model = model
        self.rows = rows
        self.layers = [DecodeLayer(block, rows) for block in model.blocks]
        self.lm_head = DecodeLinear(model.lm_head.weight, None, rows)

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        x, rotary = self.model.embed(ids, cache.length)
        x = x[:, 0]  # (B, 1, C) -> (B, C): rows without a time axis, as the matmuls want them
        for layer, layer_cache in zip(self.layers, cache.self_attn):
            layer.cache, layer.rotary = layer_cache, rotary
            x = wire(x, layer.wiring)
        return self.lm_head(self.model.final(x))  # (B, V)


class DecodeLayer:
    """One block's sublayers with DecodeLinear maps, wired as the block wires its own, for DecodeStep."""

    def __init__(self, block: Block, rows: int):
        attn, ffn = block.self_attn, block.ffn
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        qkv_bias = torch.cat([p.bias for p in projections]) if attn.q_proj.bias is not None else None
        qkv_weight = torch.cat([p.weight for p in projections])  # ((h + 2*h_kv)*d, C): W_Q, W_K, W_V stacked
        self.attn, self.core, self.act = attn, attn.core.forward, ffn.act.forward
        self.widths = [p.out_features for p in projections]  # h*d, h_kv*d, h_kv*d
        self.heads = (attn.n_head, attn.n_kv_head, attn.n_kv_head)
        self.qk_norm = (attn.q_norm.forward, attn.k_norm.forward) if attn.q_norm is not None else None
        self.qkv = DecodeLinear(qkv_weight, qkv_bias, rows)
        self.o_proj = DecodeLinear(attn.o_proj.weight, attn.o_proj.bias, rows)
        self.up = DecodeLinear(ffn.up.weight, ffn.up.bias, rows)
        self.gate = DecodeLinear(ffn.gate.weight, ffn.gate.bias, rows) if ffn.gate is not None else None
        self.down = DecodeLinear(ffn.down.weight, ffn.down.bias, rows)
        self.wiring = block.sublayers(self.self_attention, self.feed_forward, residual=DecodeResidual)
        self.cache, self.rotary = None, None  # this step's: set by DecodeStep before each call

    def self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """MultiHeadAttention.forward for one position per row, (B, C) -> (B, C), with one matmul for Q, K and V."""
        B = x.size(0)
        q, k, v = (part.view(B, heads, 1, -1) for part, heads in  # (B, (h + 2*h_kv)*d) -> (B, h or h_kv, 1, d)
                   zip(self.qkv(x).split(self.widths, dim=-1), self.heads))
        out = self.attn.attend(q, k, v, cache=self.cache, rotary=self.rotary, core=self.core,
                               qk_norm=self.qk_norm)  # (B, h, 1, d)
        return self.o_proj(out.reshape(B, -1))  # heads concatenated: (B, h*d) -> (B, C)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return feed_forward(x, self.up, self.down, self.act, self.gate)


class DecodeResidual:
    """A block's Residual for DecodeStep: the same two functions, its norm called without module
    dispatch, and no dropout (the step runs in eval mode)."""

    def __init__(self, residual):
        self.norm, self.pre_norm = residual.norm.forward, residual.pre_norm

    def sublayer_input(self, x: torch.Tensor) -> torch.Tensor:
        return residual_input(x, self.norm, self.pre_norm)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return residual_output(x, y, self.norm, self.pre_norm)


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
