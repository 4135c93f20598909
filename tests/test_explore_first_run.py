"""`glassformer explore` on first run: the village GPT shipped in the package is what it claims, the
server holds it beside the articles' example (chosen per request), --model reads Hugging Face GPT-2,
Llama and Qwen2 directories, /api/run sends whole only the steps the page draws, and the page opens
on the GPT, samples with temperature and switches models in a real browser."""

import json
import math
import os
import re
from collections import Counter

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

import glassformer
from glassformer.data.corpus import bundled_corpus
from glassformer.explain.generation import gpt_generation
from glassformer.explain.walkthrough import CORPUS, json_values, statistics, walkthrough_data
from glassformer.explore import village
from glassformer.explore.api import Explorer
from glassformer.explore.server import load_models, make_app
from glassformer.model.gpt import GPT
from glassformer.training.lm import evaluate_lm


@pytest.fixture(scope="module")
def shipped():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the explorer serves it: a small model's forward waits on a second thread
    yield glassformer.load(village.FOLDER)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def served(static):
    """The app as `glassformer explore` with no --model builds it."""
    explorers = {key: Explorer(subject, name) for key, (subject, name) in load_models(None).items()}
    return explorers, TestClient(make_app(explorers, static=static), base_url="http://127.0.0.1")


# -- the village GPT ----------------------------------------------------------------------------


def test_village_gpt_is_small_and_what_its_recipe_says(shipped):
    model, tok = shipped
    assert isinstance(model, GPT) and tok is not None
    assert (village.FOLDER / "model.safetensors").stat().st_size < 2_000_000  # float32, shipped in the wheel
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size) == (2, 4, 128, 128)
    meta = json.loads((village.FOLDER / "config.json").read_text())
    assert meta["data"] == "bundled" and meta["train"]["seed"] == 1337 and meta["train"]["max_iters"] == 1500


def test_village_gpt_predicts_held_out_stories(shipped):
    """Stories the model never saw (the bundled grammar with another seed): its loss is far below what
    knowing only how often each character occurs could give (the text's own unigram entropy, about
    2.9 nats), itself below the uniform baseline ln V (about 4.1)."""
    model, tok = shipped
    text = bundled_corpus(n_chars=6_000, seed=1)
    counts = Counter(text)
    unigram = -sum(n / len(text) * math.log(n / len(text)) for n in counts.values())
    assert unigram < math.log(tok.vocab_size)
    loss = evaluate_lm(model, np.array(tok.encode(text)), batch_size=8)["val_loss"]
    assert loss < unigram / 2, (loss, unigram)


def greedy_text(model, tok, prompt: str, n: int) -> str:
    ids = tok.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids[-model.config.block_size:]]))[0, -1].argmax()))
    return tok.decode(ids[len(tok.encode(prompt)):])


@pytest.mark.parametrize("prompt", ["ROMEO:", village.EXAMPLE, "It was winter in "])
def test_village_gpt_writes_like_its_corpus(shipped, prompt):
    """Greedy text is made of the corpus's own words: at least two thirds of the words it writes (a
    model of letter frequencies alone writes almost none; this one writes 80-100%: the invented
    capitalised titles are where it slips), and it is what the library's generation writes."""
    model, tok = shipped
    vocabulary = set(re.findall(r"[A-Za-z]+", bundled_corpus()))
    written = greedy_text(model, tok, prompt, 160)
    assert written[:20] == gpt_generation(model, tok, prompt, 20, temperature=0.0).output_text
    words = re.findall(r"[A-Za-z]+", written)[1:-1]  # the first and last may be cut by the prompt and the end
    assert len(words) >= 15, written
    assert sum(w in vocabulary for w in words) >= 2 / 3 * len(words), written


# -- two models, one server ---------------------------------------------------------------------


