"""Generation explained token by token: the same tokens as `generate`, and every number shown
(logits, each stage's probabilities, attention rows, the cache, cross-attention, the beam tree)
equal to an independent recomputation without the cache."""

import json

import numpy as np
import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.cli import main
from glassformer.data.tokenizers import CharTokenizer
from glassformer.explain.generation import gpt_generation, seq2seq_generation
from glassformer.explain.walkthrough import CORPUS, seq2seq_walkthrough, train_walkthrough_model
from glassformer.generation.decode import beam_search, gnmt_penalty, greedy
from glassformer.generation.sampling import generate
from glassformer.observe.trace import Trace

TEXT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def gpt():
    tok = CharTokenizer.train(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=12, n_layer=2, n_head=2, n_embd=16,
                          norm="rmsnorm", position="rope", activation="swiglu")).eval()
    with torch.no_grad():  # sharper logits than the initialisation's, so the filters have something to cut
        model.lm_head.weight.mul_(20)
    return model, tok


@pytest.fixture(scope="module")
def articles():
    return train_walkthrough_model()


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def reference_stages(logits: np.ndarray, temperature, top_k, top_p):
    """The choice recomputed in NumPy float64: temperature, top-k (ties to the lower id), top-p (the
    smallest most likely set reaching p), each renormalised."""
    scaled = logits / temperature
    keep = np.zeros(len(logits), bool)
    keep[np.argsort(-scaled, kind="stable")[:top_k or len(logits)]] = True
    after_k = np.where(keep, scaled, -np.inf)
    p = softmax(after_k)
    order = np.argsort(-after_k, kind="stable")
    mass_before = np.cumsum(p[order]) - p[order]
    keep_p = np.zeros(len(logits), bool)
    keep_p[order[mass_before < (top_p or 2.0)]] = True
    return softmax(scaled), softmax(after_k), softmax(np.where(keep_p & keep, after_k, -np.inf))


@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=0.7, top_k=5, top_p=0.8, seed=3),
                                      dict(temperature=1.5, top_p=0.5, seed=1)])
def test_gpt_generation_is_generate_and_every_number_recomputes_without_the_cache(gpt, settings):
    model, tok = gpt
    n = 16  # 5 prompt tokens + 16 > block_size 12: the window slides and the cache is dropped
    g = gpt_generation(model, tok, "the q", n, **settings)
    ids = generate(model, tok.encode("the q"), n, **settings)[0]
    assert [s["picked"]["id"] for s in g.steps] == ids[5:]
    assert g.output_text == tok.decode(ids[5:])
    t, k, p = settings.get("temperature"), settings.get("top_k"), settings.get("top_p")
    for i, step in enumerate(g.steps):
        context = ids[: 5 + i][-12:]
        assert step["context"] == [tok.token(j).replace(" ", "␣") for j in context]
        with torch.no_grad(), Trace(model) as trace:
            logits = model(torch.tensor([context]))[0, -1].double().numpy()
        cached = [c["logit"] for c in step["candidates"]]
        assert np.allclose(cached, logits[[c["id"] for c in step["candidates"]]], atol=1e-4)
        assert [c["id"] for c in step["candidates"]] == list(np.argsort(-logits, kind="stable")[:8]) or \
            np.allclose(sorted(cached, reverse=True), cached)  # order by logit (near-ties may swap)
        for layer in range(2):
            full = trace[f"blocks.{layer}.self_attn.core.probs"][0, :, -1].numpy()  # (h, T) the last query's row
            assert np.allclose(step["attention"][layer], full, atol=1e-4)
        length = 5 + i
        assert step["cache"] == (None if length > 12 else {"layers": 2, "k_shape": [1, 2, length, 8]})
        if t == 0:
            assert step["greedy"] and step["picked"]["id"] == int(np.argmax(logits))
            continue
        after_t, after_k, final = reference_stages(logits, t, k, p)
        for c in step["candidates"]:
            assert c["temperature"] == pytest.approx(after_t[c["id"]], abs=1e-5)
            assert c["top_k"] == pytest.approx(after_k[c["id"]], abs=1e-5)
            assert c["top_p"] == pytest.approx(final[c["id"]], abs=1e-5)
        assert step["kept"]["top_p"] == int((final > 0).sum())
        assert step["picked"]["p"] == pytest.approx(final[step["picked"]["id"]], abs=1e-5) and final[
            step["picked"]["id"]] > 0


