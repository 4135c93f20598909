"""GPT and Seq2Seq: causality, padding, KV cache, torch.nn.Transformer equivalence, learning."""

import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from glassformer import GPT, PRESETS, GPTConfig, Seq2Seq, Seq2SeqConfig
from glassformer.config import apply_overrides

GPT_VARIANTS = {
    "gpt2-like": dict(),
    "rope-rms-swiglu": dict(position="rope", norm="rmsnorm", activation="swiglu", bias=False, d_ff=48),
    "post-ln-sinusoidal-relu": dict(norm_position="post", position="sinusoidal", activation="relu"),
    "untied-narrow-heads": dict(tie_weights=False, d_head=4),
}


def tiny_gpt(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=37, block_size=24, n_layer=2, n_head=2, n_embd=16, **overrides)
    return GPT(cfg).eval()


def tiny_seq2seq(seed=0, **overrides) -> Seq2Seq:
    torch.manual_seed(seed)
    values = dict(src_vocab_size=31, tgt_vocab_size=29, block_size=20, n_encoder_layers=2, n_decoder_layers=2,
                  n_head=2, d_model=16, d_ff=32, dropout=0.0)
    values.update(overrides)
    return Seq2Seq(Seq2SeqConfig(**values)).eval()


def ids(B, T, V, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", GPT_VARIANTS)
def test_gpt_is_causal(variant):
    model = tiny_gpt(**GPT_VARIANTS[variant])
    x = ids(2, 16, 37)
    t = 9
    changed = x.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 5) % 37
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_gpt_padded_batch_equals_unpadded_sequences():
    model = tiny_gpt()
    seqs = [ids(1, n, 37, seed=n)[0] for n in (12, 5, 9)]
    batch = torch.zeros(3, 12, dtype=torch.long)  # right padding with id 0
    for row, s in enumerate(seqs):
        batch[row, : len(s)] = s
    with torch.no_grad():
        padded = model(batch)
        for row, s in enumerate(seqs):
            torch.testing.assert_close(padded[row, : len(s)], model(s[None])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", GPT_VARIANTS)
def test_gpt_kv_cache_equals_recompute(variant):
    model = tiny_gpt(**GPT_VARIANTS[variant])
    x = ids(2, 20, 37)
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache()
        # A prompt of 7 positions at once, then chunks of 1 and 3, as generation does.
        steps = [model(x[:, :7], cache=cache)]
        for start, end in ((7, 8), (8, 11), *((i, i + 1) for i in range(11, 20))):
            steps.append(model(x[:, start:end], cache=cache))
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_seq2seq_kv_cache_equals_recompute():
    model = tiny_seq2seq()
    src, tgt = ids(2, 11, 31), ids(2, 9, 29, seed=2)
    src_mask = torch.tensor([[True] * 11, [True] * 6 + [False] * 5])
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        full = model.decode(tgt, memory, src_mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, i: i + 1], memory, src_mask, cache=cache) for i in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_seq2seq_padding_changes_nothing_on_real_positions():
    model = tiny_seq2seq()
    pairs = [(ids(1, n, 31, seed=n)[0], ids(1, m, 29, seed=n + 50)[0]) for n, m in ((10, 7), (4, 9), (7, 3))]
    S, T = 10, 9
    src = torch.zeros(3, S, dtype=torch.long)
    tgt = torch.zeros(3, T, dtype=torch.long)
    for row, (s, t) in enumerate(pairs):
        src[row, : len(s)], tgt[row, : len(t)] = s, t
    src_mask = src.new_tensor([[i < len(s) for i in range(S)] for s, _ in pairs], dtype=torch.bool)
    tgt_mask = tgt.new_tensor([[i < len(t) for i in range(T)] for _, t in pairs], dtype=torch.bool)
    with torch.no_grad():
        batched = model(src, tgt, src_mask, tgt_mask)
        for row, (s, t) in enumerate(pairs):
            alone = model(s[None], t[None])[0]
            torch.testing.assert_close(batched[row, : len(t)], alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Seq2Seq against torch.nn.Transformer


def copy_into_torch_transformer(ours: Seq2Seq, ref: nn.Transformer) -> None:
    def attn(dst: nn.MultiheadAttention, src):
        dst.in_proj_weight.copy_(torch.cat([src.q_proj.weight, src.k_proj.weight, src.v_proj.weight]))
        dst.in_proj_bias.copy_(torch.cat([src.q_proj.bias, src.k_proj.bias, src.v_proj.bias]))
        dst.out_proj.weight.copy_(src.o_proj.weight)
        dst.out_proj.bias.copy_(src.o_proj.bias)

    def linear_or_norm(dst, src):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)

    with torch.no_grad():
        for mine, theirs in zip(ours.encoder, ref.encoder.layers):
            attn(theirs.self_attn, mine.self_attn)
            linear_or_norm(theirs.linear1, mine.ffn.up)
            linear_or_norm(theirs.linear2, mine.ffn.down)
            linear_or_norm(theirs.norm1, mine.attn_res.norm)
            linear_or_norm(theirs.norm2, mine.ffn_res.norm)
        for mine, theirs in zip(ours.decoder, ref.decoder.layers):
            attn(theirs.self_attn, mine.self_attn)
            attn(theirs.multihead_attn, mine.cross_attn)
            linear_or_norm(theirs.linear1, mine.ffn.up)
            linear_or_norm(theirs.linear2, mine.ffn.down)
            linear_or_norm(theirs.norm1, mine.attn_res.norm)
            linear_or_norm(theirs.norm2, mine.cross_res.norm)
            linear_or_norm(theirs.norm3, mine.ffn_res.norm)
        if ours.encoder_norm is not None:
            linear_or_norm(ref.encoder.norm, ours.encoder_norm)
            linear_or_norm(ref.decoder.norm, ours.decoder_norm)
        else:  # nn.Transformer always ends each stack with a LayerNorm; the post-LN paper model does not
            ref.encoder.norm = nn.Identity()
            ref.decoder.norm = nn.Identity()


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_post_ln_seq2seq_equals_torch_transformer(mode, final_norm):
    ours = tiny_seq2seq(norm_position="post", final_norm=final_norm, n_head=4)
    with torch.no_grad():  # fresh norms are all alike (scale 1, shift 0); make each one distinct
        for name, p in ours.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    c = ours.config
    ref = nn.Transformer(d_model=c.d_model, nhead=c.n_head, num_encoder_layers=c.n_encoder_layers,
                         num_decoder_layers=c.n_decoder_layers, dim_feedforward=c.ff_dim, dropout=0.0,
                         activation="relu", batch_first=True, norm_first=False)
    copy_into_torch_transformer(ours, ref)
    ours.train(mode == "train")
    ref.train(mode == "train")

    src, tgt = ids(2, 10, 31), ids(2, 8, 29, seed=3)
    src_keep = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    tgt_keep = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    logits = ours(src, tgt, src_keep, tgt_keep)

    positions = ours.pos_emb
    src_x = ours.src_emb(src) + positions(torch.arange(10))
    tgt_x = ours.tgt_emb(tgt) + positions(torch.arange(8))
    hidden = ref(src_x, tgt_x, tgt_mask=torch.ones(8, 8, dtype=torch.bool).triu(1),
                 src_key_padding_mask=~src_keep, tgt_key_padding_mask=~tgt_keep,
                 memory_key_padding_mask=~src_keep, tgt_is_causal=True)
    expected = ours.lm_head(hidden)
    # Compare real target positions (torch's eval fast path may zero padded ones).
    torch.testing.assert_close(logits[tgt_keep], expected[tgt_keep], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Learning


def test_gpt_loss_at_initialisation_is_close_to_log_vocab():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    x = ids(8, 64, 65)
    with torch.no_grad():
        loss = F.cross_entropy(model(x).flatten(0, 1), ids(8, 64, 65, seed=9).flatten())
    assert loss.item() == pytest.approx(math.log(65), abs=0.1)


def test_tiny_gpt_overfits_one_batch():
    model = tiny_gpt().train()
    x = ids(4, 16, 37)
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_tiny_seq2seq_overfits_one_batch():
    model = tiny_seq2seq().train()
    src = ids(4, 8, 31)
    tgt = ids(4, 9, 29, seed=5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(src, tgt[:, :-1]).flatten(0, 1), tgt[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_classification_head_reads_last_real_token():
    model = tiny_gpt(n_classes=3)
    x = ids(2, 10, 37)
    lengths = torch.tensor([10, 6])
    with torch.no_grad():
        out = model.classify(x, lengths)
        assert out.shape == (2, 3)
        torch.testing.assert_close(out[1], model.classify(x[1:, :6])[0], atol=1e-5, rtol=1e-5)


def test_segment_embedding_is_used():
    model = tiny_gpt(n_segments=2)
    x = ids(1, 8, 37)
    with torch.no_grad():
        a = model(x, segment_ids=torch.zeros_like(x))
        b = model(x, segment_ids=torch.ones_like(x))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="segment_ids"):
        model(x)


def test_weight_tying_shares_one_matrix():
    model = tiny_gpt()
    assert model.lm_head.weight is model.tok_emb.weight
    assert tiny_gpt(tie_weights=False).lm_head.weight is not tiny_gpt(tie_weights=False).tok_emb.weight


def test_gpt2_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, block_size=32, n_layer=8, n_head=4, n_embd=256))
    assert model.blocks[0].self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].ffn.down.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


