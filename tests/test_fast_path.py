"""The fast paths compute what the readable ones compute: bf16 autocast with the attention path
picked per dtype, torch.compile, the dtype chosen for the hardware."""

import pytest
import torch
from test_train import tiny_run

from glassformer import GPT, GPTConfig
from glassformer.device import native_bf16, pick_dtype
from glassformer.layers import ScaledDotProductAttention, explicit_is_faster
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
