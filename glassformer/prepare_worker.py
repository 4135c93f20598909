"""What `glassformer data prepare`'s worker processes run: encode a chunk, or list its characters.

Kept apart from glassformer.prepare so that a worker imports only the tokenizers and NumPy:
importing glassformer.data would import torch, 2.6 s per process.
"""

from __future__ import annotations

import itertools
import os
import signal

import numpy as np

from .tokenizers import Tokenizer, load_tokenizer

_tokenizer: Tokenizer | None = None
_dtype = None


def start(tokenizer_path: str | None = None, dtype: str | None = None) -> None:
    """Once per process: the tokenizer and the ids' dtype (none for a pass that only lists characters)."""
    global _tokenizer, _dtype
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the processes are the parallelism
    if tokenizer_path is not None:
        _tokenizer, _dtype = load_tokenizer(tokenizer_path), np.dtype(dtype)


def start_worker(*setup) -> None:
    """A worker process's start: Ctrl-C is the parent's to answer (it stops the pool), so a worker
    ignores SIGINT instead of printing a KeyboardInterrupt traceback of its own; then `start(*setup)`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    start(*setup)


def encode(item: tuple[str, tuple[int, int]]) -> tuple[np.ndarray, tuple[int, int], int]:
    """(text, position) -> (its ids, the position, its size in bytes).

    The text is encoded line by line and the ids concatenated: Hugging Face's BPE holds about
    150 bytes per token of one string it encodes (600 MB for a 4 MB chunk), a batch of lines
    a fraction of that. The ids equal the whole text's except where a line ends in spaces,
    which byte-level BPE then groups with the newline.
    """
    text, position = item
    rows = _tokenizer.encode_batch(text.splitlines(keepends=True))
    ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=_dtype, count=sum(map(len, rows)))
    return ids, position, len(text.encode("utf-8"))


def characters(item: tuple[str, tuple[int, int]]) -> tuple[str, int]:
    """(text, position) -> (its distinct characters, its size in bytes)."""
    text, _ = item
    return "".join(set(text)), len(text.encode("utf-8"))
