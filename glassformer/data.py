"""Data: text files -> token ids in memory-mapped arrays -> (x, y) batches.

Language modelling follows nanoGPT so figures compare: the last `val_fraction` of the
text (10% by default) is the validation split, and training batches are random windows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write, atomic_write_json


class DataError(ValueError):
    """Input data that cannot be used: missing, empty, binary, not UTF-8, too short."""


def read_text(path) -> str:
    """The file as text; .gz files are decompressed. One-line DataError for anything unusable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a text file")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is not a readable gzip file ({e})") from None
    if not raw.strip():
        raise DataError(f"{path} is empty")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """The first (1 - val_fraction) of the characters for training, the rest for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1; got {val_fraction}")
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def ids_dtype(vocab_size: int):
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
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, OSError):
            meta = {}
        if meta.get("fingerprint") == key and meta.get("dtype") == np.dtype(ids_dtype(tokenizer.vocab_size)).name:
            return np.memmap(path, dtype=ids_dtype(tokenizer.vocab_size), mode="r")
    ids = encode_to_file(text, tokenizer, path)
    atomic_write_json(meta_path, {"fingerprint": key, "dtype": np.dtype(ids.dtype).name, "tokens": len(ids)})
    return ids


def check_length(ids: np.ndarray, block_size: int, split: str) -> None:
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
