"""Models whose vocabulary is padded beyond their tokenizer's (Qwen2.5 pads 151,665 tokens to 151,936
rows, GPT-2 exports to a multiple of 64) never generate an id the tokenizer lacks: sampling at
several settings and seeds, greedy, beam search, the fast decode step and the recomputing path,
`glassformer sample` on a saved directory, explain's generation view and the explorer's API. The
models here are rigged so that a padded id would win every time (its logit near 100, the real ones
near 0), and the probabilities shown over the real ids are checked against a NumPy softmax."""

import numpy as np
import pytest
import torch
from conftest import build_tiny_gpt, build_tiny_seq2seq
from starlette.testclient import TestClient

import glassformer
from glassformer.cli import main
from glassformer.data.tokenizers import CharTokenizer, WordTokenizer
from glassformer.explain.generation import gpt_generation, seq2seq_generation, stages
from glassformer.explain.labels import token_labels
from glassformer.explain.walkthrough import Subject, load_subject
from glassformer.explore.api import Explorer
from glassformer.explore.server import make_app
from glassformer.fast import accelerate
from glassformer.generation.decode import beam_search, greedy
from glassformer.generation.sampling import generate, next_token, stream

CHARS = "abcdefghijklmnopqrstuvwxyz .,\n"  # 30 characters, plus <unk>: 31 tokens
PADDED = 64  # the model's vocabulary: 33 ids beyond the tokenizer's
WIN = 100.0  # what the rigged final norm adds to every padded id's logit
SETTINGS = [dict(temperature=1.0), dict(temperature=2.0), dict(temperature=0.7, top_k=5),
            dict(temperature=1.5, top_p=0.9), dict(temperature=1.0, top_k=40, top_p=0.95), dict(temperature=0.0)]


def rig(final_norm, lm_head, vocab_limit: int) -> None:
    """Makes every id from vocab_limit up the likeliest by far: the final norm's bias adds WIN on
    dimension 0, which only the padded rows of the output matrix read (the real rows' entry is 0).
    The normalised dimension 0 itself is at most sqrt(width) (< 6 here), so a padded logit is over
    90 and a real one, from the 0.02-scale initial weights, a few units at most."""
    with torch.no_grad():
        final_norm.bias.zero_()
        final_norm.bias[0] = WIN
        lm_head.weight[:vocab_limit, 0] = 0.0
        lm_head.weight[vocab_limit:] = 0.0
        lm_head.weight[vocab_limit:, 0] = 1.0


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(CHARS)


@pytest.fixture(scope="module")
def model(tok):
    """A tiny GPT over PADDED ids (untied, so the padded output rows are its own) rigged for them."""
    gpt = build_tiny_gpt(vocab_size=PADDED, tie_weights=False)
    rig(gpt.final_norm, gpt.lm_head, tok.vocab_size)
    return gpt


def prompt(tok, text="the cat"):
    return tok.encode(text)


def next_logits(model, ids: list[int]) -> torch.Tensor:
    """The model's logits (1, V) after `ids`, without autograd."""
    with torch.no_grad():
        return model.next_logits(torch.tensor([ids]))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_the_rig_makes_a_padded_id_win_without_the_limit(model, tok):
    """Without vocab_limit the padded ids are chosen: the tests below would fail if the limit did nothing."""
    logits = next_logits(model, prompt(tok))  # (1, V)
    assert logits.size(-1) == PADDED
    assert int(logits.argmax()) >= tok.vocab_size
    assert float(logits[0, tok.vocab_size:].min()) > float(logits[0, :tok.vocab_size].max()) + 50
    out = generate(model, prompt(tok), 8, temperature=1.0, seed=0)[0][len(prompt(tok)):]
    assert all(i >= tok.vocab_size for i in out)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("use_cache", [True, False], ids=["fast-step", "recompute"])
