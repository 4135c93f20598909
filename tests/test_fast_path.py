"""The fast paths compute what the readable ones compute: the fast modules glassformer.fast.accelerate
swaps in (Q/K/V as one matmul in training, the attention core picked per dtype, fused.c's norms,
gate and RoPE) against the readable model for every variant, bf16 autocast, torch.compile, the
dtype chosen for the hardware; and swapping in leaves names, order and hooks as they were."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_train import tiny_run

from glassformer import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from glassformer.base.device import native_bf16, pick_dtype
from glassformer.fast import accelerate
from glassformer.fast.accelerate import EXPLICIT_MAX_LEN, explicit_is_faster, fast_attention, fuses_qkv
from glassformer.model.layers import FeedForward, MultiHeadAttention, RMSNorm, attention, causal_mask
from glassformer.training.trainer import TrainConfig


def attention_run(path: str, dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 12, 8, requires_grad=True) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        q_, k_, v_ = q.to(dtype), k.to(dtype), v.to(dtype)
        if path == "readable":
            out, _ = attention(q_, k_, v_, causal_mask(12, 12))
        elif path == "fused":
            out = F.scaled_dot_product_attention(q_, k_, v_, is_causal=True)
        else:
            out = fast_attention(q_, k_, v_, None, True)
    out.float().square().sum().backward()
    return out.float(), [t.grad for t in (q, k, v)]


def test_auto_path_picks_explicit_for_cpu_bf16_training_only():
    q = torch.zeros(1, 1, 2, 2)
    assert not explicit_is_faster(q)
    assert explicit_is_faster(q.bfloat16())
    with torch.no_grad():
        assert not explicit_is_faster(q.bfloat16())  # inference: the fused forward is the fast one
    assert explicit_is_faster(torch.zeros(1, 1, EXPLICIT_MAX_LEN, 2).bfloat16())
    assert not explicit_is_faster(torch.zeros(1, 1, EXPLICIT_MAX_LEN + 1, 2).bfloat16())  # long: (T, T) scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_attention_equals_the_written_out_one_and_the_fused_kernel(dtype):
    auto, auto_grads = attention_run("fast", dtype)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    for path in ("readable", "fused"):
        out, grads = attention_run(path, dtype)
        torch.testing.assert_close(auto, out, **tol)
        for a, b in zip(auto_grads, grads):
            torch.testing.assert_close(a, b, **tol)


def test_bf16_autocast_training_follows_fp32(tmp_path):
    fp32 = tiny_run(tmp_path / "fp32", max_iters=20, dtype="float32").run()
    bf16 = tiny_run(tmp_path / "bf16", max_iters=20, dtype="bfloat16").run()
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], abs=0.05)


def test_dtype_auto_is_bf16_only_with_hardware_support():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    assert pick_dtype("float32", cpu) == torch.float32 and pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert not native_bf16(torch.device("meta"))
    with pytest.raises(ValueError, match="dtype must be"):
        TrainConfig(dtype="float16")


def test_compiled_model_equals_eager():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    ids = torch.randint(0, 11, (2, 8))
    compiled = torch.compile(model)
    eager_out = model(ids)
    eager_out.square().mean().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = compiled(ids)
    out.square().mean().backward()
    torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-5)
    for a, p in zip(eager_grads, model.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-5, rtol=1e-4)


# Every layer option that reaches the attention projections: biases (all, Q/K/V only, none),
# grouped-query and multi-query attention, per-head q/k norms, RoPE, post-LN.
QKV_VARIANTS = {
    "gpt2": dict(),
    "no-bias": dict(bias=False),
    "qkv-bias-only": dict(bias=False, qkv_bias=True),
    "gqa-rope-rmsnorm": dict(n_kv_head=2, position="rope", norm="rmsnorm", activation="swiglu"),
    "mqa-qk-norm": dict(n_kv_head=1, qk_norm=True, position="rope"),
    "post-ln-d_head": dict(norm_position="post", d_head=6),
}


def loss_and_grads(model, run):
    model.zero_grad(set_to_none=True)
    loss = run(model)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_fast_equals_readable(model, run):
    """The fast modules (one matmul for W_Q, W_K, W_V, the attention core per dtype, fused.c's
    kernels) against the readable model, in training (losses and gradients) and in evaluation
    (a prompt's forward); with dropout 0 the two compute the same function."""
    model.train()
    with accelerate.for_training(model):
        assert all(fuses_qkv(m) for m in model.modules() if isinstance(m, MultiHeadAttention))
        fast, fast_grads = loss_and_grads(model, run)
        model.eval()
        with torch.no_grad():
            fast_eval = run(model)
        model.train()
    assert not any(type(m) in accelerate.FAST.values() for m in model.modules())  # readable again
    plain, plain_grads = loss_and_grads(model, run)
    with torch.no_grad():
        plain_eval = run(model.eval())
    # fp32 sums of a few dozen terms, in another order: differences of a few ulps
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fast_eval, plain_eval, atol=1e-6, rtol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("variant", QKV_VARIANTS)
def test_fused_qkv_training_equals_separate_projections_gpt(variant):
    torch.manual_seed(0)
    cfg = dict(vocab_size=13, block_size=10, n_layer=2, n_head=4, n_embd=24, dropout=0.0, tie_weights=False)
    model = GPT(GPTConfig(**{**cfg, **QKV_VARIANTS[variant]}))
    ids, targets = torch.randint(0, 13, (3, 10)), torch.randint(0, 13, (3, 10))
    assert_fast_equals_readable(model, lambda m: F.cross_entropy(m(ids).flatten(0, 1), targets.flatten()))


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_fused_qkv_training_equals_separate_projections_seq2seq(norm_position):
    """Encoder self-attention (padding mask), decoder self-attention (causal) and cross-attention,
    which keeps its separate projections (queries and keys come from different inputs)."""
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=15, tgt_vocab_size=15, block_size=12, n_encoder_layers=2,
                                  n_decoder_layers=2, n_head=2, d_model=16, d_ff=32, dropout=0.0,
                                  norm_position=norm_position))
    src, tgt = torch.randint(3, 15, (2, 9)), torch.randint(3, 15, (2, 7))
    src_mask = torch.ones(2, 9, dtype=torch.bool)
    src_mask[1, 6:] = False  # the second source is padded
    assert_fast_equals_readable(model, lambda m: m(src, tgt, src_mask).square().mean())


