"""The walkthrough as data is true: every step recomputes from its inputs by its op, in NumPy float64,
for the articles' example, a model of every preset and every architecture the config allows."""

import dataclasses
import itertools
import json
import re

import numpy as np
import pytest
import torch

from glassformer import GPT, PRESETS, GPTConfig, Seq2Seq, Seq2SeqConfig
from glassformer.cli import main
from glassformer.data.tokenizers import CharTokenizer, WordTokenizer
from glassformer.explain.recompute import OPS, check
from glassformer.explain.walkthrough import gpt_walkthrough, seq2seq_walkthrough, walkthrough_data

# The ops the issue lists; a walkthrough adds its own (sinusoidal, argmax) for at most 10% of its steps.
LISTED_OPS = {"embedding", "add", "matmul", "linear", "transpose", "scale", "mask", "softmax", "layer_norm",
              "rms_norm", "mean", "std", "rms", "relu", "gelu", "gelu_tanh", "silu", "mul", "rope", "concat", "slice"}
VARIANTS = list(itertools.product(("layernorm", "rmsnorm"), ("sinusoidal", "learned", "rope"),
                                  ("relu", "gelu", "gelu_tanh", "swiglu"), ("pre", "post"), (1, 3)))


def as_json(walkthrough, max_values: int = 0) -> dict:
    """The data as a reader of the JSON file gets it (strict JSON: no Infinity literals)."""
    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")
    return json.loads(json.dumps(walkthrough_data(walkthrough, max_values), allow_nan=False),
                      parse_constant=refuse)


@pytest.fixture(scope="module")
def chars():
    return CharTokenizer.train("the quick brown fox jumps over the lazy dog, ROMEO.")


@pytest.fixture(scope="module")
def words():
    return WordTokenizer.train("ich bin hier und du bist da\ni am here and you are there")


def gpt_variant(i: int, norm, position, activation, norm_position, heads, vocab: int) -> GPT:
    """A random GPT of one architecture; bias, tied head, segments and head width vary with i as well."""
    torch.manual_seed(i)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=heads, n_embd=12, d_ff=20,
                         d_head=4 if i % 4 == 1 else None, norm=norm, position=position, activation=activation,
                         norm_position=norm_position, bias=i % 2 == 0, tie_weights=i % 3 != 0,
                         n_segments=2 if i % 5 == 0 else 0)).eval()


def seq2seq_variant(i: int, norm, position, activation, norm_position, heads, tok) -> Seq2Seq:
    torch.manual_seed(i)
    v = tok.vocab_size
    return Seq2Seq(Seq2SeqConfig(
        src_vocab_size=v, tgt_vocab_size=v, block_size=8, n_encoder_layers=1, n_decoder_layers=2, n_head=heads,
        d_model=12, d_ff=20, norm=norm, position=position, activation=activation, norm_position=norm_position,
        bias=i % 2 == 0, tie_output=i % 3 != 0, shared_vocab=i % 4 == 0, scale_embeddings=i % 2 == 1,
        final_norm=None if i % 5 else norm_position == "post", dropout=0.0, pad_id=tok.pad_id, bos_id=tok.bos_id,
        eos_id=tok.eos_id)).eval()


def test_every_gpt_architecture_recomputes_and_its_logits_are_the_models(chars):
    failures = {}
    ids = chars.encode("the lazy dog")
    for i, variant in enumerate(VARIANTS):
        model = gpt_variant(i, *variant, chars.vocab_size)
        w = gpt_walkthrough(model, chars, "the lazy dog")
        problems = check(as_json(w))
        if problems:
            failures[variant] = problems[:3]
        segments = torch.zeros(1, len(ids), dtype=torch.long) if model.seg_emb is not None else None
        with torch.no_grad():
            logits = model(torch.tensor([ids]), segment_ids=segments)[0].numpy()
        assert np.array_equal(w.step("logits").values, logits), variant
    assert not failures, failures


