"""Data: text files -> token ids in memory-mapped arrays -> (x, y) batches; sentences -> padded batches.

Language modelling follows nanoGPT so figures compare: the last `val_fraction` of the
text (10% by default) is the validation split, and training batches are random windows.
The language-model loss and its evaluation loop live here too, as does the shape of a
translation source (tokens + <eos>) and right padding: training, decoding, the walkthrough
and the plots all take them from this one place.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glassformer.base.files import atomic_write, atomic_write_json
from glassformer.base.reading import (  # DataError and the read helpers began here; modules still import them from here
    TEXT,
    TEXT_LIMIT_ENV,
    DataError,
    check_regular_file,
    decode_text,
    env_limit,
    read_bounded,
    read_json,
)
from glassformer.data.tokenizers import Tokenizer, load_tokenizer

SOURCE_TOKENIZER_FILE = "source_tokenizer.json"  # a translation checkpoint's, when the two vocabularies differ
MAX_TEXT_BYTES = TEXT.default  # 1 GiB of text (after decompression); GLASSFORMER_MAX_TEXT_BYTES raises it
MAX_LINE_CHARS = 1 << 20  # one sentence of a line-oriented input; GLASSFORMER_MAX_LINE_CHARS raises it
LINE_LIMIT_ENV = "GLASSFORMER_MAX_LINE_CHARS"
STDIN = "standard input"


def read_text(path, limit: int | None = None) -> str:
    """The file as text; .gz files are decompressed. One-line DataError for anything unusable.

    Args:
        path: a regular file (a FIFO, device or directory is refused before it is opened).
        limit: most bytes of text (decompressed, for .gz); default GLASSFORMER_MAX_TEXT_BYTES or 1 GiB.

    Returns:
        The file's text, which must be non-empty UTF-8 without NUL bytes.
    """
    path = Path(path)
    limit = limit or env_limit(TEXT_LIMIT_ENV, MAX_TEXT_BYTES)
    check_regular_file(path)
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                raw = read_bounded(f, path, limit, what="decompresses to")
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is not a readable gzip file ({e})") from None
    else:
        if (size := path.stat().st_size) > limit:
            raise DataError(f"{path} is {size} bytes, more than {limit}, the limit for a text input; "
                            f"raise it with {TEXT_LIMIT_ENV}=<bytes>")
        with open(path, "rb") as f:
            raw = read_bounded(f, path, limit)  # bounded again: the file may grow while it is read
    if not raw or raw.isspace():  # isspace, not strip: no copy of a large file
        raise DataError(f"{path} is empty")
    return decode_text(raw, path)


def check_line_lengths(lines: list[str], name, limit: int | None = None) -> list[str]:
    """`lines`, unchanged, or a one-line DataError naming the first line longer than `limit` characters."""
    limit = limit or env_limit(LINE_LIMIT_ENV, MAX_LINE_CHARS)
    for number, line in enumerate(lines, 1):
        if len(line) > limit:
            raise DataError(f"{name} line {number} is {len(line)} characters long, more than {limit}; "
                            f"raise the limit with {LINE_LIMIT_ENV}=<characters>")
    return lines


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """The first (1 - val_fraction) of the characters for training, the rest for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1; got {val_fraction}")
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def ids_dtype(vocab_size: int):
    """The smallest unsigned integer type that holds every id of the vocabulary."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def encode_to_file(text: str, tokenizer, path) -> np.ndarray:
    """Encodes text and stores the ids at `path` (raw uint16/uint32); returns them memory-mapped."""
    dtype = ids_dtype(tokenizer.vocab_size)
    ids = np.asarray(tokenizer.encode(text), dtype=dtype)
    atomic_write(path, ids.tofile)
    return np.memmap(path, dtype=dtype, mode="r") if len(ids) else ids


def fingerprint(text: str, tokenizer) -> str:
    """Identifies a (text, tokenizer) pair, so cached ids are reused only when both are unchanged."""
    h = hashlib.sha256(text.encode("utf-8"))
    h.update(repr((tokenizer.kind, tokenizer.vocab_size, [tokenizer.token(i) for i in range(tokenizer.vocab_size)]))
             .encode("utf-8"))
    return h.hexdigest()


def cached_ids(text: str, tokenizer, path) -> np.ndarray:
    """Token ids of `text`, from the cache file at `path` when it was made from the same text and tokenizer."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    key = fingerprint(text, tokenizer)
    if path.exists() and meta_path.exists():
        try:
            meta = read_json(meta_path)
        except (ValueError, OSError):  # a damaged cache record: the ids are made again
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        if meta.get("fingerprint") == key and meta.get("dtype") == np.dtype(ids_dtype(tokenizer.vocab_size)).name:
            return np.memmap(path, dtype=ids_dtype(tokenizer.vocab_size), mode="r")
    ids = encode_to_file(text, tokenizer, path)
    atomic_write_json(meta_path, {"fingerprint": key, "dtype": np.dtype(ids.dtype).name, "tokens": len(ids)})
    return ids


def check_length(ids: np.ndarray, block_size: int, split: str) -> None:
    """Raises DataError when `ids` cannot fill one window of block_size + 1 tokens."""
    if len(ids) < block_size + 1:
        raise DataError(f"the {split} split has {len(ids)} tokens, fewer than block_size + 1 = {block_size + 1}; "
                        f"use a longer text, a smaller block_size (--set block_size=N) or another --val-fraction")


