"""Each layer against its formula or an independent implementation (NumPy in float64, torch's
functions), and dropout where our layers put it: embeddings, attention probabilities, residuals."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glassformer.fast.accelerate import biased_attention, fast_attention
from glassformer.model.layers import (
    Block,
    LayerNorm,
    MultiHeadAttention,
    RMSNorm,
    attention,
    causal_mask,
    padding_mask,
    repeat_kv,
)
from glassformer.model.positions import (
    Llama3Scaling,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    apply_rotary,
    llama3_inv_freq,
)


def qkv(B=3, h=2, Tq=7, Tk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, t, d, generator=g) for t in (Tq, Tk, Tk)]


def keep_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) True for real tokens


@pytest.mark.parametrize("masking", ["none", "causal", "padding", "both"])
def test_written_out_attention_equals_the_fast_paths_fused_kernel(masking):
    q, k, v = qkv()
    mask = padding_mask(keep_mask([7, 4, 1], 7)) if masking in ("padding", "both") else None
    is_causal = masking in ("causal", "both")
    out_explicit, probs = attention(q, k, v, mask & causal_mask(7, 7) if is_causal and mask is not None
                                    else causal_mask(7, 7) if is_causal else mask)
    out_fused = fast_attention(q, k, v, mask, is_causal)
    torch.testing.assert_close(out_fused, out_explicit, atol=1e-5, rtol=0)
    # The probabilities obey the mask and sum to one.
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 7))
    if is_causal:
        assert (probs.triu(diagonal=1) == 0).all()
    if mask is not None:
        assert (probs[1, :, :, 4:] == 0).all() and (probs[2, :, :, 1:] == 0).all()


@pytest.mark.parametrize("masking", ["none", "causal", "padding", "both"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_biased_attention_equals_attention(masking, dtype):
    """The training form of the explicit path (mask as an additive bias) computes what `attention`
    computes: outputs, probabilities and gradients."""
    q, k, v = (t.to(dtype).requires_grad_() for t in qkv())
    mask = padding_mask(keep_mask([7, 4, 1], 7)) if masking in ("padding", "both") else None
    if masking in ("causal", "both"):
        mask = causal_mask(7, 7) if mask is None else mask & causal_mask(7, 7)
    runs = []
    for fn in (attention, biased_attention):
        out, probs = fn(q, k, v, mask)
        grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
        runs.append((out, probs, *grads))
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=1e-6, rtol=1e-5)
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, **tol)


def test_attention_matches_formula_by_hand():
    q, k, v = qkv(B=1, h=1, Tq=3, Tk=4, d=5)
    out, probs = attention(q, k, v)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(5)
    expected_probs = scores.exp() / scores.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(probs, expected_probs)
    torch.testing.assert_close(out, torch.einsum("bhij,bhjd->bhid", expected_probs, v))


@pytest.mark.parametrize("t_q, t_k", [(7, 7), (3, 7), (1, 7)])  # a whole sequence, then cached queries
def test_fast_attention_of_cached_queries_equals_attention_with_the_offset_causal_mask(t_q, t_k):
    q, k, v = qkv(Tq=t_q, Tk=t_k)
    mask = padding_mask(keep_mask([7, 4, 1], 7))
    # Query i sits at position Tk - Tq + i: it sees keys up to there, and no padded key.
    out, probs = attention(q, k, v, causal_mask(t_q, t_k) & mask)
    torch.testing.assert_close(fast_attention(q, k, v, mask, True), out, atol=1e-5, rtol=0)
    for bf16 in (q.bfloat16().requires_grad_(), ):  # the training form in bf16: the written-out biased one
        torch.testing.assert_close(fast_attention(bf16, k.bfloat16(), v.bfloat16(), mask, True).float(), out,
                                   atol=3e-2, rtol=3e-2)
    assert (probs[1, :, :, 4:] == 0).all()


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


def numpy_layer_norm(x, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis, in float64."""
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as the paper's LayerNorm
    y = (x - mean) / np.sqrt(var + eps) * weight
    return y + bias if bias is not None else y


def numpy_rms_norm(x, weight, eps):
    """x / sqrt(mean(x²) + eps) * weight over the last axis, in float64."""
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def norm_input():
    """(4, 5, 16): rows off-centre (so centring matters) at spreads 0.01 (eps matters) to 30.

    Each row's offset scales with its spread: an offset far above the spread would make float32's
    x - mean lose digits to cancellation, and the comparison would test float32, not the norm.
    """
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(4, 5, 16, generator=g) + 2 * torch.randn(4, 5, 1, generator=g)
    return rows * torch.tensor([0.01, 0.3, 1.0, 30.0])[:, None, None]


