"""What `glassformer data prepare`'s worker processes run: encode a chunk, or list its characters.

Kept apart from glassformer.data.prepare so that a worker imports only the tokenizers and NumPy:
importing glassformer.data.batches would import torch, 2.6 s per process.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import threading

import numpy as np

from glassformer.data.tokenizers import Tokenizer, load_tokenizer

_tokenizer: Tokenizer | None = None
_dtype = None


def start(tokenizer_path: str | None = None, dtype: str | None = None) -> None:
    """Once per process: the tokenizer and the ids' dtype (none for a pass that only lists characters)."""
    global _tokenizer, _dtype
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: the processes are the parallelism
    if tokenizer_path is not None:
        _tokenizer, _dtype = load_tokenizer(tokenizer_path), np.dtype(dtype)


def serve(pipe, function, setup: tuple) -> None:
    """A worker process: ignores Ctrl-C (the parent answers it and stops the workers; a worker would
    print a KeyboardInterrupt traceback of its own), runs `start(*setup)`, then answers each item
    from `pipe` with (True, function(item)), or (False, the exception), until the pipe closes.

    A thread reads the next item while this one is worked on, so the parent can always send (it
    keeps at most two items in flight per worker) even while this process waits to send a result.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    start(*setup)
    inbox: queue.Queue = queue.Queue(maxsize=1)

    def read() -> None:
        while True:
            try:
                item = pipe.recv()
            except (EOFError, OSError):  # the parent closed its end: nothing more to do
                item = None
            inbox.put(item)
            if item is None:
                return

    threading.Thread(target=read, daemon=True).start()
    while (item := inbox.get()) is not None:
        try:
            answer = (True, function(item))
        except Exception as e:  # sent back to be raised in the parent, which names the input
            answer = (False, e)
        try:
            pipe.send(answer)
        except (EOFError, OSError):
            return
        except Exception as e:  # an exception that does not pickle: its type and message do
            pipe.send((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]} ({e})")))


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