def test_every_seq2seq_architecture_recomputes(words):
    failures = {}
    for i, variant in enumerate(VARIANTS):
        w = seq2seq_walkthrough(seq2seq_variant(i, *variant, words), words, words, "ich bin hier")
        problems = check(as_json(w))
        if problems:
            failures[variant] = problems[:3]
    assert not failures, failures


def shrunk(config):
    """A preset's architecture (every option as the preset sets it) at a size that builds in a moment."""
    small = dict(block_size=16, d_ff=24 if config.d_ff else None)
    if config.d_head:
        small["d_head"] = 4
    if isinstance(config, GPTConfig):
        return dataclasses.replace(config, n_layer=min(config.n_layer, 2), n_embd=2 * config.n_head, **small)
    return dataclasses.replace(config, n_encoder_layers=min(config.n_encoder_layers, 2),
                               n_decoder_layers=min(config.n_decoder_layers, 2), d_model=2 * config.n_head,
                               dropout=0.0, **small)


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_model_of_every_preset_recomputes(name, chars, words):
    config = shrunk(PRESETS[name].model)
    torch.manual_seed(0)
    if isinstance(config, GPTConfig):
        model = GPT(dataclasses.replace(config, vocab_size=chars.vocab_size, dropout=0.0)).eval()
        w = gpt_walkthrough(model, chars, "ROMEO.")
    else:
        v = words.vocab_size
        model = Seq2Seq(dataclasses.replace(config, src_vocab_size=v, tgt_vocab_size=v, pad_id=words.pad_id,
                                            bos_id=words.bos_id, eos_id=words.eos_id)).eval()
        w = seq2seq_walkthrough(model, words, words, "du bist da")
    data = as_json(w)
    assert check(data) == []
    non_leaf = [s["op"] for s in data["steps"] if s["op"] not in ("ids", "weight", "input", "constant", "table")]
    assert sum(op in LISTED_OPS for op in non_leaf) >= 0.9 * len(non_leaf)


def test_articles_walkthrough_recomputes_from_the_cli_json(tmp_path, capsys):
    for heads in ("1", "2"):
        path = tmp_path / f"w{heads}.json"
        assert main(["explain", "--heads", heads, "--json", str(path), "--max-values", "0"]) == 0
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["schema"] == "glassformer.walkthrough/1" and data["output"] == "you win or you die"
        assert check(data) == []
        masked = next(s for s in data["steps"] if s["id"] == "dec.0.self.h0.masked")
        assert masked["values"][0][1] is None and masked["stats"]["neg_inf"] > 0  # −∞ written as null
    assert "wrote" in capsys.readouterr().err


def test_check_catches_a_wrong_number_a_wrong_op_and_a_wrong_parameter(chars):
    model = gpt_variant(1, "rmsnorm", "rope", "swiglu", "pre", 2, chars.vocab_size)
    data = as_json(gpt_walkthrough(model, chars, "the fox"))
    assert check(data) == []
    steps = {s["id"]: s for s in data["steps"]}

    def broken(change) -> list[str]:
        copy = json.loads(json.dumps(data))
        change({s["id"]: s for s in copy["steps"]})
        return check(copy)

    def nudge(s):
        s["dec.0.ffn.down.weight"]["values"][0][0] += 0.5
    assert any(p.startswith("dec.0.ffn.down:") for p in broken(nudge))

    def relu_instead(s):
        s["dec.0.ffn.act"]["op"] = "relu"
    assert any(p.startswith("dec.0.ffn.act:") for p in broken(relu_instead))

    def other_theta(s):
        s["dec.1.self.h1.q_rot"]["params"]["theta"] = 500.0
    assert any(p.startswith("dec.1.self.h1.q_rot:") for p in broken(other_theta))

    def interleaved(s):
        s["dec.0.self.h0.k_rot"]["params"]["pairing"] = "interleaved"
    assert any(p.startswith("dec.0.self.h0.k_rot:") for p in broken(interleaved))
    assert "dec.0.ffn.gate" in steps