def test_fused_qkv_only_while_training_with_plain_linears():
    attn = MultiHeadAttention(8, 2, 4)
    assert fuses_qkv(attn)
    with torch.no_grad():
        assert not fuses_qkv(attn)  # inference: each projection's module (and its hooks) is called
    attn.eval()
    assert not fuses_qkv(attn)
    attn.train()

    class Scaled(nn.Linear):  # a subclass with its own forward is called as a module
        def forward(self, x):
            return 2 * super().forward(x)

    attn.k_proj = Scaled(8, 8)
    assert not fuses_qkv(attn)


def test_swapping_in_keeps_objects_names_order_and_hooks():
    """The fast modules are the readable ones with another forward: the same objects, parameters
    in the same order under the same names (checkpoints, optimizer states), hooks kept; and the
    model is readable again afterwards. The fast subclasses hold no state of their own."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=10, n_layer=2, n_head=4, n_embd=24, position="rope",
                          norm="rmsnorm", activation="swiglu", qk_norm=True))
    before = [(name, p) for name, p in model.named_parameters()]
    modules = list(model.modules())
    calls = []
    model.blocks[0].ffn.register_forward_hook(lambda *args: calls.append(1))
    with accelerate.for_training(model):
        kinds = {type(m) for m in model.modules()}
        assert {accelerate.FastAttention, accelerate.FastRMSNorm, accelerate.FastFeedForward} <= kinds
        assert not kinds & {MultiHeadAttention, RMSNorm, FeedForward}
        assert [(name, p) for name, p in model.named_parameters()] == before and list(model.modules()) == modules
        model(torch.randint(0, 13, (1, 10)))
    assert calls == [1]
    assert {MultiHeadAttention, RMSNorm, FeedForward} <= {type(m) for m in model.modules()}
    for fast in accelerate.FAST.values():
        assert "__init__" not in vars(fast)