def random_windows(ids: np.ndarray, block_size: int, batch_size: int, generator: torch.Generator):
    """batch_size random windows: x (B, T) and y (B, T), y being x shifted one token to the left."""
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator).numpy()
    index = starts[:, None] + np.arange(block_size + 1)  # (B, T + 1), one gather for the whole batch
    chunk = torch.from_numpy(ids[index].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def sequential_windows(ids: np.ndarray, block_size: int, batch_size: int):
    """Every token of `ids` predicted once: non-overlapping windows, in batches of (x, y)."""
    n_windows = (len(ids) - 1) // block_size
    starts = np.arange(n_windows) * block_size
    for i in range(0, n_windows, batch_size):
        index = starts[i: i + batch_size, None] + np.arange(block_size + 1)
        chunk = torch.from_numpy(ids[index].astype(np.int64))
        yield chunk[:, :-1], chunk[:, 1:]
    tail = len(ids) - 1 - n_windows * block_size  # the last few tokens that fill no whole window
    if tail > 0:
        chunk = torch.from_numpy(ids[-(tail + 1):].astype(np.int64))[None]
        yield chunk[:, :-1], chunk[:, 1:]


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A batch to the device; to a GPU from pinned memory, without waiting for the copy."""
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ---------------------------------------------------------------------------------------------
# The language-model loss and its evaluation


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
            ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of next-token logits against their targets.

    Args:
        logits: (B, T, V) scores, any float dtype (the loss is computed in float32).
        targets: (B, T) token ids; positions equal to `ignore_index` do not count.
        label_smoothing: the share of probability spread over the whole vocabulary (0 = none).
        ignore_index: the target id that marks padding.

    Returns:
        A scalar tensor: the mean over the counted positions.
    """
    # (B, T, V) -> (B*T, V) and (B, T) -> (B*T,): one prediction per row
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index,
                           label_smoothing=label_smoothing)


@torch.no_grad()
def lm_eval_loss(model, windows: Iterable[tuple[torch.Tensor, torch.Tensor]], device) -> tuple[float, int]:
    """The mean loss per predicted token over (x, y) windows, as used by every language-model evaluation.

    Args:
        model: maps ids (B, T) to logits (B, T, V); called as it is (the caller chooses eval mode).
        windows: (x, y) pairs of (B, T) ids, y being x shifted one token to the left.
        device: where the model is.

    Returns:
        (mean cross-entropy per target token, number of target tokens).
    """
    total, count = 0.0, 0
    for x, y in windows:
        n = y.numel()
        total += lm_loss(model(x.to(device)), y.to(device)).item() * n
        count += n
    if count == 0:
        raise ValueError("no tokens to evaluate")
    return total / count, count


# ---------------------------------------------------------------------------------------------
# Parallel text: a source sentence, right padding, translation batches


def source_ids(tokens: Sequence[int], block_size: int, eos_id: int) -> list[int]:
    """An encoder input: the first block_size - 1 tokens, then <eos> (as in training, decoding and the walkthrough).

    Args:
        tokens: the sentence's token ids, without special tokens.
        block_size: the model's longest sequence.
        eos_id: the id of <eos>.

    Returns:
        At most block_size ids, the last one <eos>.
    """
    return list(tokens[: block_size - 1]) + [eos_id]


def right_pad(rows: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids of different lengths as one tensor, padded on the right.

    Args:
        rows: B lists of ids, at least one of them non-empty.
        pad_id: the id that fills the rest of each row.
        device: where the tensors are made (default: the CPU).

    Returns:
        (ids (B, L), mask (B, L)): L is the longest row; mask is True on real tokens.
    """
    lengths = torch.tensor([len(r) for r in rows], device=device)  # (B,)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long, device=device)
    mask = torch.arange(ids.size(1), device=device)[None, :] < lengths[:, None]  # (1, L) < (B, 1) -> (B, L)
    return ids, mask


def collate(examples: Sequence[tuple[list[int], list[int]]], indices: Iterable[int], pad_id: int, bos_id: int,
            eos_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A translation batch: encoder input, its mask, decoder input and the decoder's targets, right-padded.

    Args:
        examples: (source ids ending in <eos>, target ids without special tokens) pairs.
        indices: which examples make the batch.
        pad_id, bos_id, eos_id: the special token ids.

    Returns:
        src (B, S), src_mask (B, S) True on real tokens, tgt_in (B, T) = <bos> + target,
        tgt_out (B, T) = target + <eos>.
    """
    chosen = [examples[i] for i in indices]
    src, src_mask = right_pad([s for s, _ in chosen], pad_id)
    tgt_in, _ = right_pad([[bos_id] + t for _, t in chosen], pad_id)
    tgt_out, _ = right_pad([t + [eos_id] for _, t in chosen], pad_id)
    return src, src_mask, tgt_in, tgt_out


def load_translation_tokenizers(model_dir) -> tuple[Tokenizer, Tokenizer]:
    """(source tokenizer, target tokenizer) of a translation checkpoint directory; one object when they are joint."""
    model_dir = Path(model_dir)
    tgt = load_tokenizer(model_dir / "tokenizer.json")
    src_path = model_dir / SOURCE_TOKENIZER_FILE
    return (load_tokenizer(src_path) if src_path.exists() else tgt), tgt
