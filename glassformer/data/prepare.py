"""`glassformer data prepare`: a corpus of any size -> token-id shards, streaming, in worker processes.

    glassformer data prepare --data books/ web.jsonl --tokenizer bpe --vocab-size 8000 --out corpus
    glassformer train lm --data corpus --out run

Inputs: text files (.txt, and any other name read as UTF-8 text), .jsonl (each line's "text"),
.parquet (its "text" column; needs pyarrow), directories (every such file below them, in
name order), globs, and Hugging Face `datasets` saved with `save_to_disk` or named `hf:NAME`
(`hf:NAME:SPLIT`; needs `datasets`, which reads its local cache when offline).

The corpus is read as a stream of chunks of about CHUNK_BYTES, cut between documents or
lines; a line over GLASSFORMER_MAX_LINE_CHARS characters (a text file's, or a .jsonl
document's) is refused after reading at most 4 bytes a character of it. A char tokenizer first
collects the corpus's characters (one pass); word and BPE tokenizers are trained on its first
`sample_bytes`. Worker processes encode the chunks in order, with at most 2 × workers chunks in
flight, so memory stays bounded whatever the corpus size; every k-th chunk (k = 1 /
val_fraction) goes to the validation split. Ids are appended to shards of at most
`shard_tokens` tokens (uint16, or uint32 for a vocabulary over 65536). After each chunk,
`prepare.json` records where the input stands and how many tokens each shard holds,
atomically: a killed run started again with the same arguments truncates the shards to what
was recorded and continues from there.

The output directory is held by one process at a time (its `.lock`, as a training run's). The
record names its tokenizer by SHA-256, and every read of it, here to continue a run or by
`train lm` and `eval lm`, checks it as a whole (glassformer.data.shards.read_record): no path in it
reaches outside the directory.
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import signal
import threading
from contextlib import closing, contextmanager
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Iterator

import numpy as np

from glassformer.base.files import atomic_write_text, writing
from glassformer.base.locks import LOCK_FILE, RunLock, remove_leftovers
from glassformer.data import prepare_worker
from glassformer.data.batches import LINE_LIMIT_ENV, MAX_LINE_CHARS, DataError, check_regular_file, env_limit, ids_dtype
from glassformer.data.shards import META, TOKENIZER, file_sha256, read_record, shard_name
from glassformer.data.tokenizers import SPECIALS, Tokenizer, load_tokenizer, train_tokenizer
from glassformer.model.config import LIMITS

CHUNK_BYTES = 4 << 20
TEXT_SUFFIXES = (".txt", ".text", ".md")
KINDS = ("char", "word", "bpe")
MAX_VAL_FRACTION = 0.5  # every second chunk: the most that alternating chunks can give the validation split
EMPTY_CORPUS = "--data: the corpus holds no text (its files are empty or blank)"
UTF8_MAX = 4  # bytes of one character, at most: a line of n characters is at most 4n bytes


# ---------------------------------------------------------------------------------------------
# Settings, checked before anything is read


def check_options(tokenizer: str, vocab_size: int | None, val_fraction: float, workers: int | None,
                  shard_tokens: int, sample_bytes: int, tokenizer_file: str | None = None) -> None:
    """Raises a one-line DataError, naming the option, for any setting out of range (before any work).

    Args:
        tokenizer, vocab_size, val_fraction, workers, shard_tokens, sample_bytes, tokenizer_file: as `prepare`.
    """
    if tokenizer not in KINDS:
        raise DataError(f"--tokenizer must be one of {', '.join(KINDS)}; got {tokenizer!r}")
    if not 0 < val_fraction <= MAX_VAL_FRACTION:  # NaN fails both comparisons
        raise DataError(f"--val-fraction must be more than 0 and at most {MAX_VAL_FRACTION} (every second chunk); "
                        f"got {val_fraction}")
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be at least 1; got {workers}")
    if shard_tokens < 1:
        raise DataError(f"--shard-tokens must be at least 1; got {shard_tokens}")
    if sample_bytes < 1:
        raise DataError(f"sample_bytes must be at least 1; got {sample_bytes}")
    if vocab_size is None:
        return
    if tokenizer_file is not None:
        raise DataError("--vocab-size: the vocabulary of --tokenizer-file is its own; leave --vocab-size out")
    if tokenizer == "char":
        raise DataError("--vocab-size: a char tokenizer's vocabulary is set by the text; leave it out")
    least = len(SPECIALS) + 1 if tokenizer == "word" else 256 + len(SPECIALS)  # a word, or every byte, and the specials
    most = LIMITS["vocab_size"][1]
    if not least <= vocab_size <= most:
        raise DataError(f"--vocab-size must be between {least} and {most:,} for a {tokenizer} tokenizer; "
                        f"got {vocab_size}")


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
            if not match.is_dir():
                check_regular_file(match)  # a FIFO or a device (/dev/zero) is refused before it is opened
            files = sorted(p for p in match.rglob("*") if p.is_file()) if match.is_dir() else [match]
            for f in files:
                kind = "jsonl" if f.suffix == ".jsonl" else "parquet" if f.suffix == ".parquet" else "text"
                if match.is_dir() and kind == "text" and f.suffix not in TEXT_SUFFIXES:
                    continue  # in a directory, only files that say they are text
                found.append((str(f), kind))
    if not found:
        raise DataError(f"--data: no .txt, .jsonl or .parquet files in {', '.join(paths)}")
    return found


def decode_chunk(raw: bytes, path: str, start: int) -> str:
    """UTF-8 text of the bytes at offset `start` of file `path`; one line naming the file and the byte
    offset for binary data (NUL bytes, refused as train lm refuses them) or another encoding."""
    if (nul := raw.find(b"\x00")) >= 0:
        raise DataError(f"{path} looks like a binary file (it contains NUL bytes, the first at offset {start + nul}), "
                        f"not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset "
                        f"{start + e.start})") from None


def long_line(path: str, offset: int, limit: int) -> DataError:
    return DataError(f"{path}: the line at byte {offset} is longer than {limit:,} characters; raise the limit with "
                     f"{LINE_LIMIT_ENV}=<characters>")


def check_lines(text: str, path: str, start: int, limit: int) -> None:
    """Refuses, naming its byte offset, a line of `text` (read from offset `start`) over `limit` characters."""
    if len(text) <= limit or max(map(len, text.split("\n"))) <= limit:  # the common case, at C speed
        return
    begin = 0
    while begin < len(text):
        end = text.find("\n", begin)
        end = len(text) if end < 0 else end
        if end - begin > limit:
            raise long_line(path, start + len(text[:begin].encode("utf-8")), limit)
        begin = end + 1


def text_chunks(path: str, start: int, size: int, line_limit: int) -> Iterator[tuple[str, int]]:
    """(text, the byte offset after it) chunks of a text file: `size` bytes, then the rest of the line.

    A line over `line_limit` characters is refused; at most 4 × line_limit bytes of it are read,
    so one line of gigabytes (or a file without newlines) is never held whole.
    """
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            block = f.read(size)
            if not block:
                return
            rest = f.readline(UTF8_MAX * line_limit + 1)  # finish the line, so that no chunk splits one
            if len(rest) > UTF8_MAX * line_limit:
                raise long_line(path, start + block.rfind(b"\n") + 1, line_limit)
            block += rest
            text = decode_chunk(block, path, start)
            check_lines(text, path, start, line_limit)
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


def jsonl_texts(path: str, start: int, line_limit: int) -> Iterator[tuple[str, int]]:
    """Each non-blank line's "text" from byte `start`, with the byte offset after its line; a line over
    `line_limit` characters is refused after reading at most 4 × line_limit bytes of it."""
    with open(path, "rb") as f:
        f.seek(start)
        while raw := f.readline(UTF8_MAX * line_limit + 1):
            if len(raw) > UTF8_MAX * line_limit:
                raise long_line(path, start, line_limit)
            line = decode_chunk(raw, path, start)
            if len(line) > line_limit + 1:  # + 1: its newline
                raise long_line(path, start, line_limit)
            begins, start = start, start + len(raw)
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError):
                raise DataError(f"{path}: the line at byte {begins} is not a JSON object with a \"text\" "
                                f"field") from None
            except ValueError as e:  # an integer of more digits than Python converts
                raise DataError(f"{path}: the line at byte {begins}: {e}") from None
            if not isinstance(text, str):
                raise DataError(f"{path}: \"text\" at byte {begins} is not a string")
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
    in chunks of about `size` bytes (`chunk_size`, which the run's record keeps). Lines are bounded
    by GLASSFORMER_MAX_LINE_CHARS (data.MAX_LINE_CHARS)."""
    first, offset = position
    line_limit = env_limit(LINE_LIMIT_ENV, MAX_LINE_CHARS)
    for index in range(first, len(inputs)):
        name, kind = inputs[index]
        start = offset if index == first else 0
        if kind == "text":
            parts = text_chunks(name, start, size, line_limit)
        elif kind == "jsonl":
            parts = grouped(jsonl_texts(name, start, line_limit), size)
        else:
            parts = grouped(row_texts(table_rows(name, kind, start), start), size)
        for text, end in parts:
            yield text, (index, end)


