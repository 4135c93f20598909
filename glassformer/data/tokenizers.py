"""Tokenizers: text -> list of ids -> text, one interface for three kinds.

- `CharTokenizer`: one id per Unicode character (nanoGPT's shakespeare_char ids).
- `WordTokenizer`: one id per word or punctuation mark, with <pad>/<unk>/<bos>/<eos>.
- `BPETokenizer`: byte-level BPE (GPT-2's scheme) via Hugging Face `tokenizers`;
  it round-trips any UTF-8 text exactly, and can load GPT-2's own vocab.json/merges.txt.
- `PretrainedTokenizer`: a released model's tokenizer.json (Llama, Mistral, Qwen) as it is,
  with the model's special tokens, the ids that end a generation and its chat template.

Every tokenizer saves to one JSON file; `load_tokenizer` rebuilds any kind from it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from glassformer.base.files import atomic_write_json
from glassformer.base.reading import TOKENIZER, DataError, check_regular_file, parse_json, read_utf8

FILE_FORMAT = "glassformer-tokenizer"
FILE_VERSION = 1
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3 for word and bpe
UNK_CHAR = "\ufffd"  # what an unknown character decodes to: "�"
WORD_RE = re.compile(r"\w+|[^\w\s]")  # a run of word characters, or one punctuation mark
NO_SPACE_BEFORE = frozenset(".,!?;:")  # punctuation that decode attaches to the previous word
GPT2_EOT = "<|endoftext|>"
DEFAULT_BPE_VOCAB = 1024  # used when train_tokenizer("bpe", ...) gets no vocab_size


def _check_text(text: str) -> None:
    if not text:
        raise ValueError("cannot build a tokenizer from empty text")


SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(texts: Iterable[str]) -> None:
    """Raises a one-line ValueError for text holding a lone surrogate, which UTF-8 cannot encode.

    Python gives bytes that are not UTF-8 on the command line (or in a file name) as lone
    surrogates (U+DC80..U+DCFF); a Hugging Face tokenizer refuses them with a TypeError.
    """
    for text in texts:
        if isinstance(text, str) and (found := SURROGATE.search(text)):
            char = found.group()
            escaped = 0xDC80 <= ord(char) <= 0xDCFF  # surrogateescape's stand-in for one byte
            origin = f" (the byte 0x{ord(char) - 0xDC00:02x}, which is not UTF-8)" if escaped else ""
            raise ValueError(f"the text is not valid Unicode: character {found.start()} is a lone surrogate "
                             f"U+{ord(char):04X}{origin}; give UTF-8 text")


class Tokenizer:
    """The interface every tokenizer implements; subclasses fill in the `_` methods."""

    kind: str = ""
    pad_id: int | None = None
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Any) -> str:
        """ids: a list of ints or a 1-D tensor/array. <pad>, <bos>, <eos> are dropped."""
        return self._decode(self._check_ids(ids))

    def token(self, id: int) -> str:
        """The display form of one id (a character, a word, or a BPE piece's text)."""
        return self._token(self._check_ids([id])[0])

    def save(self, path: str | os.PathLike) -> None:
        header = {"format": FILE_FORMAT, "version": FILE_VERSION, "kind": self.kind}
        atomic_write_json(path, {**header, **self._state()})

    def _check_ids(self, ids: Any) -> list[int]:
        # Tensors and numpy arrays both have .tolist(); a 2-D one would give nested lists.
        values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if not isinstance(values, list):
            values = [values]  # a 0-d tensor is one id
        for value in values:
            if isinstance(value, list):
                raise ValueError("decode takes a 1-D sequence of ids; got a nested one")
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"id {value} is outside the vocabulary (size {self.vocab_size})")
        return [int(value) for value in values]

    def _decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def _token(self, id: int) -> str:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One id per character. ids 0..n-1 are the sorted characters; <unk> (if any) is id n."""

    kind = "char"

    def __init__(self, chars: Iterable[str], unk: bool = True):
        self.chars = list(chars)
        if any(len(ch) != 1 for ch in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("char vocabulary must be distinct single characters")
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        # <unk> goes last so the character ids match nanoGPT's exactly.
        self.unk_id = len(self.chars) if unk else None
        self.itos = self.chars + ([UNK_CHAR] if unk else [])

    @classmethod
    def train(cls, text: str, unk: bool = True) -> CharTokenizer:
        _check_text(text)
        return cls(sorted(set(text)), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        if self.unk_id is not None:
            return [self.stoi.get(ch, self.unk_id) for ch in text]
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary "
                             "(this char tokenizer has no <unk>)") from None

    def _decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def _token(self, id: int) -> str:
        return "<unk>" if id == self.unk_id else self.itos[id]

    def _state(self) -> dict[str, Any]:
        return {"chars": "".join(self.chars), "unk": self.unk_id is not None}


class WordTokenizer(Tokenizer):
    """One id per word or punctuation mark. ids: <pad>=0, <unk>=1, <bos>=2, <eos>=3, words.

    decode joins tokens with single spaces (no space before .,!?;:), so the round trip
    loses the original spacing and line breaks: "Hi ,  you!" decodes as "Hi, you!".
    """

    kind = "word"

    def __init__(self, words: Iterable[str], lowercase: bool = False):
        self.words = list(SPECIALS) + list(words)
        if len(set(self.words)) != len(self.words):
            raise ValueError("word vocabulary has duplicate entries")
        self.lowercase = lowercase
        self.stoi = {word: i for i, word in enumerate(self.words)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(len(SPECIALS))

    @classmethod
    def train(cls, text: str, min_freq: int = 1, lowercase: bool = False,
              vocab_size: int | None = None) -> WordTokenizer:
        """vocab_size (specials included) keeps only the most frequent words."""
        _check_text(text)
        counts = Counter(cls.split(text.lower() if lowercase else text))
        if not counts:
            raise ValueError("cannot build a word tokenizer: the text has no words")
        if vocab_size is not None and vocab_size <= len(SPECIALS):
            raise ValueError(f"word vocab_size must be at least {len(SPECIALS) + 1}")
        # Most frequent first; ties broken alphabetically so training is deterministic.
        ranked = sorted(counts.items(), key=_frequency_then_alphabet)
        words = [word for word, count in ranked if count >= min_freq]
        if vocab_size is not None:
            words = words[: vocab_size - len(SPECIALS)]
        return cls(words, lowercase=lowercase)

    @staticmethod
    def split(text: str) -> list[str]:
        return WORD_RE.findall(text)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        return [self.stoi.get(word, self.unk_id) for word in self.split(text)]

    def _decode(self, ids: list[int]) -> str:
        skipped = {self.pad_id, self.bos_id, self.eos_id}
        pieces: list[str] = []
        for i in ids:
            if i in skipped:
                continue
            word = self.words[i]
            # "you ." reads badly: glue closing punctuation onto the previous token.
            if pieces and word not in NO_SPACE_BEFORE:
                pieces.append(" ")
            pieces.append(word)
        return "".join(pieces)

    def _token(self, id: int) -> str:
        return self.words[id]

    def _state(self) -> dict[str, Any]:
        return {"words": self.words[len(SPECIALS):], "lowercase": self.lowercase}


def _frequency_then_alphabet(item: tuple[str, int]) -> tuple[int, str]:
    word, count = item
    return (-count, word)


class HFBackedTokenizer(Tokenizer):
    """What the tokenizers that wrap a Hugging Face `tokenizers.Tokenizer` (`self.hf`) share:
    encoding without added specials, batches on HF's threads, decoding that skips specials,
    and special tokens found by name in the vocabulary."""

    hf: HFTokenizer
    vocabulary_name = "the tokenizer's vocabulary"  # how a missing special token's error names it

    def encode(self, text: str) -> list[int]:
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        except TypeError:  # the library's words for a string it cannot take; say which
            _check_unicode([text])
            raise

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        texts = list(texts)
        try:  # HF encodes a batch on several threads
            return [encoding.ids for encoding in self.hf.encode_batch(texts, add_special_tokens=False)]
        except TypeError:
            _check_unicode(texts)
            raise

    def _decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)

    def _special_id(self, name: str | None) -> int | None:
        if name is None:
            return None
        id = self.hf.token_to_id(name)
        if id is None:
            raise ValueError(f"special token {name!r} is not in {self.vocabulary_name}")
        return id


class BPETokenizer(HFBackedTokenizer):
    """Byte-level BPE: text -> UTF-8 bytes -> merged byte pieces, so no text is unknown.

    Wraps a Hugging Face `tokenizers.Tokenizer` with no normalizer and no post-processor,
    so the text is never altered and decode(encode(s)) == s for every string s.
    """

    kind = "bpe"
    vocabulary_name = "the BPE vocabulary"

    def __init__(self, hf: HFTokenizer, pad: str | None, unk: str | None,
                 bos: str | None, eos: str | None):
        self.hf = hf
        # Literal "<eos>" in the text is text, not the special token: ids stay reversible.
        self.hf.encode_special_tokens = True
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (
            self._special_id(name) for name in (pad, unk, bos, eos))
        self._special_names = {pad, unk, bos, eos} - {None}

    @classmethod
    def train(cls, text: str, vocab_size: int = DEFAULT_BPE_VOCAB) -> BPETokenizer:
        """Learns merges on top of the 256 byte tokens until vocab_size (or no pairs left)."""
        _check_text(text)
        minimum = 256 + len(SPECIALS)
        if vocab_size < minimum:
            raise ValueError(f"bpe vocab_size must be at least {minimum} "
                             f"(256 bytes + {len(SPECIALS)} special tokens); got {vocab_size}")
        hf = _byte_level(HFTokenizer(models.BPE(unk_token="<unk>")))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
            # All 256 bytes from the start, so bytes unseen in training still encode.
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        # Line by line: one string of the whole text holds every pre-token at once (5 GB for a
        # 64 MB text); lines are pre-tokenized as they come (the counts differ only where a line
        # ends in spaces, which byte-level BPE would otherwise group with the newline).
        hf.train_from_iterator(text.splitlines(keepends=True) or [text], trainer=trainer)
        return cls(hf, *SPECIALS)

    @classmethod
    def from_gpt2(cls, directory: str | os.PathLike) -> BPETokenizer:
        """GPT-2's tokenizer from a folder holding its vocab.json and merges.txt."""
        vocab, merges = Path(directory) / "vocab.json", Path(directory) / "merges.txt"
        for path in (vocab, merges):
            if not path.exists():
                raise ValueError(f"cannot load GPT-2 tokenizer: {path} not found")
            check_regular_file(path)  # the tokenizers library would open a FIFO and wait
            if (size := path.stat().st_size) > (limit := TOKENIZER.limit()):
                raise DataError(f"{path} is {size} bytes, more than {limit}, the limit for {TOKENIZER.kind}; "
                                f"raise it with {TOKENIZER.env}=<bytes>")
        hf = _byte_level(HFTokenizer(models.BPE.from_file(str(vocab), str(merges))))
        # <|endoftext|> is already in vocab.json; marking it special keeps its id (50256)
        # and lets decode skip it. GPT-2 uses it both to start and to end a document.
        hf.add_special_tokens([GPT2_EOT])
        return cls(hf, pad=None, unk=None, bos=GPT2_EOT, eos=GPT2_EOT)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def _token(self, id: int) -> str:
        piece = self.hf.id_to_token(id)
        if piece in self._special_names:
            return piece
        # A piece may be part of a multi-byte character: show such bytes as \xNN.
        raw = bytes(_UNICODE_TO_BYTE[ch] for ch in piece)
        return raw.decode("utf-8", errors="backslashreplace")

    def _state(self) -> dict[str, Any]:
        # Specials are stored by name; their ids come back from the HF vocabulary.
        ids = {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id}
        names = {role: None if id is None else self.hf.id_to_token(id) for role, id in ids.items()}
        return {"specials": names, "hf": self.hf.to_str()}


