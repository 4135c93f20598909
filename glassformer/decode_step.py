"""The one-token decode step of generation: GPT.next_logits for one new token per row after a KV cache,
built from the model's own functions with faster pieces (see DecodeStep)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import matvec
from .device import memory_bytes
from .layers import Block, KVCache, feed_forward, residual_input, residual_output, wire
from .quant import COMPUTE as INT8_COMPUTE
from .quant import Int8Linear, int8_linear

if TYPE_CHECKING:
    from .gpt import GPT


class DecodeStep:
    """GPT.next_logits for one new token per row, (B, 1) ids after a KV cache -> (B, V), in eval mode.

    The model's own functions (`GPT.embed`, `Block.sublayers` and `wire`, the residuals'
    `residual_input`/`residual_output`, `MultiHeadAttention.attend`, `feed_forward`, `GPT.final`)
    with faster pieces: at one token per step a small model spends much of its time around its
    matmuls. Q, K and V come from one matmul against the stacked W_Q, W_K, W_V; at one row on
    CPU the matmuls go through matvec's C kernels (float32 and int8 weights), from 4 rows on they
    use a transposed copy of the weights (DecodeLinear; int8 weights from quant.quantize stay as
    they are, see quant.int8_linear); the float32 kernel's weights are copied into one buffer on
    huge pages in the order the step reads them (`pack`); the attention of one new query reads
    the cache through matvec's attention kernel (DecodeCore); norms, the attention core and the
    activation are called without module dispatch (no hooks: the step is used only
    while nobody observes the model); rows have no time axis; the ids are not checked
    (generation feeds back ids the model chose). Reads the weights when built: build one per
    generation, for `rows` sequences. tests/test_generate_fast.py holds it to the modules.
    """

    def __init__(self, model: GPT, rows: int):
        self.model = model
        self.rows = rows
        self.layers = [DecodeLayer(block, rows) for block in model.blocks]
        # each block's sublayers wired as the block wires its own; held here, not by the layer,
        # so that nothing refers back to itself and the step (its packed weights) is freed as
        # soon as the generation drops it, not at the next garbage collection
        self.wiring = [block.sublayers(layer.self_attention, layer.feed_forward, residual=DecodeResidual)
                       for block, layer in zip(model.blocks, self.layers)]
        self.lm_head = DecodeLinear([model.lm_head], rows)
        pack([m for m in self.linears() if m.matvec is not None and not m.int8])

    def linears(self) -> list[DecodeLinear]:
        """The maps this step multiplies by, in the order it calls them."""
        maps = []
        for layer in self.layers:
            gate = [layer.gate] if layer.gate is not None else []
            maps += [layer.qkv, layer.o_proj, *gate, layer.up, layer.down]
        return maps + [self.lm_head]

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        x, rotary = self.model.embed(ids, cache.length)
        x = x[:, 0]  # (B, 1, C) -> (B, C): rows without a time axis, as the matmuls want them
        for layer, wiring, layer_cache in zip(self.layers, self.wiring, cache.self_attn):
            layer.cache, layer.rotary = layer_cache, rotary
            x = wire(x, wiring)
        return self.lm_head(self.model.final(x))  # (B, V)


class DecodeLayer:
    """One block's sublayers with DecodeLinear maps, for DecodeStep (which wires them as the block wires its own)."""

    def __init__(self, block: Block, rows: int):
        attn, ffn = block.self_attn, block.ffn
        projections = [attn.q_proj, attn.k_proj, attn.v_proj]
        self.attn, self.core, self.act = attn, DecodeCore(attn.core), ffn.act.forward
        self.heads = (attn.n_head, attn.n_kv_head, attn.n_kv_head)  # of Q, K, V, each d_head wide
        self.all_heads, self.d_head = sum(self.heads), attn.q_proj.out_features // attn.n_head
        self.qk_norm = (attn.q_norm.forward, attn.k_norm.forward) if attn.q_norm is not None else None
        self.qkv = DecodeLinear(projections, rows)  # W_Q, W_K, W_V stacked: ((h + 2*h_kv)*d, C)
        self.o_proj = DecodeLinear([attn.o_proj], rows)
        self.up = DecodeLinear([ffn.up], rows)
        self.gate = DecodeLinear([ffn.gate], rows) if ffn.gate is not None else None
        self.down = DecodeLinear([ffn.down], rows)
        self.cache, self.rotary = None, None  # this step's: set by DecodeStep before each call

    def self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """MultiHeadAttention.forward for one position per row, (B, C) -> (B, C), with one matmul for Q, K and V."""
        B = x.size(0)
        # (B, (h + 2*h_kv)*d) -> (B, h + 2*h_kv, 1, d) -> q (B, h, 1, d), k and v (B, h_kv, 1, d)
        q, k, v = self.qkv(x).view(B, self.all_heads, 1, self.d_head).split(self.heads, dim=1)
        out = self.attn.attend(q, k, v, cache=self.cache, rotary=self.rotary, core=self.core,
                               qk_norm=self.qk_norm)  # (B, h, 1, d)
        return self.o_proj(out.reshape(B, -1))  # heads concatenated: (B, h*d) -> (B, C)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return feed_forward(x, self.up, self.down, self.act, self.gate)