def test_no_model_serves_the_village_gpt_first_and_the_articles_example(served):
    explorers, client = served
    info = client.get("/api/info").json()
    assert info["model"] == "village" and info["kind"] == "gpt" and info["example"] == village.EXAMPLE
    assert [(m["key"], m["kind"]) for m in info["models"]] == [("village", "gpt"), ("articles", "seq2seq")]
    articles = client.get("/api/info?model=articles").json()
    assert articles["kind"] == "seq2seq" and articles["example"] == CORPUS[0] and articles["models"] == info["models"]
    gpt = client.post("/api/run", json={"text": "ROMEO:", "whole": []}).json()
    assert gpt["next"] and gpt["walkthrough"]["model_kind"] == "gpt"
    translation = client.post("/api/run?model=articles", json={"text": CORPUS[0]}).json()
    assert translation["walkthrough"]["output"] == CORPUS[1]
    sampled = client.post("/api/sample?model=village", json={"text": "ROMEO:", "temperature": 0.5}).json()
    assert sampled["candidates"]
    for response in (client.get("/api/info?model=gpt2"), client.post("/api/run?model=x", json={"text": "a"})):
        assert response.status_code == 404 and list(response.json()) == ["error"]
        assert "village, articles" in response.json()["error"]


def test_run_sends_whole_only_the_steps_asked(served):
    """`whole` names the steps to send with every value; the others come as the corner and statistics
    of the full walkthrough (walkthrough_data with every value, computed apart); no lens unless asked."""
    explorers, client = served
    explorer = explorers["village"]
    text = village.EXAMPLE
    every = json.loads(json.dumps(walkthrough_data(explorer.subject.walkthrough(text), 0)))
    full = {s["id"]: s for s in every["steps"]}
    asked = ["dec.0.self.h1.scores", "dec.0.self.h1.probs", "dec.0.self.h1.q.weight"]
    data = client.post("/api/run", json={"text": text, "whole": asked + ["no.such.step"], "lens": False,
                                         "max_values": 16384}).json()
    assert data["lens"] is None and data["next"]
    sent = {s["id"]: s for s in data["walkthrough"]["steps"]}
    assert set(sent) == set(full)
    for sid, step in sent.items():
        if "values" not in full[sid]:
            continue
        assert step["stats"] == full[sid]["stats"] if "stats" in step else True
        if sid in asked or len(np.ravel(full[sid]["values"])) <= 64:
            assert step["values"] == full[sid]["values"], sid
        else:
            assert step["truncated"] and "values" not in step
            corner = np.array(full[sid]["values"], dtype=object)
            corner = corner[:64] if corner.ndim == 1 else corner[..., :8, :8]
            assert step["corner"] == corner.tolist(), sid
    with_lens = client.post("/api/run", json={"text": text, "whole": [], "lens": True}).json()
    assert len(with_lens["lens"]["top"]) == explorer.model.config.n_layer + 1
    refused = client.post("/api/run", json={"text": text, "whole": "dec.0"})
    assert refused.status_code == 422 and "whole" in refused.json()["error"]


def test_weight_statistics_follow_edits(served):
    """Kept between requests, a weight's statistics are still the edited weight's while it is edited,
    and the original's again after (numpy's statistics of the weight itself)."""
    explorers, client = served
    explorer = explorers["village"]
    name, sid = "blocks.0.self_attn.q_proj.weight", "dec.0.self.h1.q.weight"  # head 1's rows 32:64
    original = explorer.params[name].detach().numpy().copy()

    def stats(body):
        steps = client.post("/api/run", json={"text": "ROMEO:", "whole": [], "lens": False, **body}).json()
        return next(s["stats"] for s in steps["walkthrough"]["steps"] if s["id"] == sid)

    assert stats({}) == pytest.approx(statistics(original[32:64]))
    edited = original.copy()
    edited[35, 5] = 7.5
    edit = {"name": name, "index": [35, 5], "value": 7.5}
    assert stats({"edits": [edit]}) == pytest.approx(statistics(edited[32:64]))
    assert stats({}) == pytest.approx(statistics(original[32:64]))