def test_each_architecture_shows_what_it_computes(chars):
    def walk(**kw):
        torch.manual_seed(0)
        cfg = dict(vocab_size=chars.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8, d_ff=12)
        return gpt_walkthrough(GPT(GPTConfig(**{**cfg, **kw})).eval(), chars, "the fox")

    modern = walk(norm="rmsnorm", activation="swiglu", position="rope", bias=False)
    ops = {s.id: s.op for s in modern.steps}
    assert ops["dec.0.self.norm.rms"] == "rms" and ops["dec.0.self.norm"] == "rms_norm"
    assert "dec.0.self.norm.mean" not in ops and "embed.positions" not in ops and "embed.sum" not in ops
    assert modern.step("dec.0.ffn.act").inputs == ["dec.0.ffn.gate"] and ops["dec.0.ffn.act"] == "silu"
    assert modern.step("dec.0.ffn.hidden").inputs == ["dec.0.ffn.act", "dec.0.ffn.up"]
    assert modern.step("dec.0.self.h1.kT").inputs == ["dec.0.self.h1.k_rot"]
    from glassformer.explain.narration import narrate
    text = " ".join(" ".join(narrate(s, "en")) for s in modern.steps)
    assert "LayerNorm" not in text and "ReLU" not in text and "μ" not in text and not re.search(r"\bPE\b", text)

    gpt2 = walk()  # pre-LN LayerNorm, GELU-tanh, learned positions, tied head
    assert gpt2.step("dec.0.ffn.act").op == "gelu_tanh" and "tanh" in narrate(gpt2.step("dec.0.ffn.act"), "en")[2]
    assert gpt2.step("embed.sum").inputs == ["embed.tokens", "embed.positions"]
    assert gpt2.step("logits").inputs == ["dec.final.norm", "embed.table"]  # the tied head reads the embedding
    order = [s.id for s in gpt2.steps]
    assert order.index("dec.0.self.norm") < order.index("dec.0.self.h0.q") < order.index("dec.0.self.residual")

    post = walk(norm_position="post", position="sinusoidal", activation="relu", tie_weights=False)
    order = [s.id for s in post.steps]
    assert order.index("dec.0.self.residual") < order.index("dec.0.self.norm")  # Add & Norm
    assert post.step("dec.0.self.norm").inputs[0] == "dec.0.self.residual"
    assert "dec.final.norm" not in order and post.step("logits").inputs == ["dec.0.ffn.norm", "head.weight"]

    segments = walk(n_segments=3)
    assert segments.step("embed.sum").inputs == ["embed.tokens", "embed.positions", "embed.segments"]


def test_large_steps_are_a_corner_with_statistics_and_are_not_silently_checked(chars):
    model = gpt_variant(0, "layernorm", "learned", "gelu", "pre", 1, chars.vocab_size)
    data = as_json(gpt_walkthrough(model, chars, "the lazy dog"), max_values=100)
    table = next(s for s in data["steps"] if s["id"] == "embed.table")
    assert table["truncated"] and "values" not in table and len(table["corner"]) == 8
    full = model.tok_emb.weight.detach().double().numpy()
    assert table["stats"]["mean"] == pytest.approx(full.mean(), rel=1e-6)
    assert table["stats"]["max"] == pytest.approx(full.max(), rel=1e-6)
    problems = check(data)
    assert any(p.startswith("embed.tokens: not recomputable") for p in problems)


def test_ids_are_unique_and_inputs_come_first(chars, words):
    model = gpt_variant(3, "layernorm", "rope", "relu", "post", 3, chars.vocab_size)
    for w in (gpt_walkthrough(model, chars, "fox"),
              seq2seq_walkthrough(seq2seq_variant(0, *VARIANTS[0], words), words, words, "ich")):
        seen = set()
        for s in w.steps:
            assert s.id not in seen and set(s.inputs) <= seen and (s.op in OPS or s.is_leaf), s.id
            seen.add(s.id)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])  # one K/V head per query head, pairs, multi-query
