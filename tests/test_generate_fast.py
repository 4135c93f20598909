"""The fast generation path against the readable one: decode_step.DecodeStep (one token per step,
Block.forward written out with fused and transposed matmuls; for one row the whole step in C,
decode_step.StepKernel; asked for through accelerate.decode_step) against the modules with the
static KV cache, a concatenating cache written here, and full recomputation; for every
architecture variant, 1 row and rows enough for the transposed-weight matmuls, across
block_size, with sampling, stop strings and streaming, with float, int8 and bf16 weights
(glassformer.fast.quant); and the readable path whenever the model is observed."""

import dataclasses

import pytest
import torch
from conftest import BLOCK
from conftest import build_tiny_gpt as tiny_gpt
from conftest import random_ids as prompt

from glassformer import GPTConfig
from glassformer.data.tokenizers import CharTokenizer
from glassformer.fast import accelerate, decode_step, matvec
from glassformer.fast.quant import quantize
from glassformer.generation.sampling import generate, stream
from glassformer.model.config import C_STEP_ACTIVATIONS, FIELD_SUPPORT, TARGETS, unsupported
from glassformer.model.layers import MultiHeadAttention
from glassformer.observe.trace import Trace, observe

VARIANTS = {
    "gpt2-like": dict(),
    "rope-rms-swiglu-nobias": dict(position="rope", norm="rmsnorm", activation="swiglu", bias=False, d_ff=48),
    "post-ln-sinusoidal-relu": dict(norm_position="post", position="sinusoidal", activation="relu"),
    "no-positions-gelu-untied-narrow-heads": dict(position="none", activation="gelu", tie_weights=False, d_head=4),
    "multi-query-qk-norm-qkv-bias": dict(position="rope", norm="rmsnorm", activation="swiglu", bias=False,
                                         qkv_bias=True, qk_norm=True, n_kv_head=1, d_ff=48),
    "grouped-query-llama3-rope-wide-heads": dict(position="rope", norm="rmsnorm", activation="swiglu", bias=False,
                                                 n_head=4, n_kv_head=2, d_head=12, rope_scaling="llama3",
                                                 rope_original_max_len=4, tie_weights=False),
    "speedrun-relu2-embed-norm-qk-norm-untied-bigram": dict(position="rope", norm="rmsnorm", activation="relu2",
                                                            bias=False, embed_norm=True, qk_norm=True,
                                                            tie_weights=False, d_ff=48, bigram=True),
}


class ConcatCacheLayer:
    """The textbook KV cache: torch.cat each step's keys and values onto the old ones."""

    def __init__(self):
        self.k = self.v = None
        self.length = 0

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)  # (B, h, length + T_new, d)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        self.length = self.k.size(2)
        return self.k, self.v


class ConcatCache:
    def __init__(self, n_layers):
        self.self_attn = [ConcatCacheLayer() for _ in range(n_layers)]

    @property
    def length(self):
        return self.self_attn[0].length