def test_stream_never_produces_an_id_beyond_the_tokenizer(model, tok, settings, use_cache):
    if use_cache:
        assert accelerate.decode_step(model, 2) is not None  # the cached path really goes through the fast step
    two_rows = torch.tensor([prompt(tok), prompt(tok, "a mat. ")])  # two rows of 7
    for seed in range(4):
        for ids in (two_rows, two_rows[:1]):  # one row: the C step kernel where it is built
            steps = list(stream(model, ids, 24, seed=seed, use_cache=use_cache, vocab_limit=tok.vocab_size,
                                **settings))  # past block_size 16: the window slides too
            produced = torch.stack(steps)
            assert produced.shape == (24, len(ids))
            assert int(produced.max()) < tok.vocab_size and int(produced.min()) >= 0


def test_generate_and_greedy_pick_the_best_real_id(model, tok):
    ids = prompt(tok)
    out = generate(model, ids, 1, temperature=0.0, vocab_limit=tok.vocab_size)[0][-1]
    logits = next_logits(model, ids)[0].numpy()
    assert out == int(np.argmax(logits[: tok.vocab_size]))  # the best of the real ids, not a padded one


def test_sampled_frequencies_follow_the_softmax_renormalised_over_the_real_ids(model, tok):
    """20,000 draws from one row of logits: each real id's frequency within 5 standard errors of
    its probability in a NumPy softmax over the real ids alone (the padded ones get none)."""
    logits = next_logits(model, prompt(tok))  # (1, V)
    expected = softmax(logits[0, : tok.vocab_size].double().numpy())
    n = 20_000
    drawn = next_token(logits.expand(n, -1), 1.0, generator=torch.Generator().manual_seed(0),
                       vocab_limit=tok.vocab_size)
    counts = np.bincount(drawn.numpy(), minlength=PADDED)
    assert counts[tok.vocab_size:].sum() == 0
    observed = counts[: tok.vocab_size] / n
    bound = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-4
    assert np.all(np.abs(observed - expected) <= bound), np.abs(observed - expected) - bound


def test_stages_show_the_renormalised_softmax(model, tok):
    logits = next_logits(model, prompt(tok))[0]
    labels = token_labels(tok, range(tok.vocab_size))
    data, probs = stages(logits, 1.0, None, None, labels, show=tok.vocab_size, vocab_limit=tok.vocab_size)
    expected = softmax(logits[: tok.vocab_size].double().numpy())
    assert data["kept"]["vocab"] == tok.vocab_size and probs.shape == (tok.vocab_size,)
    assert sorted(c["id"] for c in data["candidates"]) == list(range(tok.vocab_size))
    for c in data["candidates"]:
        assert c["softmax"] == pytest.approx(expected[c["id"]], abs=2e-6)


@pytest.mark.parametrize("value", [0, PADDED + 1, -3, 2.5, True])
def test_vocab_limit_out_of_range_is_refused(model, tok, value):
    with pytest.raises(ValueError, match="vocab_limit"):
        stream(model, prompt(tok), 3, vocab_limit=value)


def test_explain_generation_picks_real_ids(model, tok):
    for seed in range(3):
        for settings in SETTINGS:
            g = gpt_generation(model, tok, "the cat", 20, seed=seed, **settings)  # slides past block_size 16
            picked = [s["picked"]["id"] for s in g.steps]
            assert max(picked) < tok.vocab_size, settings
            assert all(c["id"] < tok.vocab_size for s in g.steps for c in s["candidates"])
            tok.decode(picked)  # every id decodes


def test_sample_command_on_a_saved_padded_model(model, tok, tmp_path, capsys):
    glassformer.save(model, tmp_path / "run", tokenizer=tok)
    for seed, extra in ((1, []), (2, ["--temperature", "0"]), (3, ["--top-p", "0.9", "--top-k", "50"])):
        status = main(["sample", "--model", str(tmp_path / "run"), "--prompt", "the cat", "--max-new-tokens", "30",
                       "--seed", str(seed), "--temperature", "1.0", *extra])
        out, err = capsys.readouterr()
        assert status == 0, err
        assert out.startswith("the cat") and len(out) >= len("the cat") + 30 - 1
        assert set(out) <= set(CHARS), out  # only the tokenizer's characters (no <unk>: nothing padded)


# -- Seq2Seq: greedy and beam search ------------------------------------------------------------