# ---------------------------------------------------------------------------------------------
# Presets, configs and bad input


@pytest.mark.parametrize("name", [n for n in PRESETS if n not in ("gpt2", "transformer-base")])
def test_presets_build_and_run(name):
    cfg = PRESETS[name].model
    if isinstance(cfg, GPTConfig):
        model = GPT(dataclasses.replace(cfg, vocab_size=cfg.vocab_size or 65))
        assert model(ids(1, 8, 65)).shape == (1, 8, 65)
    else:
        model = Seq2Seq(dataclasses.replace(cfg, src_vocab_size=40, tgt_vocab_size=40))
        assert model(ids(1, 5, 40), ids(1, 4, 40)).shape == (1, 4, 40)


def test_walkthrough_preset_is_the_articles_example():
    cfg = PRESETS["walkthrough"].model
    assert (cfg.d_model, cfg.head_dim, cfg.n_encoder_layers, cfg.n_decoder_layers) == (6, 4, 1, 1)
    model = Seq2Seq(dataclasses.replace(cfg, src_vocab_size=12, tgt_vocab_size=12))
    assert model.encoder[0].self_attn.q_proj.weight.shape == (4, 6)  # W_Q is 6x4 as (out, in)


def test_gpt2_preset_has_124m_parameters():
    with torch.device("meta"):
        model = GPT(PRESETS["gpt2"].model)
    assert model.num_params() == pytest.approx(124_439_808, rel=1e-6)