# ---------------------------------------------------------------------------------------------
# One step at a time: logits against the modules


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("B", [1, 5])  # 5 rows: the transposed weight copies (DecodeLinear)
@pytest.mark.parametrize("weights", ["float", "int8", "bf16"])  # int8, bf16: the step stacks their rows (and scales)
def test_decode_step_logits_match_static_cache_concat_cache_and_recompute(variant, B, weights):
    model = quantize(tiny_gpt(**VARIANTS[variant]), weights)
    x = prompt(B, BLOCK)
    fast_cache, static_cache, concat_cache = model.new_cache(), model.new_cache(), ConcatCache(2)
    # Against recomputation, int8 weights multiply many rows widened (to bfloat16 where the CPU
    # multiplies it) and a few through torch's int8 kernel: both round their outputs to bfloat16
    # (2^-8 relative) in their own order, a few such steps apart after two layers. Float and
    # bf16 weights (multiplied in float32 on their exact values): float32 summation order.
    recomputed = dict(atol=1e-2, rtol=1e-2) if weights == "int8" else dict(atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        full = model(x)  # (B, BLOCK, V): every position recomputed from scratch
        for cache in (fast_cache, static_cache, concat_cache):
            torch.testing.assert_close(model.next_logits(x[:, :5], cache), full[:, 4], **recomputed)
        step = accelerate.decode_step(model, B)
        assert step is not None and all(layer.qkv.transposed == (B >= 4 and weights == "float")
                                        and layer.qkv.int8 == (weights == "int8")
                                        and layer.qkv.bf16 == (weights == "bf16") for layer in step.layers)
        assert (step.kernel is not None) == (B == 1 and matvec.kernel() is not None)  # one row: the whole step in C
        for t in range(5, BLOCK):
            fast = step(x[:, t : t + 1], fast_cache)  # (B, V)
            static = model(x[:, t : t + 1], cache=static_cache)[:, -1]
            concat = model(x[:, t : t + 1], cache=concat_cache)[:, -1]
            torch.testing.assert_close(static, full[:, t], **recomputed)
            torch.testing.assert_close(concat, static, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(fast, static, atol=1e-5, rtol=1e-5)
    assert fast_cache.length == static_cache.length == concat_cache.length == BLOCK
    for fast_layer, static_layer in zip(fast_cache.self_attn, static_cache.self_attn):
        torch.testing.assert_close(fast_layer.k, static_layer.k, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast_layer.v, static_layer.v, atol=1e-5, rtol=1e-5)


def test_every_config_field_has_a_row_in_the_support_table():
    # A new GPTConfig field is a new layer option: decide, in config.FIELD_SUPPORT, whether matvec.c's
    # whole step computes it (ANY) or declines it, and what the exporters do with it.
    assert {field.name for field in dataclasses.fields(GPTConfig)} == set(FIELD_SUPPORT)
    assert all(len(row) == len(TARGETS) for row in FIELD_SUPPORT.values())
    assert set(C_STEP_ACTIVATIONS) == set(decode_step.ACTIVATION_CODES)
    assert not unsupported(GPTConfig(), "c_step") and not unsupported(GPTConfig(), "gpt2")
    assert unsupported(GPTConfig(activation="swiglu", position="rope"), "gpt2") == [
        "activation=swiglu (GPT-2 export writes gelu, gelu_new or relu)",
        "position=rope (GPT-2 uses learned positions)"]


def test_the_c_step_grows_the_cache_and_declines_what_it_does_not_compute():
    model = tiny_gpt(block_size=300, position="rope", norm="rmsnorm", activation="swiglu", n_kv_head=1)
    x = prompt(1, 300)
    if matvec.kernel() is None:
        pytest.skip(f"no kernel here: {matvec.unavailable_reason()}")
    with torch.inference_mode():
        full = model(x)[0]  # (300, V)
        cache = model.new_cache()
        model.next_logits(x[:, :250], cache)  # capacity 256: the C step grows the cache at position 256
        step = accelerate.decode_step(model, 1)
        for t in range(250, 270):
            torch.testing.assert_close(step(x[:, t : t + 1], cache)[0], full[t], atol=1e-5, rtol=1e-5)
        assert cache.length == 270 and cache.self_attn[0].k.size(2) == 300
        logits = step.kernel(*model.embed(x[:, 270:271], 270), cache)
        assert logits is not None and cache.length == 271
    with torch.no_grad():  # not inference mode: still no gradient, the kernel applies
        assert step.kernel(*model.embed(x[:, 271:272], 271), cache) is not None
    assert step.kernel(*model.embed(x[:, 272:273], 272), cache) is None  # autograd on: the modules' ops
    with torch.inference_mode():
        for layer in cache.self_attn:
            layer.length = 300  # full: the kernel writes nothing past the buffers, it declines
        assert step.kernel(*model.embed(x[:, 299:300], 299), cache) is None


def test_next_logits_is_the_last_row_of_forward():
    model = tiny_gpt()
    x = prompt(3, 9)
    with torch.no_grad():
        torch.testing.assert_close(model.next_logits(x), model(x)[:, -1], atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Whole generations: the fast path, the readable path (a hook switches it on), recomputation


def readable_generate(model, *args, **kwargs):
    """generate while the model is observed, which keeps it on the readable path."""
    with observe(model):
        return generate(model, *args, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("B", [1, 3, 5])
@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, top_k=10, seed=7),
                                      dict(temperature=0.8, top_p=0.9, seed=11)])
def test_fast_generation_equals_readable_and_recomputed_past_block_size(variant, B, sampling):
    model = tiny_gpt(**VARIANTS[variant])
    x = prompt(B, 6)
    fast = generate(model, x, 30, **sampling)  # 36 tokens: the window slides past block_size 16
    assert fast == readable_generate(model, x, 30, **sampling)
    assert fast == generate(model, x, 30, use_cache=False, **sampling)
    assert all(len(row) == 36 for row in fast)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_stored_weights_fast_generation_equals_readable_and_recomputed(variant, B, weights):
    model = quantize(tiny_gpt(**VARIANTS[variant]), weights)
    x = prompt(B, 6)
    fast = generate(model, x, 30, temperature=0)
    assert fast == readable_generate(model, x, 30, temperature=0)
    assert fast == generate(model, x, 30, use_cache=False, temperature=0)


def test_fast_path_is_used_only_without_observers(monkeypatch):
    """Unobserved, generation runs the prompt through the fast modules and the steps through the
    one-token step; observed (nested or by a Trace), through the readable modules alone."""
    model = tiny_gpt()
    x = prompt(2, 5)
    steps, kinds = [], []
    asked = accelerate.decode_step
    monkeypatch.setattr(accelerate, "decode_step", lambda m, rows: steps.append(rows) or asked(m, rows))
    model.blocks[0].self_attn.register_forward_hook(lambda module, args, out: kinds.append(type(module)))

    def run():
        steps.clear(), kinds.clear()
        return generate(model, x, 6, temperature=0)

    fast = run()
    assert steps == [2] and kinds == [accelerate.FastAttention]  # the prompt: fast modules; then the step
    with observe(model):
        with observe(model):  # observations nest
            assert run() == fast and not steps and set(kinds) == {MultiHeadAttention} and len(kinds) == 6
        assert run() == fast and not steps
    with Trace(model):
        assert run() == fast and not steps
    assert run() == fast and steps == [2]
    assert type(model.blocks[0].self_attn) is MultiHeadAttention  # readable again after generating
    assert accelerate.decode_step(tiny_gpt(n_segments=2), 1) is None


def test_trace_sees_every_step_of_a_generation():
    model = tiny_gpt()
    x = prompt(2, 5)
    with Trace(model) as trace:
        traced = generate(model, x, 8, temperature=0)
    # The prompt once, then one call per new token but the last (its logits are never needed).
    assert len(trace.all("blocks.0.self_attn.core.probs")) == 8
    assert trace.all("blocks.0.self_attn.core.probs")[-1].shape == (2, 2, 1, 12)
    assert traced == generate(model, x, 8, temperature=0)


def test_dropout_model_in_training_mode_generates_as_in_eval_mode():
    model = tiny_gpt(dropout=0.5).train()
    x = prompt(5, 4)
    out = generate(model, x, 20, temperature=0)
    assert model.training and all(module.training for module in model.modules())
    assert out == generate(tiny_gpt(dropout=0.5).eval(), x, 20, temperature=0)


# ---------------------------------------------------------------------------------------------
# Stop strings, eos and streaming on the fast path


def test_stop_strings_and_eos_with_the_fast_path_equal_the_readable_path():
    text = "the cat sat on the mat.\nabc xyz\n"
    tok = CharTokenizer.train(text)
    model = tiny_gpt(vocab_size=tok.vocab_size)
    x = torch.tensor([tok.encode("the "), tok.encode("abc ")] * 3)  # 6 rows
    free = generate(model, x, 40, seed=2)
    stop = tok.decode(free[0][4:])[10:12]
    eos = free[1][4 + 7]
    kwargs = dict(seed=2, stop=[stop], tokenizer=tok, eos_id=eos)
    fast = generate(model, x, 40, **kwargs)
    assert fast == readable_generate(model, x, 40, **kwargs)
    assert fast[1] == free[1][: free[1].index(eos, 4)]  # cut at eos (unless the stop came first)
    assert any(len(row) < 44 for row in fast)


@pytest.mark.parametrize("B", [1, 4])
def test_stream_yields_the_tokens_generate_returns(B):
    model = tiny_gpt()
    x = prompt(B, 3)
    steps = torch.stack(list(stream(model, x, 25, temperature=0.9, top_k=20, seed=5)), dim=1)  # (B, 25)
    expected = generate(model, x, 25, temperature=0.9, top_k=20, seed=5)
    assert torch.cat([x, steps], dim=1).tolist() == expected
