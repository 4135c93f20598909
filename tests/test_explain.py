"""The recorder and the walkthrough: tracing changes nothing, and every step the articles show is there."""

import dataclasses

import pytest
import torch
from rich.console import Console

from glassformer import GPT, PRESETS, GPTConfig, Seq2Seq
from glassformer.cli import main
from glassformer.explain.narration import NARRATION, narrate
from glassformer.explain.terminal import print_walkthrough
from glassformer.explain.walkthrough import CORPUS, builtin_walkthrough, gpt_walkthrough
from glassformer.layers import merge_heads
from glassformer.tokenizers import CharTokenizer
from glassformer.trace import Trace


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
    torch.testing.assert_close(t["blocks.0.attn_res.norm.in"], t["blocks.0.in"] + t[f"{attn}.o_proj"])
    assert torch.equal(t["blocks.0.ffn.act"], torch.nn.functional.gelu(t["blocks.0.ffn.up"], approximate="tanh"))


@pytest.fixture(scope="module")
def walkthrough():
    return builtin_walkthrough()


def test_builtin_walkthrough_answers_and_shows_every_step(walkthrough):
    assert walkthrough.source == CORPUS[0] and walkthrough.output == "you win or you die"
    kinds = {s.kind for s in walkthrough.steps}
    assert {"corpus", "vocab", "tokens", "embedding", "positional", "emb_sum", "weights_q", "weights_k",
            "weights_v", "q", "k", "v", "scores", "scaled", "mask", "probs", "head_out", "attn_out", "residual",
            "ln_stats", "ln_out",
            "ffn_hidden", "ffn_act", "ffn_out", "memory", "cross_q", "cross_kv", "logits", "softmax_out",
            "prediction", "decode"} <= kinds
    decode = walkthrough.steps[-1]
    assert [row[2] for row in decode.table] == ["you", "win", "or", "you", "die", "<end>"]
    first_q = next(s for s in walkthrough.steps if s.kind == "weights_q")
    assert first_q.matrix.shape == (6, 4)  # d_model 6 -> Q/K/V width 4
    mask = next(s for s in walkthrough.steps if s.kind == "mask")
    assert (mask.matrix[0, 1:] == float("-inf")).all() and (mask.matrix[-1] == 0).all()


def test_walkthrough_is_deterministic_and_has_two_heads_on_request(walkthrough):
    again = builtin_walkthrough()
    for a, b in zip(walkthrough.steps, again.steps):
        assert a.kind == b.kind and (a.matrix is None or (a.matrix == b.matrix).all())
    two = builtin_walkthrough(heads=2)
    heads = {s.head for s in two.steps if s.kind == "probs" and s.section == "encoder"}
    assert heads == {0, 1} and any(s.kind == "concat" for s in two.steps)


def test_every_step_is_narrated_in_both_languages(walkthrough):
    for kind in NARRATION:
        en, zh = narrate(kind, "en", 0, 0), narrate(kind, "zh", 0, 0)
        assert en[0] and zh[0] and en[0] != zh[0]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh[0] + zh[1])
    console = Console(record=True, width=120)
    print_walkthrough(walkthrough, lang="zh", console=console)
    text = console.export_text()
    for step in walkthrough.steps:
        assert narrate(step.kind, "zh", step.layer, step.head)[0] in text
    with pytest.raises(ValueError, match="unknown language"):
        narrate("q", "fr")


def test_large_matrices_show_a_corner_and_statistics(tiny_gpt):
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz ")
    model = tiny_gpt(vocab_size=tok.vocab_size, n_layer=1)  # width 32: more columns than the corner shows
    w = gpt_walkthrough(model, tok, "hello world")
    console = Console(record=True, width=150)
    print_walkthrough(w, console=console)
    text = console.export_text()
    assert "top-left corner" in text and "mean" in text
    assert w.steps[-1].kind == "prediction"


def test_cli_explain_runs_and_rejects_bad_options(capsys, tmp_path):
    assert main(["explain", "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "位置编码" in out and "you win or you die" in out
    assert main(["explain", "--text", "hi"]) == 2
    assert "--text needs --model" in capsys.readouterr().err
    assert main(["explain", "--lang", "fr"]) == 1
    assert "unknown language" in capsys.readouterr().err


def test_cli_explain_a_trained_checkpoint(tmp_path, capsys):
    import glassformer

    tok = CharTokenizer.train("hello world")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    glassformer.save(model, tmp_path / "m", tokenizer=tok)
    assert main(["explain", "--model", str(tmp_path / "m"), "--text", "hello"]) == 0
    out = capsys.readouterr().out
    assert "Predicted word" in out and "attention weights" in out
