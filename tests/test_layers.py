"""Each layer against its formula or an independent implementation."""

import math

import pytest
import torch
import torch.nn.functional as F

from glassformer.layers import (
    LayerNorm,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    ScaledDotProductAttention,
    SinusoidalPositionalEncoding,
    apply_rotary,
    attention,
    causal_mask,
    layer_norm,
    padding_mask,
    rms_norm,
)


def qkv(B=3, h=2, Tq=7, Tk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, t, d, generator=g) for t in (Tq, Tk, Tk)]


def keep_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) True for real tokens


@pytest.mark.parametrize("masking", ["none", "causal", "padding", "both"])
def test_explicit_attention_equals_fused(masking):
    q, k, v = qkv()
    core = ScaledDotProductAttention()
    mask = padding_mask(keep_mask([7, 4, 1], 7)) if masking in ("padding", "both") else None
    is_causal = masking in ("causal", "both")
    core.path = "explicit"
    out_explicit, probs = core(q, k, v, mask, is_causal)
    core.path = "fused"
    out_fused, none = core(q, k, v, mask, is_causal)
    assert none is None and probs is not None
    torch.testing.assert_close(out_fused, out_explicit, atol=1e-5, rtol=0)
    # The probabilities obey the mask and sum to one.
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 7))
    if is_causal:
        assert (probs.triu(diagonal=1) == 0).all()
    if mask is not None:
        assert (probs[1, :, :, 4:] == 0).all() and (probs[2, :, :, 1:] == 0).all()


def test_attention_matches_formula_by_hand():
    q, k, v = qkv(B=1, h=1, Tq=3, Tk=4, d=5)
    out, probs = attention(q, k, v)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(5)
    expected_probs = scores.exp() / scores.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(probs, expected_probs)
    torch.testing.assert_close(out, torch.einsum("bhij,bhjd->bhid", expected_probs, v))


def test_observed_core_returns_probabilities_and_the_same_output():
    q, k, v = qkv()
    core = ScaledDotProductAttention()
    plain, none = core(q, k, v, None, True)
    seen = []
    handle = core.register_forward_hook(lambda mod, inp, out: seen.append(out[1]))
    out, probs = core(q, k, v, None, True)
    handle.remove()
    assert none is None and probs is not None and seen[0] is probs
    assert torch.equal(out, plain)  # observing never changes the output
    torch.testing.assert_close(probs, attention(q, k, v, causal_mask(7, 7))[1])
    assert core(q, k, v, None, True)[1] is None  # unobserved again


def test_causal_mask_with_offset_for_cached_queries():
    m = causal_mask(2, 5)  # the last two of five positions
    assert m.tolist() == [[True, True, True, True, False], [True] * 5]
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())


def test_multi_head_equals_single_heads_concatenated_and_projected():
    torch.manual_seed(0)
    C, h, d = 12, 3, 4
    mha = MultiHeadAttention(C, h, d)
    x = torch.randn(2, 5, C)
    mask = causal_mask(5, 5)
    expected_heads = []
    for i in range(h):
        rows = slice(i * d, (i + 1) * d)  # this head's rows of W_Q, W_K, W_V
        qi = F.linear(x, mha.q_proj.weight[rows], mha.q_proj.bias[rows])
        ki = F.linear(x, mha.k_proj.weight[rows], mha.k_proj.bias[rows])
        vi = F.linear(x, mha.v_proj.weight[rows], mha.v_proj.bias[rows])
        scores = qi @ ki.transpose(-1, -2) / math.sqrt(d)
        head = torch.softmax(scores.masked_fill(~mask, -math.inf), -1) @ vi  # (B, T, d)
        expected_heads.append(head)
    expected = mha.o_proj(torch.cat(expected_heads, dim=-1))
    torch.testing.assert_close(mha(x, is_causal=True), expected, atol=1e-6, rtol=1e-5)


def test_cross_attention_reads_keys_and_values_from_context():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, 4)
    x, memory = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    out = mha(x, context=memory)
    assert out.shape == (1, 3, 8)
    # Changing the memory changes the output; the output of query i does not depend on other queries.
    assert not torch.allclose(out, mha(x, context=memory + 1))
    torch.testing.assert_close(mha(x[:, :1], context=memory), out[:, :1])


def test_sinusoidal_encoding_matches_formula():
    d, L = 6, 50
    pe = SinusoidalPositionalEncoding(L, d)(torch.arange(L))
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / (10000 ** (2 * i / d))
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_layer_norm_formula_module_and_torch_agree():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 16) * 3 + 1
    ln = LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    reference = F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-5)
    torch.testing.assert_close(ln(x), reference)
    torch.testing.assert_close(layer_norm(x, ln.weight, ln.bias, 1e-5), reference, atol=1e-5, rtol=1e-5)
    # Normalised rows have mean 0 and (biased) std 1 before scale and shift.
    y = layer_norm(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(4, 5), atol=1e-4, rtol=0)


def test_rms_norm_formula_and_module_agree():
    torch.manual_seed(0)
    x = torch.randn(3, 10)
    norm = RMSNorm(10)
    with torch.no_grad():
        norm.weight.normal_()
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(rms_norm(x, norm.weight), expected)


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, 64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        qi = apply_rotary(q, *rope(torch.tensor([i])))
        kj = apply_rotary(k, *rope(torch.tensor([j])))
        return (qi * kj).sum().item()

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-4)
    # Rotation preserves length.
    rotated = apply_rotary(q, *rope(torch.tensor([9])))
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


def test_dropout_is_inverted_and_identity_in_eval():
    torch.manual_seed(0)
    drop = torch.nn.Dropout(0.5)
    x = torch.ones(200_000)
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}  # survivors scaled by 1 / (1 - p)
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    drop.eval()
    assert torch.equal(drop(x), x)
