"""The one-token decode step of generation: GPT.next_logits for one new token per row after a KV cache,
built from the model's own functions with faster pieces (see DecodeStep), and for one row the whole
step as one C call (StepKernel)."""

from __future__ import annotations

import ctypes
import functools
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from glassformer.base.device import memory_bytes
from glassformer.fast import fused, matvec
from glassformer.fast.quant import Bf16Linear, Int8Linear, bf16_linear, int8_linear
from glassformer.model.config import unsupported
from glassformer.model.layers import Block, KVCache, KVCacheLayer, LayerNorm, RMSNorm, repeat_kv
from glassformer.model.positions import apply_rotary

if TYPE_CHECKING:
    from glassformer.model.gpt import GPT


class DecodeStep:
    """GPT.next_logits for one new token per row, (B, 1) ids after a KV cache -> (B, V), in eval mode.

    GPT.forward for one position, written out again with faster pieces: at one token per step a
    small model spends much of its time around its matmuls. Each block runs as Block.forward does
    (DecodeLayer); Q, K and V come from one matmul against the stacked W_Q, W_K, W_V; at one row on
    CPU the matmuls go through matvec's C kernels (float32, int8 and bf16 weights), from 4 rows on
    they use a transposed copy of the weights (DecodeLinear; int8 and bf16 weights from
    quant.quantize stay as they are, see quant.int8_linear and bf16_linear); the float32 kernel's
    weights are copied into one buffer on huge pages in the order the step reads them (`pack`); the
    attention of one new query reads the cache through matvec's attention kernel (DecodeCore);
    norms and the activation are called without module dispatch (no hooks: generation asks for a
    step only while nobody observes the model); rows have no time axis; the ids are not checked
    (generation feeds back ids the model chose). For one row all of that after GPT.embed runs as
    one C call where it applies (StepKernel, below), with these maps' weights. Reads the weights
    when built: build one per generation, for `rows` sequences. tests/test_generate_fast.py holds
    both to the model.
    """

    def __init__(self, model: GPT, rows: int):
        self.model = model
        self.rows = rows
        self.layers = [DecodeLayer(block, rows) for block in model.blocks]
        self.final = norm_function(model.final_norm)
        self.lm_head = DecodeLinear([model.lm_head], rows)
        pack([m for m in self.linears() if m.matvec is not None and not m.int8 and not m.bf16])
        self.kernel = StepKernel.build(self) if rows == 1 else None  # the whole step in C, where it applies

    def linears(self) -> list[DecodeLinear]:
        """The maps this step multiplies by, in the order it calls them."""
        maps = []
        for layer in self.layers:
            gate = [layer.gate] if layer.gate is not None else []
            maps += [layer.qkv, layer.o_proj, *gate, layer.up, layer.down]
        return maps + [self.lm_head]

    def __call__(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        x, rotary = self.model.embed(ids, cache.length, cache=cache)
        if self.kernel is not None:
            logits = self.kernel(x, rotary, cache)
            if logits is not None:
                return logits
        x = x[:, 0]  # (B, 1, C) -> (B, C): rows without a time axis, as the matmuls want them
        for layer, layer_cache in zip(self.layers, cache.self_attn):
            x = layer(x, layer_cache, rotary)
        return self.lm_head(self.final(x))  # (B, V)


def norm_function(module: nn.Module | None):
    """A norm's map without module dispatch: RMSNorm through fused.c where it applies, LayerNorm as
    itself; no norm (None): the identity."""
    if module is None:
        return lambda x: x
    if isinstance(module, RMSNorm):
        return functools.partial(fused.rms_norm_or_torch, weight=module.weight, eps=module.eps)
    return module.forward


class DecodeLayer:
    """One Block for DecodeStep: Block.forward for one position per row, (B, C) -> (B, C), with the
    block's norms and activation and its matrices as DecodeLinear maps (no dropout: eval mode)."""

    def __init__(self, block: Block, rows: int):
        attn, ffn = block.self_attn, block.ffn
        self.pre_norm = block.pre_norm
        self.attn_norm, self.ffn_norm = norm_function(block.attn_norm), norm_function(block.ffn_norm)
        self.heads = (attn.n_head, attn.n_kv_head, attn.n_kv_head)  # of Q, K, V, each d_head wide
        self.all_heads, self.d_head = sum(self.heads), attn.q_proj.out_features // attn.n_head
        self.q_norm = norm_function(attn.q_norm) if attn.q_norm is not None else None
        self.k_norm = norm_function(attn.k_norm) if attn.k_norm is not None else None
        self.core, self.act = DecodeCore(), ffn.act.forward
        self.qkv = DecodeLinear([attn.q_proj, attn.k_proj, attn.v_proj], rows)  # W_Q, W_K, W_V: ((h + 2*h_kv)*d, C)
        self.o_proj = DecodeLinear([attn.o_proj], rows)
        self.up = DecodeLinear([ffn.up], rows)
        self.gate = DecodeLinear([ffn.gate], rows) if ffn.gate is not None else None
        self.down = DecodeLinear([ffn.down], rows)

    def __call__(self, x: torch.Tensor, cache: KVCacheLayer, rotary) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.self_attention(self.attn_norm(x), cache, rotary)
            return x + self.feed_forward(self.ffn_norm(x))
        x = self.attn_norm(x + self.self_attention(x, cache, rotary))
        return self.ffn_norm(x + self.feed_forward(x))

    def self_attention(self, x: torch.Tensor, cache: KVCacheLayer, rotary) -> torch.Tensor:
        """MultiHeadAttention.forward for one position per row, (B, C) -> (B, C), with one matmul for Q, K and V."""
        B = x.size(0)
        # (B, (h + 2*h_kv)*d) -> (B, h + 2*h_kv, 1, d) -> q (B, h, 1, d), k and v (B, h_kv, 1, d)
        q, k, v = self.qkv(x).view(B, self.all_heads, 1, self.d_head).split(self.heads, dim=1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        k, v = cache.append(k, v)  # (B, h_kv, past + 1, d)
        n_rep = self.heads[0] // self.heads[1]
        out = self.core(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep))  # (B, h, 1, d)
        return self.o_proj(out.reshape(B, -1))  # heads concatenated: (B, h*d) -> (B, C)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """FeedForward.forward with the step's maps."""
        if self.gate is None:
            return self.down(self.act(self.up(x)))
        return self.down(self.act(self.gate(x)) * self.up(x))


class DecodeCore:
    """`attention` for one new query per row, (B, h, 1, d) against the cache's keys and values:
    matvec's attention kernel, which reads them in place, where it applies (float32 on CPU);
    torch's fused kernel otherwise (one query sees every key: no mask). tests/test_matvec.py holds
    the kernel to `attention`."""

    def __init__(self):
        self.kernel = matvec.attention()

    def __call__(self, q, k, v):
        if self.kernel is not None:
            out = self.kernel(q, k, v)
            if out is not None:
                return out
        return F.scaled_dot_product_attention(q, k, v)


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
    kernel int8_linear itself takes for one row); bfloat16 weights (quant.Bf16Linear) through
    quant.bf16_linear, at one float32 row through matvec's bf16 kernel.
    """

    def __init__(self, linears: list[nn.Module], rows: int):
        def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # rows of each map, one after another

        first = linears[0]
        self.bias = stacked([m.bias for m in linears]) if first.bias is not None else None
        self.int8, self.bf16 = isinstance(first, Int8Linear), isinstance(first, Bf16Linear)
        self.matvec = None  # matvec's kernel bound to the weight (float32, int8 or bf16), for one float32 row on CPU
        if self.bf16:
            self.weight, self.transposed = stacked([m.weight_bf16 for m in linears]), False  # (out, in) bfloat16
            if rows == 1:
                self.matvec = matvec.bind_bf16(self.weight, self.bias)
            return
        if self.int8:
            self.q = stacked([m.q for m in linears])
            self.scale = stacked([m.scale for m in linears])  # (out,) float32, as the modules pass it
            self.transposed = False
            if rows == 1:  # one float32 row on CPU: matvec's int8 kernel
                self.matvec = matvec.bind_int8(self.q, self.scale, self.bias)
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
        if self.bf16:
            return bf16_linear(x, self.weight, self.bias)
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


# ---------------------------------------------------------------------------------------------
# The whole step in C (matvec.c's glassformer_decode_step), for one row


class Matrix(ctypes.Structure):  # matvec.c's gf_matrix
    _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("out", ctypes.c_long), ("inputs", ctypes.c_long), ("kind", ctypes.c_int)]


MATRIX_KINDS = {matvec.MatVec: 0, matvec.MatVecInt8: 1, matvec.MatVecBf16: 2}  # matvec.c's GF_F32, GF_INT8, GF_BF16


class Norm(ctypes.Structure):  # gf_norm
    _fields_ = [("weight", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("eps", ctypes.c_float), ("rms", ctypes.c_int)]


class Layer(ctypes.Structure):  # gf_layer
    _fields_ = [(name, Norm) for name in ("attn_norm", "ffn_norm", "q_norm", "k_norm")] + [
        (name, Matrix) for name in ("qkv", "o", "gate", "up", "down")] + [
        ("k", ctypes.c_void_p), ("v", ctypes.c_void_p)] + [
        (name, ctypes.c_long) for name in ("k_head", "k_pos", "v_head", "v_pos")]


class Model(ctypes.Structure):  # gf_model
    _fields_ = [(name, ctypes.c_long) for name in ("n_layer", "width", "n_head", "n_kv_head", "d_head", "d_ff")] + [
        ("pre_norm", ctypes.c_int), ("activation", ctypes.c_int), ("layers", ctypes.POINTER(Layer)),
        ("final_norm", Norm), ("head", Matrix)]


# The activations the C step computes (matvec.c's GF_RELU...), by the config's names (config.C_STEP_ACTIVATIONS)
ACTIVATION_CODES = {"relu": 0, "relu2": 1, "gelu": 2, "gelu_tanh": 3, "swiglu": 4}


def matrix(m: DecodeLinear | None) -> Matrix:
    """A DecodeLinear's kernel-bound weights as the C step reads them (zeros: no map)."""
    if m is None:
        return Matrix()
    f = m.matvec
    w, scale, bias = f.pointers if isinstance(f, matvec.MatVecInt8) else (f.pointers[0], None, f.pointers[1])
    return Matrix(w, scale, bias, f.out, f.inputs, MATRIX_KINDS[type(f)])