class PretrainedTokenizer(HFBackedTokenizer):
    """A released model's own tokenizer: its tokenizer.json read by Hugging Face `tokenizers`
    unchanged (normalizer, pre-tokenizer, added tokens), so ids match the model's training.

    Special tokens written in the text ("<|im_start|>") are read as the special tokens, as the
    chat template needs; encode adds no BOS or EOS of its own. eos_ids: every id that ends a
    generation (generation_config.json may list several); chat_template: the Jinja2 template
    of tokenizer_config.json, rendered with glassformer.hf.families.render_chat.
    """

    kind = "pretrained"

    def __init__(self, hf: HFTokenizer, bos: str | None = None, eos: str | None = None, pad: str | None = None,
                 eos_ids: Iterable[int] = (), chat_template: str | None = None):
        self.hf = hf
        self.bos_id, self.eos_id, self.pad_id = (self._special_id(name) for name in (bos, eos, pad))
        self.eos_ids = list(dict.fromkeys([*([self.eos_id] if self.eos_id is not None else []), *eos_ids]))
        if self.eos_id is None and self.eos_ids:
            self.eos_id = self.eos_ids[0]
        self.chat_template = chat_template
        self.byte_level = type(hf.decoder).__name__ == "ByteLevel"  # pieces spelled in GPT-2's byte alphabet

    @classmethod
    def from_file(cls, path: str | os.PathLike, **specials) -> PretrainedTokenizer:
        """Reads a Hugging Face tokenizer.json; `specials`: bos, eos, pad (token strings), eos_ids, chat_template."""
        text = read_utf8(path, TOKENIZER)  # from_file would open a FIFO and wait, or read any size
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as err:  # tokenizers raises a plain Exception
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"cannot read tokenizer file {path}: {first}") from None
        return cls(hf, **specials)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def _token(self, id: int) -> str:
        piece = self.hf.id_to_token(id)
        if piece is None:
            return ""
        if self.byte_level and all(ch in _UNICODE_TO_BYTE for ch in piece):
            return bytes(_UNICODE_TO_BYTE[ch] for ch in piece).decode("utf-8", errors="backslashreplace")
        return piece

    def _state(self) -> dict[str, Any]:
        names = {role: None if id is None else self.hf.id_to_token(id)
                 for role, id in (("bos", self.bos_id), ("eos", self.eos_id), ("pad", self.pad_id))}
        return {"specials": names, "eos_ids": self.eos_ids, "chat_template": self.chat_template,
                "hf": self.hf.to_str()}


