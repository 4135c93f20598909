"""The recorder and the walkthrough: tracing changes nothing, and every step the articles show is there."""

import dataclasses

import numpy as np
import pytest
import torch
from rich.console import Console

from glassformer import GPT, PRESETS, GPTConfig, Seq2Seq
from glassformer.cli import main
from glassformer.data.tokenizers import CharTokenizer
from glassformer.explain.narration import NARRATION, narrate
from glassformer.explain.render.terminal import print_walkthrough
from glassformer.explain.walkthrough import CORPUS, builtin_walkthrough, gpt_walkthrough
from glassformer.model.layers import merge_heads
from glassformer.observe.trace import Trace


@pytest.mark.parametrize("kw", [dict(), dict(position="rope", norm="rmsnorm", activation="swiglu", dropout=0.2),
                                dict(norm_position="post", position="sinusoidal")])
def test_tracing_leaves_gpt_logits_bit_identical(kw, tiny_gpt, ids):
    model = tiny_gpt(**kw)
    x = ids(2, 12)
    plain = model(x)
    with Trace(model) as trace:
        traced = model(x)
    assert torch.equal(plain, traced)
    assert torch.equal(model(x), plain) and not model.blocks[0].self_attn.core._forward_hooks  # hooks removed
    assert len(trace.names()) > 40


def test_tracing_leaves_seq2seq_logits_bit_identical():
    cfg = dataclasses.replace(PRESETS["walkthrough"].model, src_vocab_size=12, tgt_vocab_size=12, n_head=2)
    torch.manual_seed(0)
    model = Seq2Seq(cfg).eval()
    src, tgt = torch.tensor([[3, 4, 5, 6]]), torch.tensor([[1, 7, 8]])
    plain = model(src, tgt)
    with Trace(model):
        assert torch.equal(model(src, tgt), plain)


def test_recorded_intermediates_fit_together(tiny_gpt, ids):
    model = tiny_gpt(norm_position="post")
    h, d = model.config.n_head, model.config.head_dim
    x = ids(1, 10, seed=2)
    with Trace(model) as t:
        model(x)
    attn = "blocks.0.self_attn"
    q = t[f"{attn}.q_proj"].view(1, 10, h, d).transpose(1, 2)  # (B, T, h*d) -> (B, h, T, d)
    assert torch.equal(t[f"{attn}.core.q"], q)
    torch.testing.assert_close(t[f"{attn}.core.probs"].sum(-1), torch.ones(1, h, 10))
    assert (t[f"{attn}.core.probs"].triu(1) == 0).all()  # causal
    torch.testing.assert_close(t[f"{attn}.core.scaled"], t[f"{attn}.core.scores"] / d ** 0.5)
    torch.testing.assert_close(t[f"{attn}.o_proj.in"], merge_heads(t[f"{attn}.core.out"]))
    # Post-LN "Add & Norm": the norm receives the block input plus the attention output.
    torch.testing.assert_close(t["blocks.0.attn_norm.in"], t["blocks.0.in"] + t[f"{attn}.o_proj"])
    assert torch.equal(t["blocks.0.ffn.act"], torch.nn.functional.gelu(t["blocks.0.ffn.up"], approximate="tanh"))


@pytest.fixture(scope="module")
def walkthrough():
    return builtin_walkthrough()