def norm(module: nn.Module | None) -> Norm:
    """A LayerNorm or RMSNorm as the C step reads it (zeros: no norm)."""
    if module is None:
        return Norm()
    bias = None if isinstance(module, RMSNorm) or module.bias is None else module.bias.data_ptr()
    return Norm(module.weight.data_ptr(), bias, module.eps, isinstance(module, RMSNorm))


class StepKernel:
    """DecodeStep for one row as one C call (matvec.c's glassformer_decode_step): every block,
    the final norm and the head, after GPT.embed, on the step's own kernel-bound weights.

    A step built from torch ops spends most of its non-matmul time between ops (Python, dispatch,
    and small ops run with their data evicted by the weights streaming past); this one does the
    norms, attention, activations and residuals in the same thread team that reads the weights.
    Measured on a 2-core Zen 3, a 6/6/384 GPT's generation of 256 tokens: 3.34 ms per token
    against 4.32 with DecodeStep's ops (int8 weights: 1.84 against 2.93; figures in matvec.c).

    Used only where it computes what the modules do: float32 norms on CPU, every matrix on
    matvec's kernels, a config the C step supports (the "c_step" column of
    config.FIELD_SUPPORT), and per call nothing to differentiate and the
    cache's buffers float32 (1, h_kv, ·, d).
    Otherwise `__call__` returns None and DecodeStep runs its own ops.
    """

    def __init__(self, step: DecodeStep, function):
        model, c = step.model, step.model.config
        self.function = function
        first = step.layers[0]
        self.shape = (first.heads[1], first.d_head)  # each cache's (h_kv, d)
        self.vocab = step.lm_head.matvec.out
        layers = []
        for block, layer in zip(model.blocks, step.layers):
            attn = block.self_attn
            layers.append(Layer(norm(block.attn_norm), norm(block.ffn_norm), norm(attn.q_norm),
                                norm(attn.k_norm), matrix(layer.qkv), matrix(layer.o_proj), matrix(layer.gate),
                                matrix(layer.up), matrix(layer.down)))
        self.layers = (Layer * len(layers))(*layers)  # held here: the C structure points into it
        self.buffers: list[tuple[int, int]] = [(0, 0)] * len(layers)  # each layer's cache pointers the C side holds
        self.struct = Model(c.n_layer, c.n_embd, c.n_head, first.heads[1], first.d_head, first.up.matvec.out,
                           model.blocks[0].pre_norm, ACTIVATION_CODES[c.activation], self.layers,
                           norm(model.final_norm), matrix(step.lm_head))
        self.pointer = ctypes.addressof(self.struct)  # what the C function reads: the structures above

    @classmethod
    def build(cls, step: DecodeStep) -> StepKernel | None:
        """The C step for this DecodeStep (one row), or None where it does not apply (see the class)."""
        function, model = matvec.whole_step(), step.model
        norms = [m for m in model.modules() if isinstance(m, (LayerNorm, RMSNorm))]
        if (function is None or unsupported(model.config, "c_step")
                or any(m.matvec is None for m in step.linears())
                or not all(matvec.plain(p, torch.float32, 1) for n in norms for p in n.parameters())):
            return None
        return cls(step, function)

    def __call__(self, x: torch.Tensor, rotary, cache: KVCache) -> torch.Tensor | None:
        """x (1, 1, C): GPT.embed's for the new token; rotary: its (cos, sin) or None -> logits (1, V), or None."""
        if torch.is_grad_enabled() or x.dtype != torch.float32 or not x.is_cpu:
            return None
        pos = cache.length
        for i, layer in enumerate(cache.self_attn):
            if layer.k is None or pos >= layer.max_len:
                return None  # nothing cached yet, or full: the torch-op step fills it, or says it is full
            if pos >= layer.k.size(2):
                layer.grow(layer.k, layer.v, pos + 1)
            k, v = layer.k, layer.v
            if (k.data_ptr(), v.data_ptr()) != self.buffers[i]:  # new buffers: checked and handed over once
                if not (k.dtype == v.dtype == torch.float32 and k.size(0) == 1 and k.shape == v.shape
                        and (k.size(1), k.size(3)) == self.shape and k.stride(3) == v.stride(3) == 1):
                    return None
                self.layers[i].k, self.layers[i].v = k.data_ptr(), v.data_ptr()
                self.layers[i].k_head, self.layers[i].k_pos = k.stride(1), k.stride(2)
                self.layers[i].v_head, self.layers[i].v_pos = v.stride(1), v.stride(2)
                self.buffers[i] = (k.data_ptr(), v.data_ptr())
        x = x.contiguous()
        cos, sin = (None, None) if rotary is None else (t.float().contiguous() for t in rotary)
        logits = torch.empty(1, self.vocab)
        if self.function(self.pointer, x.data_ptr(), pos, None if cos is None else cos.data_ptr(),
                         None if sin is None else sin.data_ptr(), logits.data_ptr(), torch.get_num_threads()):
            return None  # its working memory could not be allocated
        for layer in cache.self_attn:
            layer.length = pos + 1
        return logits