def test_overrides_are_type_checked():
    cfg = PRESETS["shakespeare-char-cpu"].model
    new = apply_overrides(cfg, ["n_layer=6", "dropout=0.1", "bias=true", "d_ff=none", "position=rope"])
    assert (new.n_layer, new.dropout, new.bias, new.d_ff, new.position) == (6, 0.1, True, None, "rope")
    with pytest.raises(ValueError, match="unknown key 'n_layers'"):
        apply_overrides(cfg, ["n_layers=6"])
    with pytest.raises(ValueError, match="n_layer expects an integer"):
        apply_overrides(cfg, ["n_layer=six"])
    with pytest.raises(ValueError, match="norm must be one of"):
        apply_overrides(cfg, ["norm=batchnorm"])


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 5), "integer tensor"),
    (torch.zeros(5, dtype=torch.long), r"shape \(batch, time\)"),
    (torch.zeros(1, 25, dtype=torch.long), "exceeds block_size 24"),
    (torch.full((1, 3), 37), "outside the vocabulary of size 37"),
    (torch.full((1, 3), -1), "outside the vocabulary"),
])
def test_bad_ids_give_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_gpt()(bad)


def test_kv_cache_overflow_is_an_error():
    model = tiny_gpt()
    cache = model.new_cache()
    model(ids(1, 20, 37), cache=cache)
    with pytest.raises(ValueError, match="block_size 24"):
        model(ids(1, 5, 37), cache=cache)


def test_bad_config_values_are_rejected():
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="shared_vocab"):
        Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=11, shared_vocab=True)