def test_grouped_query_attention_q_k_norms_and_llama3_rope_recompute(chars, n_kv_head):
    torch.manual_seed(n_kv_head)
    model = GPT(GPTConfig(vocab_size=chars.vocab_size, block_size=16, n_layer=2, n_head=4, n_kv_head=n_kv_head,
                          n_embd=16, norm="rmsnorm", position="rope", activation="swiglu", bias=False, qkv_bias=True,
                          qk_norm=True, rope_scaling="llama3", rope_original_max_len=8, rope_factor=4.0,
                          rope_theta=500.0, tie_weights=False)).eval()
    with torch.no_grad():  # norms' gains and biases away from 1 and 0, so that a step left out shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    w = gpt_walkthrough(model, chars, "the lazy dog")
    assert check(as_json(w)) == []
    group = 4 // n_kv_head
    for h in range(4):
        kv = f"dec.0.self.h{h}" if group == 1 else f"dec.0.self.kv{h // group}"
        assert w.step(f"dec.0.self.h{h}.scores").inputs == [f"dec.0.self.h{h}.q_rot", f"{kv}.kT"]
        assert w.step(f"dec.0.self.h{h}.out").inputs[1] == f"{kv}.v"
        assert w.step(f"dec.0.self.h{h}.q_rot").inputs == [f"dec.0.self.h{h}.q_norm"]
    assert w.step("dec.0.self.h0.q_rot").params["scaling"]["type"] == "llama3"
    from glassformer.explain.narration import narrate

    # The per-head norm's γ has one scale per head channel (4 here), not one per d_model channel (16).
    gamma = w.step(w.step("dec.0.self.h0.q_norm").inputs[1])
    assert gamma.values.shape == (model.config.n_embd // 4,)
    assert "head_dim" in narrate(gamma, "en")[1] and "head_dim" in narrate(gamma, "zh")[1]
    if group > 1:

        title = narrate(w.step("dec.0.self.kv0.k"), "en")[0]
        assert f"K/V head 1, shared by query heads 1–{group}" in title


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_speedrun_options_recompute(position, norm_position, chars):
    """relu2, the norm after the embeddings, the pair embedding and zero_init (here perturbed, so that
    nothing is 0) are walked through like the other options, with segments and a learned table as extra
    embedding terms."""
    torch.manual_seed(7)
    model = GPT(GPTConfig(vocab_size=chars.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=12, d_ff=20,
                          norm="rmsnorm" if position == "rope" else "layernorm", position=position,
                          norm_position=norm_position, activation="relu2", embed_norm=True, zero_init=True,
                          tie_weights=False, n_segments=2 if position == "learned" else 0, bigram=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    w = gpt_walkthrough(model, chars, "the lazy dog")
    data = as_json(w)
    assert check(data) == []
    ops = {s["id"]: s["op"] for s in data["steps"]}
    assert ops["embed.norm"] in ("rms_norm", "layer_norm") and ops["dec.0.ffn.act"] == "relu2"
    assert ops["embed.pairs.ids"] == "bigram_ids" and ops["embed.pairs"] == "embedding"
    assert w.step("embed.pairs.ids").cols[:3] == ["∅t", "th", "he"]  # characters' pairs read as they are written
    from glassformer.explain.narration import narrate
    for step in w.steps:  # every step titled and explained in both languages
        en, zh = narrate(step, "en", True), narrate(step, "zh", True)
        assert en[0] and zh[0] and en[0] != zh[0] and any("\u4e00" <= ch <= "\u9fff" for ch in zh[0] + zh[1]), step.id
    assert "max(0, x)²" in narrate(w.step("dec.0.ffn.act"), "en")[2]
    ids = chars.encode("the lazy dog")
    segments = torch.zeros(1, len(ids), dtype=torch.long) if model.seg_emb is not None else None
    with torch.no_grad():
        logits = model(torch.tensor([ids]), segment_ids=segments)[0].numpy()
    assert np.array_equal(w.step("logits").values, logits)


def test_word_pairs_are_labelled_apart(words):
    model = GPT(GPTConfig(vocab_size=words.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8, d_ff=8,
                          bigram=True)).eval()
    w = gpt_walkthrough(model, words, "ich bin hier")
    assert check(as_json(w)) == []
    assert w.step("embed.pairs.ids").cols == ["∅|ich", "ich|bin", "bin|hier"]  # not "ichbin"