def test_seq2seq_greedy_shows_the_cross_attention_of_the_teacher_forced_pass(articles):
    model, tok = articles
    g = seq2seq_generation(model, tok, tok, CORPUS[0])
    w = seq2seq_walkthrough(model, tok, tok, CORPUS[0])
    src = torch.tensor([tok.encode(CORPUS[0]) + [tok.eos_id]])
    assert [s["picked"]["id"] for s in g.steps] == greedy(model, src)[0] + [tok.eos_id]
    assert g.output_text == "you win or you die" == w.output
    alignment = w.step("dec.0.cross.h0.probs").values  # (T, S) from the walkthrough's full pass
    for t, step in enumerate(g.steps):
        assert np.allclose(step["cross_attention"][0][0], alignment[t], atol=1e-4)
        assert step["picked"]["p"] == max(c["p"] for c in step["candidates"])


def test_beam_tree_follows_the_search(articles):
    model, tok = articles
    src = torch.tensor([tok.encode(CORPUS[0]) + [tok.eos_id]])
    for beam in (2, 3):
        g = seq2seq_generation(model, tok, tok, CORPUS[0], beam=beam)
        assert g.output == [tok.token(i) for i in beam_search(model, src, beam=beam)[0]]  # (no special token)
        finished = 0
        for step in g.steps:
            cands = step["candidates"]
            assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
            assert all(c["status"] == "pruned" for c in cands[beam:])
            live = [c for c in cands if c["status"] == "kept"]
            ends = [c for c in cands if c["status"] == "finished"]
            assert len(live) + len(ends) <= beam - finished  # the places the finished ones have not taken
            finished += len(ends)
            for c in cands:
                assert len(c["tokens"]) == step["step"]
                assert c["normalised"] == pytest.approx(c["score"] / gnmt_penalty(step["step"], 0.6))
                assert (c["status"] == "finished") <= (c["tokens"][-1] == "<end>")  # the articles name <eos> <end>
        best = max((c for s in g.steps for c in s["candidates"] if c["status"] == "finished"),
                   key=lambda c: c["normalised"])
        assert best["tokens"][:-1] == g.output  # the answer is the best normalised finished hypothesis


def test_cli_generate_prints_and_writes_json(gpt, tmp_path, capsys):
    import glassformer

    model, tok = gpt
    glassformer.save(model, tmp_path / "m", tokenizer=tok)
    assert main(["explain", "--model", str(tmp_path / "m"), "--text", "the", "--generate", "3", "--top-k", "4",
                 "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "KV cache: 2 layers, K and V each (1, 2, 3, 8)" in out and "top-k 4 keeps 4" in out and "picked" in out
    path = tmp_path / "g.json"
    assert main(["explain", "--model", str(tmp_path / "m"), "--text", "the", "--generate", "3", "--json",
                 str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["generation"]["kind"] == "sample" and len(data["generation"]["steps"]) == 3
    assert data["steps"][0]["id"] == "ids"  # the walkthrough of the prompt comes with it
    for bad, message in ((["--top-p", "1.5"], "--top-p must be in (0, 1]"), (["--generate", "0"], "--generate"),
                         (["--beam", "2"], "--beam applies to a translation")):
        argv = ["explain", "--model", str(tmp_path / "m"), "--text", "the", *bad]
        if "--generate" not in bad and "--beam" not in bad:
            argv += ["--generate", "2"]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert main(["explain", "--top-k", "3"]) == 2
    assert "add --generate N" in capsys.readouterr().err
    assert main(["explain", "--beam", "2", "--lang", "zh"]) == 0
    assert "剪枝" in capsys.readouterr().out