def test_json_values_write_numpys_shortest_text():
    """Floats as numpy prints each float32 (its shortest text that reads back), at every magnitude."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(20_000), rng.standard_normal(5_000) * 1e-6,
                             np.exp(rng.uniform(-80, 80, 5_000)) * rng.choice([-1, 1], 5_000),
                             [0.1, 1 / 3, -2.5, 1e-40, 3e38, 100, 0, -0.0, 1e13, 1e-13, 2 ** -126]]).astype(np.float32)
    expected = [float(t) for t in values.astype(str)]
    written = json.loads(json.dumps(json_values(values)))
    assert [repr(x) for x in written] == [repr(x) for x in expected]
    assert json_values(np.array([[1.5, -np.inf], [np.nan, np.inf]], dtype=np.float32)) == [[1.5, None],
                                                                                            ["NaN", "Infinity"]]


# -- --model: Hugging Face directories ------------------------------------------------------------


def hf_directory(kind: str, path):
    """A 2-layer transformers model of `kind` with random weights and a byte-level BPE tokenizer of its
    vocabulary, saved as a Hugging Face directory (nothing downloaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    vocab = 128  # the model's; the tokenizer's is about 97: padded, as Qwen2's and GPT-2 exports are
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    else:
        cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[kind]
        config = cls(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=96, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:80],
                                  show_progress=False, special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(["the cat sat on the mat, the dog ran in the sun. " * 20], trainer=trainer)
    tok.save(str(path / "tokenizer.json"))  # Llama's and Qwen2's form
    tok.model.save(str(path))  # vocab.json and merges.txt: GPT-2's form
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return path


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_model_option_reads_hugging_face_directories(kind, tmp_path, static):
    path = hf_directory(kind, tmp_path / kind)
    explorers = {key: Explorer(subject, name) for key, (subject, name) in load_models(str(path)).items()}
    client = TestClient(make_app(explorers, static=static), base_url="http://127.0.0.1")
    info = client.get("/api/info").json()
    assert info["kind"] == "gpt" and info["models"] == [{"key": "model", "name": kind, "kind": "gpt"}]
    model, tok = glassformer.load(path)
    data = client.post("/api/run", json={"text": "the cat sat", "whole": [], "lens": True}).json()
    ids = tok.encode("the cat sat")
    assert [t["id"] for t in data["tokens"]] == ids
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1]
    assert tok.vocab_size < model.config.vocab_size
    assert data["next"][0]["id"] == int(logits[: tok.vocab_size].argmax())  # no padded id is offered
    assert data["next"][0]["logit"] == pytest.approx(float(logits[: tok.vocab_size].max()), abs=1e-4)
    assert len(data["lens"]["top"]) == model.config.n_layer + 1


# -- in a real browser ------------------------------------------------------------------------------


def test_page_opens_on_the_gpt_samples_and_switches_models():
    """`glassformer explore` as a user starts it: the page opens on the village GPT with its example,
    the temperature slider redraws the next-token table (its painted latency marked), and the
    header's switcher opens the articles' translation example."""
    from browser import Server, chromium, errors, settle, shown_error, tab
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server = Server()
    d = chromium(1440, 900)
    try:
        d.get(server.url)
        settle(d)
        assert d.find_element(By.ID, "gx-text").get_attribute("value") == village.EXAMPLE
        select = Select(d.find_element(By.ID, "gx-model"))
        assert [o.get_attribute("value") for o in select.options] == ["village", "articles"]
        assert select.first_selected_option.text == "Village stories GPT (character level)"
        tab(d, "next")
        before = d.execute_script("return state.sample.candidates.map((c) => c.temperature)")
        d.execute_script("const s = document.getElementById('gx-temperature'); s.value = 0.5;"
                         "s.dispatchEvent(new Event('input', {bubbles: true}))")
        settle(d)
        after = d.execute_script("return state.sample.candidates.map((c) => c.temperature)")
        assert after != before and max(after) > max(before)  # cooler: the likeliest token more likely
        assert int(d.execute_script("return document.body.dataset.sliderLatency")) > 0
        select.select_by_value("articles")
        settle(d)
        assert d.find_element(By.ID, "gx-text").get_attribute("value") == CORPUS[0]
        tabs = [b.get_attribute("data-tab") for b in d.find_elements(By.CSS_SELECTOR, "#gx-tabs button")]
        assert "translate" in tabs and "next" not in tabs
        assert d.execute_script("return state.result.walkthrough.output") == CORPUS[1]
        d.find_element(By.CSS_SELECTOR, '#gx-langs button[data-lang="zh"]').click()
        assert Select(d.find_element(By.ID, "gx-model")).first_selected_option.text == "文章中的翻译示例"
        assert shown_error(d) == "" and errors(d) == []
    finally:
        d.quit()
        server.stop()