def input_size(inputs: list[tuple[str, str]]) -> int:
    """Bytes of the files (a dataset counts 0: its size is not known up front)."""
    return sum(os.path.getsize(name) for name, kind in inputs if kind != "dataset")


# ---------------------------------------------------------------------------------------------
# Workers


@contextmanager
def deaf_to_interrupts():
    """Processes started inside never see Ctrl-C: SIGINT is blocked meanwhile, and a started process
    inherits the mask (a Ctrl-C pressed in the meantime is delivered here afterwards). A terminal
    sends Ctrl-C to the whole process group; this process alone answers it, and stops the workers.
    multiprocessing's resource tracker is started first: starting it unblocks SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def parallel(function, items: Iterator, workers: int, setup: tuple = ()):
    """function(item) over items in order, in `workers` processes (in this one for workers <= 1);
    `setup` are the arguments of prepare_worker.start, run once in each process first.

    Item i goes to worker i % workers over that worker's own pipe, and a worker is sent its next
    item when a result comes back from it, so at most two items per worker are in flight and
    memory stays bounded whatever the corpus (a worker reads its second while it works on the
    first: prepare_worker.serve). Nothing is shared between the processes but the pipes (no locks
    or semaphores, on which multiprocessing.Pool's terminate can deadlock), and however the
    iteration ends (finished, an error, Ctrl-C, the generator closed) the workers are stopped.
    """
    if workers <= 1:
        if setup:
            prepare_worker.start(*setup)
        yield from map(function, items)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    processes, pipes = [], []
    try:
        with deaf_to_interrupts():
            for _ in range(workers):
                mine, theirs = context.Pipe()
                process = context.Process(target=prepare_worker.serve, args=(theirs, function, setup), daemon=True)
                process.start()
                theirs.close()
                processes.append(process)
                pipes.append(mine)
        items = iter(items)
        sent = received = 0
        while sent < 2 * workers and (item := next(items, None)) is not None:
            send(pipes[sent % workers], processes[sent % workers], item)
            sent += 1
        while received < sent:
            worker = received % workers
            result = receive(pipes[worker], processes[worker])
            received += 1
            if (item := next(items, None)) is not None:  # the next item for the worker that is free again
                send(pipes[worker], processes[worker], item)
                sent += 1
            yield result
    finally:
        for pipe in pipes:
            pipe.close()
        for process in processes:
            process.terminate()  # SIGTERM: a worker ignores only SIGINT
        for process in processes:
            process.join()


def worker_ended(process) -> DataError:
    process.join(1)
    return DataError(f"a data prepare worker process ended unexpectedly (exit status {process.exitcode})")


def send(pipe, process, item) -> None:
    """Sends a worker an item; one line if the worker is gone."""
    try:
        pipe.send(item)
    except OSError:
        raise worker_ended(process) from None


def receive(pipe, process):
    """A worker's next result; the exception it raised is raised here."""
    try:
        done, value = pipe.recv()
    except (EOFError, OSError):
        raise worker_ended(process) from None
    if not done:
        raise value
    return value


# ---------------------------------------------------------------------------------------------
# The tokenizer, the shards and the record that makes a run resumable


def make_tokenizer(inputs, chunk_bytes: int, kind: str, vocab_size: int | None, sample_bytes: int, workers: int,
                   progress) -> Tokenizer:
    """A char tokenizer from every character of the corpus; word/BPE trained on its first sample_bytes."""
    if kind == "char":
        chars: set[str] = set()
        with closing(parallel(prepare_worker.characters, chunks(inputs, chunk_bytes), workers)) as found_chars:
            for found, size in found_chars:
                chars.update(found)
                progress("characters", size)
        if not chars - set(" \t\r\n"):
            raise DataError(EMPTY_CORPUS)
        return train_tokenizer("char", "".join(sorted(chars)))
    sample, sampled = [], 0
    for text, _ in chunks(inputs, chunk_bytes):
        sample.append(text)
        sampled += len(text)
        if sampled >= sample_bytes:
            break
    if not any(text.strip() for text in sample):
        raise DataError(EMPTY_CORPUS)
    return train_tokenizer(kind, "".join(sample), vocab_size)


class ShardWriter:
    """Appends ids to a split's shards (`{split}_{n:04d}.bin`), starting a new one at `shard_tokens`.

    Shards are opened with O_NOFOLLOW: a symbolic link put in their place is refused, not written through.
    """

    def __init__(self, out: Path, split: str, dtype, shard_tokens: int, shards: list[dict]):
        self.out, self.split, self.dtype, self.limit = out, split, np.dtype(dtype), shard_tokens
        self.shards = shards  # [{"file", "tokens"}], the last one open; shared with the record

    def open(self, name: str, flags: int) -> int:
        try:
            return os.open(self.out / name, flags | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            raise DataError(f"{self.out / name}: cannot write the shard ({e.strerror})") from None

    def resume(self) -> None:
        """Cuts every shard back to the tokens the record says it holds (a kill may have written more)."""
        for shard in self.shards:
            fd = self.open(shard["file"], os.O_RDWR)
            try:
                os.ftruncate(fd, shard["tokens"] * self.dtype.itemsize)
            finally:
                os.close(fd)

    def write(self, ids: np.ndarray) -> None:
        while len(ids):
            new = not self.shards or self.shards[-1]["tokens"] >= self.limit
            if new:
                self.shards.append({"file": shard_name(self.split, len(self.shards)), "tokens": 0})
            shard = self.shards[-1]
            take = ids[: self.limit - shard["tokens"]]
            # A new shard starts empty: a killed run may have left a file of that name that it never recorded.
            fd = self.open(shard["file"], os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if new else os.O_APPEND))
            with writing(self.out / shard["file"]), open(fd, "wb", closefd=True) as f:  # a full disk: one line
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
            continued, a finished one is returned as it is, anything else there is refused. One
            process at a time writes it (its `.lock`; a second is refused with the first's pid).
        tokenizer: "char", "word" or "bpe".
        vocab_size: word/bpe vocabulary size (the tokenizer's default when None).
        val_fraction: the share of chunks that go to the validation split (every 1/val_fraction-th),
            more than 0 and at most 0.5.
        workers: encoding processes (default: the CPU count).
        shard_tokens: the most tokens a shard file holds.
        sample_bytes: how much of the corpus a word or BPE tokenizer is trained on.
        progress: show a progress bar on stderr (default: when stderr is a terminal).
        tokenizer_file: a glassformer tokenizer file to encode with, instead of training one.

    Returns:
        The record, as `read_record` gives it back.
    """
    check_options(tokenizer, vocab_size, val_fraction, workers, shard_tokens, sample_bytes, tokenizer_file)
    env_limit(LINE_LIMIT_ENV, MAX_LINE_CHARS)  # a malformed limit is refused before any work too
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory")
    inputs = find_inputs(data)
    workers = workers or os.cpu_count() or 1
    sig = signature(inputs, tokenizer_file or tokenizer, vocab_size, val_fraction, shard_tokens)
    created = not out.exists()
    lock = RunLock(out)
    lock.acquire()
    try:
        return _prepare(inputs, out, sig, tokenizer, vocab_size, workers, sample_bytes, progress, tokenizer_file)
    finally:
        lock.release()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run refused or stopped before it wrote anything leaves no directory behind


def _prepare(inputs, out: Path, sig: dict, tokenizer, vocab_size, workers, sample_bytes, progress,
             tokenizer_file) -> dict:
    """prepare's work, with `out`'s lock held."""
    meta_path = out / META
    if os.path.lexists(meta_path):
        record = read_record(out, finished=False)
        if record["signature"] != sig:
            raise DataError(f"{out} holds a preparation of other inputs or settings; choose another --out")
        if record["done"]:
            return record
        remove_leftovers(out)  # the temporary files of an atomic write that a kill cut short
    else:
        record = None
        kept = [e.name for e in out.iterdir() if e.name != LOCK_FILE and not is_leftover(e.name)]
        if kept:
            raise DataError(f"{out} is not empty (it holds {kept[0]}); choose a new directory for --out")
    bar = Progress(input_size(inputs), progress)
    try:
        if record is None:
            record = start_record(inputs, out, sig, tokenizer, vocab_size, workers, sample_bytes, bar,
                                  tokenizer_file)
        encode_corpus(inputs, out, sig, record, workers, bar)
    finally:
        bar.close()
    return record


def is_leftover(name: str) -> bool:
    """Whether `name` is a temporary file of glassformer.base.files.atomic_write (`.NAME.XXXX.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


def start_record(inputs, out: Path, sig: dict, tokenizer, vocab_size, workers, sample_bytes, bar,
                 tokenizer_file) -> dict:
    """Makes (or loads) the tokenizer, saves it in `out`, and writes the first record; returns it."""
    if tokenizer_file is not None:
        tok = load_tokenizer(tokenizer_file)
    else:
        tok = make_tokenizer(inputs, sig["chunk_bytes"], tokenizer, vocab_size, sample_bytes, workers, bar.advance)
    if tok.vocab_size > LIMITS["vocab_size"][1]:
        raise DataError(f"{tokenizer_file or 'the tokenizer'}: {tok.vocab_size:,} tokens, more than a model's "
                        f"vocabulary may hold ({LIMITS['vocab_size'][1]:,})")
    tok.save(out / TOKENIZER)
    record = {"signature": sig, "done": False, "position": [0, 0], "chunks": 0, "bytes": 0,
              "dtype": np.dtype(ids_dtype(tok.vocab_size)).name, "vocab_size": tok.vocab_size,
              "tokenizer_sha256": file_sha256(out / TOKENIZER), "shards": {"train": [], "val": []}}
    atomic_write_text(out / META, json.dumps(record, indent=1))
    return record


def encode_corpus(inputs, out: Path, sig: dict, record: dict, workers: int, bar) -> None:
    """Encodes the corpus from where `record` stands into the shards, updating the record after each chunk."""
    val_fraction = sig["val_fraction"]
    every = max(2, round(1 / val_fraction))  # chunk i goes to validation when i % every == every - 1
    writers = {split: ShardWriter(out, split, record["dtype"], sig["shard_tokens"], record["shards"][split])
               for split in ("train", "val")}
    for writer in writers.values():
        writer.resume()
    bar.restart("tokens", record["bytes"])
    items = chunks(inputs, sig["chunk_bytes"], tuple(record["position"]))
    encoded = parallel(prepare_worker.encode, items, workers, (str(out / TOKENIZER), record["dtype"]))
    with closing(encoded):  # an error or Ctrl-C here stops the workers before it goes on
        for ids, position, size in encoded:
            split = "val" if record["chunks"] % every == every - 1 else "train"
            writers[split].write(ids)
            record.update(position=list(position), chunks=record["chunks"] + 1, bytes=record["bytes"] + size)
            atomic_write_text(out / META, json.dumps(record, indent=1))  # after the ids: a kill loses no token
            bar.advance("tokens", size)
    if not record["shards"]["val"] or not record["shards"]["train"]:
        raise DataError(f"the corpus makes {record['chunks']} chunk(s) of about {sig['chunk_bytes']:,} bytes: too "
                        f"few for both splits; train on a small text with train lm --data FILE")
    record["done"] = True
    atomic_write_text(out / META, json.dumps(record, indent=1))


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