@pytest.fixture(scope="module")
def translation():
    """A tiny pre-LN Seq2Seq whose target vocabulary (40) is padded beyond its word tokenizer's."""
    words = WordTokenizer.train("the cat sat on a mat\nthe dog ran to a cat")
    model = build_tiny_seq2seq(src_vocab_size=words.vocab_size, tgt_vocab_size=40, norm_position="pre",
                               tie_output=False, pad_id=words.pad_id, bos_id=words.bos_id, eos_id=words.eos_id)
    rig(model.decoder_norm, model.lm_head, words.vocab_size)
    return model, words


def test_seq2seq_search_never_produces_an_id_beyond_the_tokenizer(translation):
    model, words = translation
    src = torch.tensor([words.encode("the cat sat") + [words.eos_id], words.encode("a dog ran") + [words.eos_id]])
    assert max(greedy(model, src)[0]) >= words.vocab_size  # the rig works without the limit
    limit = words.vocab_size
    found = greedy(model, src, vocab_limit=limit)
    assert all(ids and max(ids) < limit for ids in found)
    assert beam_search(model, src, beam=1, vocab_limit=limit) == found  # beam 1 is greedy
    trees = []
    for beam in (2, 4):
        best = beam_search(model, src, beam=beam, vocab_limit=limit, record=lambda step, t: trees.append(t))
        assert all(max(ids, default=0) < limit for ids in best)
    assert all(max(c["ids"]) < limit for tree in trees for sentence in tree for c in sentence)
    with pytest.raises(ValueError, match="vocab_limit"):
        greedy(model, src, vocab_limit=41)


def test_seq2seq_generation_view_renormalises_over_the_real_ids(translation):
    model, words = translation
    g = seq2seq_generation(model, words, words, "the cat sat")
    assert g.steps and all(s["picked"]["id"] < words.vocab_size for s in g.steps)
    for s in g.steps:
        assert sum(c["p"] for c in s["candidates"]) <= 1 + 1e-5
        assert all(c["id"] < words.vocab_size for c in s["candidates"])
    tree = seq2seq_generation(model, words, words, "the cat sat", beam=3)
    assert all(c["tokens"] for s in tree.steps for c in s["candidates"])  # every id has a label


# -- the explorer -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(model, tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("padded")
    glassformer.save(model, path, tokenizer=tok)
    explorer = Explorer(load_subject(path), path.name)
    return TestClient(make_app(explorer), base_url="http://127.0.0.1")


def test_explorer_next_and_sample_show_and_pick_only_real_ids(client, model, tok):
    text = "the cat"
    logits = next_logits(model, prompt(tok, text))[0]
    expected = softmax(logits[: tok.vocab_size].double().numpy())
    data = client.post("/api/sample", json={"text": text, "temperature": 1.0}).json()
    assert data["kept"]["vocab"] == tok.vocab_size
    for c in data["candidates"]:
        assert c["id"] < tok.vocab_size and c["softmax"] == pytest.approx(expected[c["id"]], abs=2e-6)
    for seed in range(6):
        for settings in ({"temperature": 1.0}, {"greedy": True}, {"top_k": 3}, {"top_p": 0.5}):
            response = client.post("/api/next", json={"text": text, "seed": seed, **settings})
            assert response.status_code == 200, response.text
            assert response.json()["picked"]["id"] < tok.vocab_size
    run = client.post("/api/run", json={"text": text}).json()
    assert run["next"] and all(n["id"] < tok.vocab_size for n in run["next"])
    assert run["next"][0]["id"] == int(np.argmax(expected))
    assert all(t["id"] < tok.vocab_size for layer in run["lens"]["top"] for pos in layer for t in pos)


def test_explorer_seq2seq_views_on_a_padded_target(translation):
    model, words = translation
    client = TestClient(make_app(Explorer(Subject(model, words, words), "padded")), base_url="http://127.0.0.1")
    for endpoint, body in (("next", {"text": "the cat sat"}), ("beam", {"text": "the cat sat", "beam": 3})):
        response = client.post(f"/api/{endpoint}", json=body)
        assert response.status_code == 200, response.text
