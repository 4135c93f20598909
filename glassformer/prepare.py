"""`glassformer data prepare`: a corpus of any size -> token-id shards, streaming, in worker processes.

    glassformer data prepare --data books/ web.jsonl --tokenizer bpe --vocab-size 8000 --out corpus
    glassformer train lm --data corpus --out run

Inputs: text files (.txt, and any other name read as UTF-8 text), .jsonl (each line's "text"),
.parquet (its "text" column; needs pyarrow), directories (every such file below them, in
name order), globs, and Hugging Face `datasets` saved with `save_to_disk` or named `hf:NAME`
(`hf:NAME:SPLIT`; needs `datasets`, which reads its local cache when offline).

The corpus is read as a stream of chunks of about CHUNK_BYTES, cut between documents or
lines. A char tokenizer first collects the corpus's characters (one pass); word and BPE
tokenizers are trained on its first `sample_bytes`. Worker processes encode the chunks in
order, with at most 2 × workers chunks in flight, so memory stays bounded whatever the
corpus size; every k-th chunk (k = 1 / val_fraction) goes to the validation split. Ids are
appended to shards of at most `shard_tokens` tokens (uint16, or uint32 for a vocabulary
over 65536). After each chunk, `prepare.json` records where the input stands and how many
tokens each shard holds, atomically: a killed run started again with the same arguments
truncates the shards to what was recorded and continues from there.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from . import prepare_worker
from .data import DataError, ids_dtype
from .files import atomic_write_text
from .tokenizers import Tokenizer, load_tokenizer, train_tokenizer

META = "prepare.json"
TOKENIZER = "tokenizer.json"
CHUNK_BYTES = 4 << 20
TEXT_SUFFIXES = (".txt", ".text", ".md")


# ---------------------------------------------------------------------------------------------
# Inputs: (name, kind) sources, each read as chunks that start at a resumable position


def find_inputs(paths: list[str]) -> list[tuple[str, str]]:
    """Files, directories (recursively) and globs -> [(path or hf: name, kind)] in a stable order."""
    found: list[tuple[str, str]] = []
    for given in paths:
        if given.startswith("hf:"):
            found.append((given, "dataset"))
            continue
        path = Path(given)
        if path.is_dir() and (path / "dataset_info.json").exists():  # datasets' save_to_disk
            found.append((str(path), "dataset"))
            continue
        matches = [Path(m) for m in sorted(glob.glob(given, recursive=True))] if any(c in given for c in "*?[") \
            else [path]
        if not matches or not all(m.exists() for m in matches):
            raise DataError(f"--data: {given} does not exist")
        for match in matches:
            files = sorted(p for p in match.rglob("*") if p.is_file()) if match.is_dir() else [match]
            for f in files:
                kind = "jsonl" if f.suffix == ".jsonl" else "parquet" if f.suffix == ".parquet" else "text"
                if match.is_dir() and kind == "text" and f.suffix not in TEXT_SUFFIXES:
                    continue  # in a directory, only files that say they are text
                found.append((str(f), kind))
    if not found:
        raise DataError(f"--data: no .txt, .jsonl or .parquet files in {', '.join(paths)}")
    return found


def text_chunks(path: str, start: int, size: int) -> Iterator[tuple[str, int]]:
    """(text, the byte offset after it) chunks of a text file, cut after a newline."""
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            block = f.read(size)
            if not block:
                return
            rest = f.readline()  # finish the line, so that no chunk splits one
            block += rest
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 text near byte {start + e.start}") from None
            start += len(block)
            yield text, start


def grouped(texts: Iterator[tuple[str, int]], chunk: int) -> Iterator[tuple[str, int]]:
    """(text, the position after it) pairs, each text followed by a newline, joined into chunks of
    at least `chunk` characters (the last one shorter), each with the position after its last text."""
    parts, size = [], 0
    for text, end in texts:
        parts.append(text + "\n")
        size += len(text)
        if size >= chunk:
            yield "".join(parts), end
            parts, size = [], 0
    if parts:
        yield "".join(parts), end


def jsonl_texts(path: str, start: int) -> Iterator[tuple[str, int]]:
    """Each non-blank line's "text" from byte `start`, with the byte offset after its line."""
    with open(path, "rb") as f:
        f.seek(start)
        for line in f:
            start += len(line)
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                raise DataError(f"{path}: a line near byte {start} is not a JSON object with a \"text\" "
                                f"field") from None
            if not isinstance(text, str):
                raise DataError(f"{path}: \"text\" near byte {start} is not a string")
            yield text, start


