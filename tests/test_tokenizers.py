"""Tests for glassformer.data.tokenizers: round trips, nanoGPT char ids, specials, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers

from glassformer.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
    train_tokenizer,
)

# A small made-up corpus: English, Chinese, emoji, tabs, runs of spaces, blank lines.
CORPUS = "\n".join([
    "The quick brown fox jumps over the lazy dog.",
    "  Two leading spaces, then a tab:\there.  ",
    "我爱你，你爱我。今天天气很好！",
    "Emoji time 🙂🚀 and again 🙂",
    "",
    "def f(x):\n    return x * 2  # indented code",
    "Café au lait, naïve résumé — déjà vu.",
    "the the the fox fox dog",
]) * 3

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")
SLOW_OK = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400)


# ---- char ----------------------------------------------------------------------------

def test_char_ids_match_nanogpt_scheme():
    text = "hello world, First Citizen!\nBefore we proceed"
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    tok = CharTokenizer.train(text)
    assert tok.encode(text) == [stoi[ch] for ch in text]
    # <unk> sits after the characters so the character ids are unchanged.
    assert tok.unk_id == len(stoi) and tok.vocab_size == len(stoi) + 1
    assert tok.pad_id is None and tok.bos_id is None and tok.eos_id is None


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tiny shakespeare not present")
def test_char_on_tiny_shakespeare():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tok = CharTokenizer.train(text)
    assert len(tok.chars) == 65 and tok.vocab_size == 66
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    head = text[:5000]
    assert tok.encode(head) == [stoi[ch] for ch in head]
    assert tok.decode(tok.encode(text)) == text


def test_char_chinese_and_unknown():
    tok = CharTokenizer.train("我爱你，你爱我")
    assert tok.chars == sorted(set("我爱你，"))
    ids = tok.encode("我爱他")
    assert ids[:2] == [tok.chars.index("我"), tok.chars.index("爱")]
    assert ids[2] == tok.unk_id
    assert tok.decode(ids) == "我爱\ufffd"
    assert tok.token(tok.unk_id) == "<unk>"


def test_char_without_unk_rejects_unseen_character():
    tok = CharTokenizer.train("abc", unk=False)
    assert tok.vocab_size == 3 and tok.unk_id is None
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")


@given(st.data())
@SLOW_OK
def test_char_round_trips_text_from_its_alphabet(data):
    tok = CharTokenizer.train(CORPUS)
    text = data.draw(st.text(alphabet=st.sampled_from(tok.chars)))
    assert tok.decode(tok.encode(text)) == text


def test_decode_accepts_tensor_and_array_and_rejects_bad_ids():
    tok = CharTokenizer.train("abc")
    ids = tok.encode("cab")
    assert tok.decode(torch.tensor(ids)) == "cab"
    assert tok.decode(np.array(ids, dtype=np.int64)) == "cab"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 99])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(torch.tensor([ids]))


# ---- word ----------------------------------------------------------------------------

WORDS = "when you play the game of thrones\nyou win or you die\nwinter is coming to the north."


def test_word_vocabulary_and_specials():
    tok = WordTokenizer.train(WORDS)
    assert [tok.token(i) for i in range(4)] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    # "you" appears 3 times, "the" twice; the rest once, in alphabetical order.
    assert tok.token(4) == "you" and tok.token(5) == "the"
    assert tok.words[6:9] == [".", "coming", "die"]
    assert tok.vocab_size == 4 + len(set(tok.split(WORDS)))


def test_word_encode_decode_and_unknown():
    tok = WordTokenizer.train(WORDS)
    ids = tok.encode("you win the dragon.")
    assert ids[3] == tok.unk_id
    assert tok.token(ids[0]) == "you" and tok.token(ids[-1]) == "."
    # Specials vanish, words join with spaces, the full stop attaches to its word.
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "you win the <unk>."


def test_word_min_freq_lowercase_and_cap():
    tok = WordTokenizer.train("You you YOU the the end", min_freq=2, lowercase=True)
    assert tok.words[4:] == ["you", "the"]
    assert tok.encode("YOU end") == [4, tok.unk_id]
    capped = WordTokenizer.train(WORDS, vocab_size=6)
    assert capped.words == ["<pad>", "<unk>", "<bos>", "<eos>", "you", "the"]


# ---- bpe -----------------------------------------------------------------------------

@given(st.text())
@SLOW_OK
def test_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@pytest.mark.parametrize("text", [
    "", " ", "  leading and trailing  ", "\t\ttabs\n\nnewlines\r\n", "我爱你",
    "never seen: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ☃ 👩‍👩‍👧",
    "literal <eos> and <pad> are text",
])
def test_bpe_round_trips_tricky_strings(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_specials_and_compression(bpe):
    assert (bpe.pad_id, bpe.unk_id, bpe.bos_id, bpe.eos_id) == (0, 1, 2, 3)
    assert bpe.token(3) == "<eos>"
    ids = bpe.encode("The quick brown fox")
    assert len(ids) < len("The quick brown fox")  # merges were learned
    assert bpe.decode([bpe.bos_id, *ids, bpe.eos_id, bpe.pad_id]) == "The quick brown fox"
    assert "".join(bpe.token(i) for i in ids) == "The quick brown fox"
    batch = ["我爱你", "", "fox"]
    assert bpe.encode_batch(batch) == [bpe.encode(text) for text in batch]


def test_bpe_vocab_size_too_small():
    with pytest.raises(ValueError, match="at least 260"):
        BPETokenizer.train(CORPUS, vocab_size=100)


def _write_fake_gpt2(directory: Path) -> dict[str, int]:
    """A GPT-2-format vocab: the 256 byte symbols, three merges, then <|endoftext|>."""
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("h", "e"), ("Ġ", "t"), ("Ġt", "he")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab


def test_gpt2_files(tmp_path):
    vocab = _write_fake_gpt2(tmp_path)
    tok = BPETokenizer.from_gpt2(tmp_path)
    eot = vocab["<|endoftext|>"]
    assert tok.vocab_size == 256 + 3 + 1
    assert tok.bos_id == tok.eos_id == eot and tok.pad_id is None and tok.unk_id is None
    # " the" -> "Ġthe" (one merged piece); "hex" -> "he" + "x".
    assert tok.encode(" the") == [vocab["Ġthe"]]
    assert tok.encode("hex") == [vocab["he"], vocab["x"]]
    assert tok.decode([eot, *tok.encode("hi the 我"), eot]) == "hi the 我"
    assert tok.token(vocab["Ġthe"]) == " the"
    tok.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").encode(" the he") == tok.encode(" the he")


def test_gpt2_missing_files(tmp_path):
    with pytest.raises(ValueError, match="vocab.json"):
        BPETokenizer.from_gpt2(tmp_path)


# ---- files and errors ----------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_pairs(bpe, tmp_path_factory):
    """(original, reloaded) for each kind."""
    folder = tmp_path_factory.mktemp("saved")
    pairs = []
    for tok in (CharTokenizer.train(CORPUS), WordTokenizer.train(CORPUS, lowercase=True), bpe):
        path = folder / f"{tok.kind}.json"
        tok.save(path)
        pairs.append((tok, load_tokenizer(path)))
    return pairs


@given(st.text())
@SLOW_OK
def test_save_load_preserves_encoding(saved_pairs, text):
    for original, loaded in saved_pairs:
        assert type(loaded) is type(original)
        assert loaded.encode(text) == original.encode(text)


def test_saved_file_format(saved_pairs, tmp_path):
    for original, loaded in saved_pairs:
        assert loaded.vocab_size == original.vocab_size
        assert (loaded.pad_id, loaded.unk_id, loaded.bos_id, loaded.eos_id) == (
            original.pad_id, original.unk_id, original.bos_id, original.eos_id)
        path = tmp_path / "tok.json"
        original.save(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        assert (data["format"], data["version"], data["kind"]) == (
            "glassformer-tokenizer", 1, original.kind)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp files left


def test_load_rejects_missing_and_foreign_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="not found.*nope.json"):
        load_tokenizer(missing)
    foreign = tmp_path / "config.json"
    foreign.write_text('{"n_layer": 6}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a glassformer tokenizer"):
        load_tokenizer(foreign)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "glassformer-tok', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        load_tokenizer(broken)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "glassformer-tokenizer", "version": 1, "kind": "bpe",'
                       ' "specials": {}, "hf": "{}"}', encoding="utf-8")
    with pytest.raises(ValueError, match="corrupt tokenizer file"):
        load_tokenizer(corrupt)


def test_train_tokenizer_dispatch_and_errors():
    assert train_tokenizer("char", "ba").encode("ab") == [0, 1]
    assert train_tokenizer("word", WORDS, vocab_size=6).vocab_size == 6
    assert train_tokenizer("bpe", CORPUS, vocab_size=300).vocab_size <= 300
    for kind in ("char", "word", "bpe"):
        with pytest.raises(ValueError, match="empty text"):
            train_tokenizer(kind, "")
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer("sentencepiece", "abc")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer("char", "abc", vocab_size=10)