def _byte_level(hf: HFTokenizer) -> HFTokenizer:
    """Byte-level pre-tokenizer and decoder, without a leading-space rewrite."""
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return hf


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 bytes to printable characters (BPE pieces are in these).

    Printable Latin-1 bytes stand for themselves; the rest (controls, space, ...) are
    shifted to code points 256, 257, ... in byte order, so "Ġ" (256 + 32) is a space.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for n, b in enumerate(shifted):
        table[b] = chr(256 + n)
    return table


_UNICODE_TO_BYTE = {ch: b for b, ch in _byte_to_unicode().items()}


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """Trains a tokenizer of `kind` ("char", "word" or "bpe") on `text`.

    vocab_size: char must leave it None (the text decides); word uses it as a cap;
    bpe uses it as the target size (default DEFAULT_BPE_VOCAB).
    """
    if kind == "char":
        if vocab_size is not None:
            raise ValueError("a char tokenizer's vocabulary is set by the text; "
                             "leave vocab_size unset")
        return CharTokenizer.train(text)
    if kind == "word":
        return WordTokenizer.train(text, vocab_size=vocab_size)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size or DEFAULT_BPE_VOCAB)
    raise ValueError(f"unknown tokenizer kind {kind!r}; choose char, word or bpe")


def load_tokenizer(path: str | os.PathLike, text: str | None = None) -> Tokenizer:
    """Rebuilds the tokenizer that `Tokenizer.save` wrote to `path`.

    Args:
        path: the tokenizer file (read through glassformer.base.reading: a regular file of at most
            256 MiB, UTF-8, JSON nested at most 100 levels).
        text: the file's contents, already read (then `path` only names it in errors).

    Returns:
        The tokenizer; a one-line ValueError naming the file for anything unusable.
    """
    path = Path(path)
    if text is None and not path.exists():
        raise ValueError(f"tokenizer file not found: {path}")
    try:
        data = parse_json(read_utf8(path, TOKENIZER) if text is None else text, path)
    except DataError as err:
        raise ValueError(f"cannot read tokenizer file: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a glassformer tokenizer file")
    if data.get("version") != FILE_VERSION:
        raise ValueError(f"{path}: unsupported tokenizer file version {data.get('version')!r}")
    try:
        return _from_state(data)
    except KeyError as err:
        raise ValueError(f"corrupt tokenizer file {path}: missing field {err}") from None
    except Exception as err:  # HF's from_str raises a plain Exception on bad JSON
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"corrupt tokenizer file {path}: {first}") from None


def _from_state(data: dict[str, Any]) -> Tokenizer:
    kind = data["kind"]
    if kind == "char":
        return CharTokenizer(data["chars"], unk=data["unk"])
    if kind == "word":
        return WordTokenizer(data["words"], lowercase=data["lowercase"])
    if kind == "bpe":
        names = data["specials"]
        hf = HFTokenizer.from_str(data["hf"])
        return BPETokenizer(hf, names["pad"], names["unk"], names["bos"], names["eos"])
    if kind == "pretrained":
        names = data["specials"]
        return PretrainedTokenizer(HFTokenizer.from_str(data["hf"]), names["bos"], names["eos"], names["pad"],
                                   data["eos_ids"], data["chat_template"])
    raise ValueError(f"unknown tokenizer kind {kind!r}")
