"""The fast paths compute what the readable ones compute: bf16 autocast with the attention path
picked per dtype, torch.compile, the dtype chosen for the hardware, Q/K/V as one matmul in training."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_train import tiny_run

from glassformer import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from glassformer.device import native_bf16, pick_dtype
from glassformer.layers import EXPLICIT_MAX_LEN, MultiHeadAttention, ScaledDotProductAttention, explicit_is_faster
from glassformer.train import TrainConfig


def attention_run(path: str, dtype):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 12, 8, requires_grad=True) for _ in range(3))
    core = ScaledDotProductAttention()
    core.path = path
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out, _ = core(q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True)
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
def test_auto_attention_equals_both_paths(dtype):
    auto, auto_grads = attention_run("auto", dtype)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    for path in ("explicit", "fused"):
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


def assert_fused_qkv_equals_modules(model, run):
    """Training (one matmul for W_Q, W_K, W_V) against eval mode with gradients on, where each
    projection is called as its own module; with dropout 0 the two compute the same function."""
    model.train()
    assert all(m.fuses_qkv() for m in model.modules() if isinstance(m, MultiHeadAttention))
    fused, fused_grads = loss_and_grads(model, run)
    model.eval()
    assert not any(m.fuses_qkv() for m in model.modules() if isinstance(m, MultiHeadAttention))
    plain, plain_grads = loss_and_grads(model, run)
    # fp32 sums of a few dozen terms, in another order: differences of a few ulps
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("variant", QKV_VARIANTS)
def test_fused_qkv_training_equals_separate_projections_gpt(variant):
    torch.manual_seed(0)
    cfg = dict(vocab_size=13, block_size=10, n_layer=2, n_head=4, n_embd=24, dropout=0.0, tie_weights=False)
    model = GPT(GPTConfig(**{**cfg, **QKV_VARIANTS[variant]}))
    ids, targets = torch.randint(0, 13, (3, 10)), torch.randint(0, 13, (3, 10))
    assert_fused_qkv_equals_modules(model, lambda m: F.cross_entropy(m(ids).flatten(0, 1), targets.flatten()))


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
    assert_fused_qkv_equals_modules(model, lambda m: m(src, tgt, src_mask).square().mean())


def test_fused_qkv_only_while_training_with_plain_linears():
    attn = MultiHeadAttention(8, 2, 4)
    assert attn.fuses_qkv()
    with torch.no_grad():
        assert not attn.fuses_qkv()  # inference: each projection's module (and its hooks) is called
    attn.eval()
    assert not attn.fuses_qkv()
    attn.train()
    class Scaled(nn.Linear):  # a subclass with its own forward is called as a module
        def forward(self, x):
            return 2 * super().forward(x)

    attn.k_proj = Scaled(8, 8)
    assert not attn.fuses_qkv()