def row_texts(rows, start: int) -> Iterator[tuple[str, int]]:
    """Texts of a table's rows from row `start` (parquet, datasets), each with the row number after it."""
    for end, text in enumerate(rows, start + 1):
        if not isinstance(text, str):
            raise DataError(f"row {end - 1}: \"text\" is not a string")
        yield text, end


def table_rows(name: str, kind: str, start: int):
    """The "text" values of a parquet file or a datasets dataset, from row `start`."""
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            column = pq.read_table(name, columns=["text"]).column("text")
            return (column[i].as_py() for i in range(start, len(column)))
        import datasets

        if name.startswith("hf:"):
            dataset_name, _, split = name[3:].partition(":")
            data = datasets.load_dataset(dataset_name, split=split or "train")
        else:
            data = datasets.load_from_disk(name)
        return (data[i]["text"] for i in range(start, len(data)))
    except ImportError as e:
        raise DataError(f"--data {name}: reading it needs the optional package {e.name} "
                        f"(pip install pyarrow datasets)") from None
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise DataError(f"--data {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
                        f"(it needs a \"text\" column)") from None


def chunk_size(inputs: list[tuple[str, str]]) -> int:
    """CHUNK_BYTES, or less for a corpus under 100 of them, so that it still makes about 100 chunks
    (and a validation split): 10 kB chunks for tiny-shakespeare's 1 MB."""
    total = input_size(inputs)
    return min(CHUNK_BYTES, max(1, total // 100)) if total else CHUNK_BYTES


def chunks(inputs: list[tuple[str, str]], size: int,
           position: tuple[int, int] = (0, 0)) -> Iterator[tuple[str, tuple[int, int]]]:
    """(text, the position after it) for the whole corpus, from `position` (input index, offset),
    in chunks of about `size` bytes (`chunk_size`, which the run's record keeps)."""
    first, offset = position
    for index in range(first, len(inputs)):
        name, kind = inputs[index]
        start = offset if index == first else 0
        if kind == "text":
            parts = text_chunks(name, start, size)
        elif kind == "jsonl":
            parts = grouped(jsonl_texts(name, start), size)
        else:
            parts = grouped(row_texts(table_rows(name, kind, start), start), size)
        for text, end in parts:
            yield text, (index, end)


def input_size(inputs: list[tuple[str, str]]) -> int:
    """Bytes of the files (a dataset counts 0: its size is not known up front)."""
    return sum(os.path.getsize(name) for name, kind in inputs if kind != "dataset")


# ---------------------------------------------------------------------------------------------
# Workers


class Bounded:
    """An iterator that lets at most `limit` items out before `release` is called for one:
    Pool.imap reads its input as fast as it can, and would otherwise hold the whole corpus."""

    def __init__(self, items: Iterator, limit: int):
        self.items, self.slots = items, threading.Semaphore(limit)

    def __iter__(self):
        for item in self.items:
            self.slots.acquire()
            yield item

    def release(self) -> None:
        self.slots.release()


def parallel(function, items: Iterator, workers: int, setup: tuple = ()):
    """function(item) over items in order, in `workers` processes (in this one for workers <= 1);
    `setup` are the arguments of prepare_worker.start, run once in each process first."""
    if workers <= 1:
        if setup:
            prepare_worker.start(*setup)
        yield from map(function, items)
        return
    bounded = Bounded(items, 2 * workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    with context.Pool(workers, prepare_worker.start if setup else None, setup) as pool:
        for result in pool.imap(function, iter(bounded)):
            yield result
            bounded.release()


# ---------------------------------------------------------------------------------------------
# The tokenizer, the shards and the record that makes a run resumable


def make_tokenizer(inputs, size: int, kind: str, vocab_size: int | None, sample_bytes: int, workers: int,
                   progress) -> Tokenizer:
    """A char tokenizer from every character of the corpus; word/BPE trained on its first sample_bytes."""
    if kind == "char":
        if vocab_size is not None:
            raise DataError("--vocab-size: a char tokenizer's vocabulary is set by the text; leave it out")
        chars: set[str] = set()
        for found, size in parallel(prepare_worker.characters, chunks(inputs, size), workers):
            chars.update(found)
            progress("characters", size)
        return train_tokenizer("char", "".join(sorted(chars)))
    sample, size = [], 0
    for text, _ in chunks(inputs, size):
        sample.append(text)
        size += len(text)
        if size >= sample_bytes:
            break
    return train_tokenizer(kind, "".join(sample), vocab_size)


class ShardWriter:
    """Appends ids to a split's shards (`{split}_{n:04d}.bin`), starting a new one at `shard_tokens`."""

    def __init__(self, out: Path, split: str, dtype, shard_tokens: int, shards: list[dict]):
        self.out, self.split, self.dtype, self.limit = out, split, np.dtype(dtype), shard_tokens
        self.shards = shards  # [{"file", "tokens"}], the last one open; shared with the record

    def resume(self) -> None:
        """Cuts every shard back to the tokens the record says it holds (a kill may have written more)."""
        for shard in self.shards:
            path = self.out / shard["file"]
            with open(path, "r+b" if path.exists() else "w+b") as f:
                f.truncate(shard["tokens"] * self.dtype.itemsize)

    def write(self, ids: np.ndarray) -> None:
        while len(ids):
            if not self.shards or self.shards[-1]["tokens"] >= self.limit:
                self.shards.append({"file": f"{self.split}_{len(self.shards):04d}.bin", "tokens": 0})
            shard = self.shards[-1]
            take = ids[: self.limit - shard["tokens"]]
            with open(self.out / shard["file"], "ab") as f:
                f.write(take.astype(self.dtype, copy=False).tobytes())
            shard["tokens"] += len(take)
            ids = ids[len(take):]


def signature(inputs, kind: str, vocab_size, val_fraction: float, shard_tokens: int) -> dict:
    """What a resumed run must share with the one it continues: arguments, and the inputs' sizes and times."""
    files = [[name, os.path.getsize(name), os.path.getmtime(name)] if k != "dataset" else [name, None, None]
             for name, k in inputs]
    return {"inputs": files, "tokenizer": kind, "vocab_size": vocab_size, "val_fraction": val_fraction,
            "shard_tokens": shard_tokens, "chunk_bytes": chunk_size(inputs)}


def prepare(data: list[str], out, tokenizer: str = "char", vocab_size: int | None = None,
            val_fraction: float = 0.1, workers: int | None = None, shard_tokens: int = 1 << 28,
            sample_bytes: int = 64 << 20, progress: bool | None = None, tokenizer_file: str | None = None) -> dict:
    """Tokenizes a corpus into `out` (see the module docstring); returns the record (prepare.json).

    Args:
        data: files, directories, globs, dataset paths or hf: names.
        out: the output directory; an unfinished preparation there with the same arguments is
            continued, a finished one is returned as it is, anything else there is refused.
        val_fraction: the share of chunks that go to the validation split (every 1/val_fraction-th).
        workers: encoding processes (default: the CPU count).
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        tokenizer_file: a glassformer tokenizer file to encode with, instead of training one.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1; got {val_fraction}")
    out = Path(out)
    inputs = find_inputs(data)
    workers = workers or os.cpu_count() or 1
    sig = signature(inputs, tokenizer_file or tokenizer, vocab_size, val_fraction, shard_tokens)
    meta_path = out / META
    record = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if record is not None and record["signature"] != sig:
        raise DataError(f"{out} holds a preparation of other inputs or settings; choose another --out")
    if record is None and out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty; choose a new directory for --out")
    if record is not None and record["done"]:
        return record
    out.mkdir(parents=True, exist_ok=True)
    bar = Progress(input_size(inputs), progress)
    if record is None:
        if tokenizer_file is not None:
            tok = load_tokenizer(tokenizer_file)
        else:
            tok = make_tokenizer(inputs, sig["chunk_bytes"], tokenizer, vocab_size, sample_bytes, workers,
                                 bar.advance)
        tok.save(out / TOKENIZER)
        record = {"signature": sig, "done": False, "position": [0, 0], "chunks": 0, "bytes": 0,
                  "dtype": np.dtype(ids_dtype(tok.vocab_size)).name, "vocab_size": tok.vocab_size,
                  "shards": {"train": [], "val": []}}
        atomic_write_text(meta_path, json.dumps(record, indent=1))
    every = max(2, round(1 / val_fraction))  # chunk i goes to validation when i % every == every - 1
    writers = {split: ShardWriter(out, split, record["dtype"], shard_tokens, record["shards"][split])
               for split in ("train", "val")}
    for writer in writers.values():
        writer.resume()
    bar.restart("tokens", record["bytes"])
    items = chunks(inputs, sig["chunk_bytes"], tuple(record["position"]))
    for ids, position, size in parallel(prepare_worker.encode, items, workers,
                                        (str(out / TOKENIZER), record["dtype"])):
        split = "val" if record["chunks"] % every == every - 1 else "train"
        writers[split].write(ids)
        record.update(position=list(position), chunks=record["chunks"] + 1, bytes=record["bytes"] + size)
        atomic_write_text(meta_path, json.dumps(record, indent=1))  # after the ids: a kill loses no recorded token
        bar.advance("tokens", size)
    if not record["shards"]["val"] or not record["shards"]["train"]:
        raise DataError(f"the corpus makes {record['chunks']} chunk(s) of about {sig['chunk_bytes']:,} bytes: too "
                        f"few for both splits; train on a small text with train lm --data FILE")
    record["done"] = True
    atomic_write_text(meta_path, json.dumps(record, indent=1))
    bar.close()
    return record


class Progress:
    """Bytes read, their rate and the time left, on stderr (rich), when asked for or on a terminal."""

    def __init__(self, total: int, show: bool | None):
        import sys

        self.show = sys.stderr.isatty() if show is None else show
        self.total, self.bar, self.task = total or None, None, None
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()

    def restart(self, what: str, done: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(what, total=self.total, completed=done)

    def advance(self, what: str, size: int) -> None:
        if self.bar is not None:
            if self.task is None:
                self.restart(what, 0)
            self.bar.advance(self.task, size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------------------------
# Reading the shards back


class Shards:
    """A split's shards as one read-only sequence of ids: len(), integer-array indexing (windows,
    which may cross from one shard into the next) and slices, as data.random_windows needs."""

    def __init__(self, out, split: str):
        out = Path(out)
        record = json.loads((out / META).read_text())
        self.dtype = np.dtype(record["dtype"])
        self.maps = [np.memmap(out / s["file"], dtype=self.dtype, mode="r", shape=(s["tokens"],))
                     for s in record["shards"][split] if s["tokens"]]
        self.starts = np.cumsum([0] + [len(m) for m in self.maps])  # (n + 1,)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        flat = index.ravel()
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        values = np.empty(flat.shape, dtype=self.dtype)
        for s in np.unique(shard):
            rows = shard == s
            values[rows] = self.maps[s][flat[rows] - self.starts[s]]
        return values.reshape(index.shape)


def is_prepared(path) -> bool:
    """Whether `path` is a directory `prepare` finished."""
    meta = Path(path) / META
    return meta.is_file() and json.loads(meta.read_text()).get("done", False)