class DecodeCore:
    """A block's attention core for one new query per row: matvec's attention kernel, which reads
    the cache's keys and values in place, where it applies (float32 on CPU, no mask, the core on
    its default path "auto"); the core itself otherwise, and on the "fused" or "explicit" path a
    user chose. tests/test_matvec.py holds the kernel to `attention`."""

    def __init__(self, core):
        self.core, self.kernel = core, matvec.attention()

    def __call__(self, q, k, v, mask=None, is_causal=False):
        if self.kernel is not None and mask is None and self.core.path == "auto" and not self.core.training:
            out = self.kernel(q, k, v)  # one query: a causal mask would mask nothing
            if out is not None:
                return out, None
        return self.core.forward(q, k, v, mask, is_causal)


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
    """x (rows, in) -> x Wᵀ + b for one or more of the model's linear maps stacked (W_Q, W_K, W_V
    as one matmul), nn.Linear's map, for a few rows at a time.

    For 4 or more rows MKL's matmul is up to twice as fast with W stored (in, out), as
    GPT-2's Conv1D keeps it, than with nn.Linear's (out, in) (measured on CPU: 25 matmuls of
    a 6-layer d384 model at 8 rows, 5.6 ms against 7.8 ms); so there the weight is copied
    transposed once. For 1 to 3 rows both are as fast, and the model's weight is used as is; at
    one row in float32 on CPU the product goes through matvec's kernel, which reads the weights
    about three times as fast as F.linear (see matvec).
    Int8 weights (quant.Int8Linear, each output row with its scale) stack the same way and
    multiply through quant.int8_linear, at one float32 row through matvec's int8 kernel (the
    kernel int8_linear itself takes for one row).
    """

    def __init__(self, linears: list[nn.Module], rows: int):
        def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # rows of each map, one after another

        first = linears[0]
        self.bias = stacked([m.bias for m in linears]) if first.bias is not None else None
        self.int8 = isinstance(first, Int8Linear)
        self.matvec = None  # matvec's kernel bound to the weight (float32 or int8), for one float32 row on CPU
        if self.int8:
            self.q = stacked([m.q for m in linears])
            scale = stacked([m.scale for m in linears])  # (out,) float32
            self.scale = scale.to(INT8_COMPUTE)  # converted once, not per call
            self.transposed = False
            if rows == 1:  # one float32 row on CPU: matvec's int8 kernel, with the float32 scales
                self.matvec = matvec.bind_int8(self.q, scale, self.bias)
            return
        weight = stacked([m.weight for m in linears])  # (out, in)
        self.transposed = rows >= 4
        self.weight = weight.t().contiguous() if self.transposed else weight  # (in, out) or (out, in)
        if rows == 1:
            self.matvec = matvec.bind(self.weight, self.bias)  # None unless float32 on CPU with the kernel built

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.matvec is not None and x.dtype == torch.float32:
            return self.matvec(x)
        if self.int8:
            return int8_linear(x, self.q, self.scale, self.bias)
        if not self.transposed:
            return F.linear(x, self.weight, self.bias)
        return x @ self.weight if self.bias is None else torch.addmm(self.bias, x, self.weight)


# The most weight bytes `pack` copies. Measured on a 2-core Zen 4: a 6/6/384 GPT's 43 MB, 18-25% less
# time per token; the Qwen2.5-0.5B shape's 2 GB (matrices of 3.5 MB and more, one thread), no gain
# per token and 0.25-0.5 s of copying per generation (2x slower over 32 tokens when its pages were
# fresh). Equal to matvec.REUSE_BYTES: a packed buffer is always one the next step can reuse.
PACK_BYTES = matvec.REUSE_BYTES


def pack(maps: list[DecodeLinear]) -> None:
    """Copies the weights of these kernel-bound maps into one buffer, one after another in the
    order given (the step's), on transparent huge pages where the OS has them
    (matvec.huge_page_buffer: 20% less time per token at 6/6/384 on a Zen 4), and binds the kernel
    to the copies. The copy lives as long as the step, one generation (its pages then serve the
    next step's copy, see matvec.HugePages). Only small models' weights are copied (PACK_BYTES),
    and only where they take at most half the memory free now; otherwise the maps keep the
    model's weights."""
    align = 16  # floats: each matrix starts on a 64-byte cache line
    sizes = [-(-m.weight.numel() // align) * align for m in maps]
    free = memory_bytes(free=True)  # None where the system does not say
    limit = PACK_BYTES if free is None else min(PACK_BYTES, free // 2)
    if not maps or 4 * sum(sizes) > limit:
        return
    buffer, offset = matvec.huge_page_buffer(sum(sizes)), 0
    for m, size in zip(maps, sizes):
        m.weight = buffer[offset:offset + m.weight.numel()].view_as(m.weight).copy_(m.weight)
        m.matvec = matvec.bind(m.weight, m.bias)
        offset += size