def randomise_(norm):
    """Random scale and shift, so that a swapped or missing one shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return norm


def as_numpy(t):
    return t.detach().numpy() if t is not None else None


# Float32 carries about 7 significant digits: the largest error seen was 9e-7, a twentieth of the tolerance.
@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_equals_numpy_float64(eps, bias):
    x = norm_input()
    norm = randomise_(LayerNorm(16, eps=eps, bias=bias))
    expected = numpy_layer_norm(x.numpy(), as_numpy(norm.weight), as_numpy(norm.bias), eps)
    np.testing.assert_allclose(as_numpy(norm(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
def test_rms_norm_equals_numpy_float64(eps):
    x = norm_input()
    norm = randomise_(RMSNorm(16, eps=eps))
    expected = numpy_rms_norm(x.numpy(), as_numpy(norm.weight), eps)
    np.testing.assert_allclose(as_numpy(norm(x)), expected, rtol=1e-5, atol=1e-5)


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


# ---------------------------------------------------------------------------------------------
# Dropout where our layers apply it. The kept count of n elements is Binomial(n, 1 - p): the tests
# accept 6 standard deviations either side, a false alarm about once in 500 million runs.


def assert_inverted_dropout(dropped, full, p):
    """Each element of `dropped` is 0 or its `full` value / (1 - p), and about a 1 - p share is kept.

    `full` must have no zeros, so that a zero always means "dropped".
    """
    assert (full != 0).all()
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], full[kept] / (1 - p), atol=1e-6, rtol=1e-5)
    n = full.numel()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept.sum().item() - n * (1 - p)) <= 6 * sigma, (kept.sum().item(), n, p)


@pytest.mark.parametrize("path", ["readable", "fast"])
def test_attention_dropout_drops_probabilities_in_training_only(path):
    B, h, T, p = 4, 2, 64, 0.25
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, h, T, 8, generator=g), torch.randn(B, h, T, 8, generator=g)
    eye = torch.eye(T).expand(B, h, T, T)  # values = identity: the output is the (dropped) probabilities
    probs = attention(q, k, eye, causal_mask(T, T))[1]

    def attend(dropout_p):
        if path == "readable":
            return attention(q, k, eye, causal_mask(T, T), dropout_p)[0]
        return fast_attention(q, k, eye, None, True, dropout_p)

    torch.manual_seed(0)
    dropped = attend(p)
    allowed = causal_mask(T, T).expand(B, h, T, T)  # 2080 of 4096 per head
    assert (dropped[~allowed] == 0).all()
    assert_inverted_dropout(dropped[allowed], probs[allowed], p)
    assert not torch.equal(dropped, attend(p))  # a new mask each call
    torch.testing.assert_close(attend(0.0), probs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_block_is_its_equations_and_drops_sublayer_outputs_in_training_only(pre_norm):
    p = 0.25
    block = Block(16, 2, 8, 32, dropout=p, bias=True, norm="layernorm", norm_eps=1e-5, pre_norm=pre_norm,
                  activation="gelu")
    block.self_attn.dropout = 0.0  # only the residual dropout draws
    x = torch.randn(8, 12, 16, generator=torch.Generator().manual_seed(0))
    attn, ffn = block.self_attn, block.ffn
    with torch.no_grad():
        block.eval()
        if pre_norm:  # x + attn(norm(x)), then + ffn(norm(.))
            h = x + attn(block.attn_norm(x), is_causal=True)
            expected = h + ffn(block.ffn_norm(h))
        else:  # norm(x + attn(x)), then norm(. + ffn(.)): "Add & Norm"
            h = block.attn_norm(x + attn(x, is_causal=True))
            expected = block.ffn_norm(h + ffn(h))
        assert torch.equal(block(x, is_causal=True), expected)
        block.train()
        torch.manual_seed(1)
        out = block(x, is_causal=True)
        torch.manual_seed(1)
        masks = [F.dropout(torch.ones(8, 12, 16), p) for _ in range(2)]  # the two draws, in the block's order
        if pre_norm:
            h = x + attn(block.attn_norm(x), is_causal=True) * masks[0]
            rebuilt = h + ffn(block.ffn_norm(h)) * masks[1]
        else:
            h = block.attn_norm(x + attn(x, is_causal=True) * masks[0])
            rebuilt = block.ffn_norm(h + ffn(h) * masks[1])
        torch.testing.assert_close(out, rebuilt)
        assert not torch.allclose(out, expected)


def test_gpt_dropout_acts_at_each_site_in_training_and_nowhere_in_eval(tiny_gpt, ids):
    x = ids(2, 16)
    model, plain = tiny_gpt(dropout=0.5), tiny_gpt()  # the same weights: dropout draws nothing at build time
    sites = {  # the modules that drop, and the attribute holding each one's rate
        "embeddings": [(model.drop, "p")],
        "residuals": [(block.dropout, "p") for block in model.blocks],
        "attention probabilities": [(block.self_attn, "dropout") for block in model.blocks],
    }

    def set_rate(site, p):
        for module, attribute in sites[site]:
            setattr(module, attribute, p)

    assert all(getattr(module, attribute) == 0.5 for site in sites.values() for module, attribute in site)
    with torch.no_grad():
        reference = plain(x)
        assert torch.equal(model(x), reference)  # eval: dropout is the identity, bit for bit
        model.train()
        for site in sites:
            set_rate(site, 0.0)
        assert torch.equal(model(x), reference)  # training with every rate 0: nothing else is random
        for site in sites:  # each site alone makes a training forward random
            set_rate(site, 0.5)
            a, b = model(x), model(x)
            assert not torch.allclose(a, reference) and not torch.allclose(a, b), site
            set_rate(site, 0.0)


def test_seq2seq_dropout_in_training_only(tiny_seq2seq, ids):
    src, tgt = ids(2, 10, 31), ids(2, 8, 29, seed=2)
    model, plain = tiny_seq2seq(dropout=0.3), tiny_seq2seq()
    with torch.no_grad():
        reference = plain(src, tgt)
        assert torch.equal(model(src, tgt), reference)
        model.train()
        a, b = model(src, tgt), model(src, tgt)
    assert not torch.allclose(a, reference) and not torch.allclose(a, b)


def test_grouped_query_attention_equals_each_query_head_with_its_groups_key_and_value():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=12, n_head=6, d_head=4, n_kv_head=2).eval()
    x = torch.randn(2, 5, 12)
    q = mha.q_proj(x).view(2, 5, 6, 4).transpose(1, 2)  # (B, 6, T, d)
    k = mha.k_proj(x).view(2, 5, 2, 4).transpose(1, 2)  # (B, 2, T, d)
    v = mha.v_proj(x).view(2, 5, 2, 4).transpose(1, 2)
    heads = [attention(q[:, [i]], k[:, [i // 3]], v[:, [i // 3]], causal_mask(5, 5))[0] for i in range(6)]
    expected = mha.o_proj(torch.cat(heads, dim=1).transpose(1, 2).reshape(2, 5, 24))
    with torch.no_grad():
        torch.testing.assert_close(mha(x, is_causal=True), expected, atol=1e-6, rtol=1e-6)
    assert repeat_kv(k, 3)[:, 4].equal(k[:, 1]) and repeat_kv(k, 1) is k


def test_qk_norm_normalises_each_heads_query_over_its_channels():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=8, n_head=2, d_head=4, qk_norm=True, norm_eps=1e-6).eval()
    with torch.no_grad():
        mha.q_norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(1, 3, 8)
    seen = {}
    mha.core.register_forward_hook(lambda module, args, out: seen.setdefault(args[0], out))  # the Tap: (name, value)
    with torch.no_grad():
        mha(x)
        q = mha.q_proj(x).view(1, 3, 2, 4).transpose(1, 2)  # (B, h, T, d) before the norm
    rms = q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(seen["q"], q / rms * mha.q_norm.weight, atol=1e-6, rtol=1e-6)


def test_llama3_rope_scaling_follows_the_formula_band_by_band():
    inv_freq = 1.0 / 500.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    s = Llama3Scaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_len=64)
    scaled = llama3_inv_freq(inv_freq, s)
    for f, g in zip(inv_freq.tolist(), scaled.tolist()):
        wavelen = 2 * math.pi / f
        if wavelen < 64 / 4:  # fast: kept
            assert g == f
        elif wavelen > 64 / 1:  # slow: divided by the factor
            assert g == pytest.approx(f / 8)
        else:  # between: blended by where the wavelength falls
            smooth = (64 / wavelen - 1) / (4 - 1)
            assert g == pytest.approx((1 - smooth) * f / 8 + smooth * f)
    assert (scaled < inv_freq).any() and (scaled == inv_freq).any()