def test_builtin_walkthrough_answers_and_shows_every_step(walkthrough):
    assert walkthrough.source == CORPUS[0] and walkthrough.output == "you win or you die"
    kinds = {s.kind for s in walkthrough.steps}
    assert {"corpus", "vocab", "tokens", "embedding", "positions_sinusoidal", "embedding_sum", "weight_q",
            "weight_k", "weight_v", "q", "k", "v", "k_transposed", "scores", "scaled", "causal_mask", "masked",
            "probs", "head_out", "attn_out", "residual_post", "stats_mean", "stats_std", "layer_norm", "ffn_up",
            "act_relu", "ffn_down", "logits", "next_probs", "prediction", "decode"} <= kinds
    assert not kinds & {"stats_rms", "rms_norm", "rope_q", "act_silu", "residual_pre"}  # not this architecture
    decode = walkthrough.steps[-1]
    assert [row[2] for row in decode.table] == ["you", "win", "or", "you", "die", "<end>"]
    assert walkthrough.step("enc.0.self.h0.q.weight").values.shape == (4, 6)  # (out, in): d_model 6 -> width 4
    mask = walkthrough.step("dec.mask").values
    assert mask.dtype == bool and not mask[0, 1:].any() and mask[-1].all()
    masked = walkthrough.step("dec.0.self.h0.masked").values
    assert (masked[0, 1:] == float("-inf")).all() and np.isfinite(masked[-1]).all()
    cross = walkthrough.step("dec.0.cross.h0.k")
    assert cross.inputs[0] == "enc.0.ffn.norm"  # keys from the encoder's output (post-LN: its last norm)


def test_walkthrough_is_deterministic_and_has_two_heads_on_request(walkthrough):
    again = builtin_walkthrough()
    assert [a.id for a in walkthrough.steps] == [b.id for b in again.steps]
    for a, b in zip(walkthrough.steps, again.steps):
        assert a.values is None and b.values is None or np.array_equal(a.values, b.values)
    two = builtin_walkthrough(heads=2)
    heads = {s.head for s in two.steps if s.kind == "probs" and s.section == "encoder"}
    assert heads == {0, 1}
    concat = two.step("enc.0.self.concat")
    assert concat.inputs == ["enc.0.self.h0.out", "enc.0.self.h1.out"]


def test_every_step_is_narrated_in_both_languages(walkthrough):
    for step in walkthrough.steps:
        en, zh = narrate(step, "en", True), narrate(step, "zh", True)
        assert en[0] and zh[0] and en[0] != zh[0]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh[0] + zh[1]), step.id
    assert set(NARRATION) >= {s.kind for s in walkthrough.steps}
    console = Console(record=True, width=120)
    print_walkthrough(walkthrough, lang="zh", console=console)
    text = console.export_text()
    for step in walkthrough.steps:
        assert narrate(step, "zh", True)[0] in text
    with pytest.raises(ValueError, match="unknown language"):
        narrate(walkthrough.steps[0], "fr")


def test_large_matrices_show_a_corner_and_statistics(tiny_gpt):
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ")
    model = tiny_gpt(vocab_size=tok.vocab_size, n_layer=1)  # width 32: more columns than the corner shows
    w = gpt_walkthrough(model, tok, "hello world")
    console = Console(record=True, width=150)
    print_walkthrough(w, console=console)
    text = console.export_text()
    assert "top-left corner" in text and "mean" in text
    assert "Weight matrices are not printed" in text and "= weight()" not in text
    assert "dec.0.self.h0.q = linear(dec.0.self.norm, dec.0.self.h0.q.weight, dec.0.self.h0.q.bias)" in text
    assert w.steps[-1].kind == "prediction"


def test_cli_explain_runs_and_rejects_bad_options(capsys, tmp_path):
    assert main(["explain", "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "位置编码" in out and "you win or you die" in out
    assert main(["explain", "--text", "hi"]) == 2
    assert "--text needs --model" in capsys.readouterr().err
    assert main(["explain", "--lang", "fr"]) == 1
    assert "unknown language" in capsys.readouterr().err
    assert main(["explain", "--json", str(tmp_path / "w.json"), "--max-values", "-1"]) == 2
    assert "--max-values" in capsys.readouterr().err
    assert main(["explain", "nonsense"]) == 2
    assert "unknown chapter" in capsys.readouterr().err


def test_cli_explain_a_trained_checkpoint(tmp_path, capsys):
    import glassformer

    tok = CharTokenizer.train("hello world")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    glassformer.save(model, tmp_path / "m", tokenizer=tok)
    assert main(["explain", "--model", str(tmp_path / "m"), "--text", "hello"]) == 0
    out = capsys.readouterr().out
    assert "Predicted token" in out and "Attention weights" in out
