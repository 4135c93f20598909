"""A directory `glassformer data prepare` wrote, read back: its record checked as a whole, its shards
as one sequence of ids.

Nothing in `prepare.json` is trusted. `read_record` checks every key and its type, the dtype
against the vocabulary size, the vocabulary size against the tokenizer's, the tokenizer file
against the SHA-256 the record holds, and each shard: its name must be exactly the one prepare
gives the n-th shard of its split (`train_0000.bin`, `val_0003.bin`), so that no recorded path
holds a separator, `..` or an absolute path, and it must be a regular file in the directory (a
symbolic link is refused, wherever it points) whose size is its token count times the id size.
The ids themselves are checked against the vocabulary as they are read (`Shards`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import numpy as np

from glassformer.base.reading import read_json
from glassformer.data.batches import DataError, check_regular_file, ids_dtype
from glassformer.data.tokenizers import Tokenizer, load_tokenizer
from glassformer.model.config import LIMITS

META = "prepare.json"
TOKENIZER = "tokenizer.json"
SPLITS = ("train", "val")
MAX_TOKENIZER_BYTES = 1 << 30
HASH_CHUNK = 1 << 20
# Every key of a record, and the JSON type its value must have (bool is not an int here).
KEYS = {"signature": dict, "done": bool, "position": list, "chunks": int, "bytes": int, "dtype": str,
        "vocab_size": int, "tokenizer_sha256": str, "shards": dict}
TYPE_NAMES = {dict: "an object", bool: "true or false", list: "a list", int: "a whole number", str: "a string"}


def shard_name(split: str, n: int) -> str:
    """The file name of a split's n-th shard: the only name a record may give it."""
    return f"{split}_{n:04d}.bin"


def file_sha256(path, limit: int = MAX_TOKENIZER_BYTES) -> str:
    """SHA-256 of a regular file of at most `limit` bytes, read in blocks."""
    path = Path(path)
    check_regular_file(path)
    if (size := path.stat().st_size) > limit:
        raise DataError(f"{path} is {size:,} bytes, more than {limit:,}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """SHA-256 of the file `tok.save` writes: the same for one tokenizer whatever file it was loaded
    from (a save of a loaded tokenizer gives back the same bytes), different for any other."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TOKENIZER
        tok.save(path)
        return file_sha256(path)


def check_same_tokenizer(tok: Tokenizer, name: str, out, record: dict) -> None:
    """Refuses, naming both, a tokenizer other than the one the shards of `out` were made with.

    Args:
        tok: the tokenizer that will read the ids (a run's, or a model's).
        name: where it comes from, for the message (a file, or a model directory).
        out: the prepared directory.
        record: its record (`read_record`).
    """
    mine, theirs = tokenizer_fingerprint(tok), record["tokenizer_sha256"]
    if mine != theirs:
        raise DataError(f"{name} and {Path(out) / TOKENIZER} are different tokenizers (SHA-256 {mine[:12]}... and "
                        f"{theirs[:12]}...): the shards' ids would be read as other tokens; prepare the data again "
                        f"with that tokenizer (data prepare --tokenizer-file)")


def has_type(value, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def check_entry(path: Path, key: str, value, kind: type, least: int | None = None) -> None:
    """Refuses, naming the file and the key, a value that is not of `kind` (or is below `least`)."""
    if not has_type(value, kind):
        raise DataError(f"{path}: key '{key}' must be {TYPE_NAMES[kind]}; got {json.dumps(value)[:80]}")
    if least is not None and value < least:
        raise DataError(f"{path}: key '{key}' must be at least {least}; got {value}")


def read_record(out, finished: bool = True) -> dict:
    """prepare.json of directory `out`, checked as a whole against the files beside it (see the module
    docstring); a one-line DataError naming the file and the key otherwise.

    Args:
        out: a directory `data prepare` wrote.
        finished: require a finished preparation (to read its shards); False also accepts one that
            was stopped (to continue it), whose shards may hold more than it recorded.

    Returns:
        The record.
    """
    out = Path(out)
    path = out / META
    record = read_json(path)  # a regular file, bounded, UTF-8, nesting bounded: one line naming it otherwise
    if not isinstance(record, dict):
        raise DataError(f"{path} does not hold a JSON object: not a record data prepare wrote")
    for key, kind in KEYS.items():
        if key not in record:
            raise DataError(f"{path}: key '{key}' is missing: not a record this glassformer's data prepare wrote; "
                            f"prepare the data again into a new --out")
        check_entry(path, key, record[key], kind, least=0 if kind is int else None)
    position = record["position"]
    if len(position) != 2:
        raise DataError(f"{path}: key 'position' must be [input, offset]; got {json.dumps(position)[:80]}")
    for i, value in enumerate(position):
        check_entry(path, f"position[{i}]", value, int, least=0)
    vocab_size, most = record["vocab_size"], LIMITS["vocab_size"][1]
    if not 1 <= vocab_size <= most:
        raise DataError(f"{path}: key 'vocab_size' must be between 1 and {most:,}; got {vocab_size}")
    dtype = np.dtype(ids_dtype(vocab_size)).name
    if record["dtype"] != dtype:
        raise DataError(f"{path}: key 'dtype' is {json.dumps(record['dtype'])[:40]}, but a vocabulary of "
                        f"{vocab_size:,} is stored as {dtype}")
    if not re.fullmatch(r"[0-9a-f]{64}", record["tokenizer_sha256"]):
        raise DataError(f"{path}: key 'tokenizer_sha256' must be 64 hexadecimal digits")
    if sorted(record["shards"]) != sorted(SPLITS):
        raise DataError(f"{path}: key 'shards' must hold exactly 'train' and 'val'")
    if finished and not record["done"]:
        raise DataError(f"{out} is an unfinished data prepare (stopped after {record['chunks']:,} chunks); run the "
                        f"same glassformer data prepare command again to finish it")
    check_shards(out, path, record)
    check_tokenizer(out, path, record)
    return record


def check_shards(out: Path, path: Path, record: dict) -> None:
    """Each shard's entry: its exact name, a regular file in `out`, of the size its token count gives."""
    itemsize = np.dtype(record["dtype"]).itemsize
    for split in SPLITS:
        entries = record["shards"][split]
        check_entry(path, f"shards.{split}", entries, list)
        for n, entry in enumerate(entries):
            key = f"shards.{split}[{n}]"
            if not isinstance(entry, dict) or sorted(entry) != ["file", "tokens"]:
                raise DataError(f"{path}: key '{key}' must be an object with 'file' and 'tokens'")
            name = shard_name(split, n)
            if entry["file"] != name:
                raise DataError(f"{path}: key '{key}.file' is {json.dumps(entry['file'])[:200]}; shard {n} of "
                                f"'{split}' must be the file {name} in {out}")
            check_entry(path, f"{key}.tokens", entry["tokens"], int, least=0)
            try:
                info = os.lstat(out / name)
            except FileNotFoundError:
                raise DataError(f"{path}: key '{key}.file': {out / name} is missing") from None
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
                raise DataError(f"{path}: key '{key}.file': {out / name} is not a regular file (a shard is never "
                                f"a symbolic link)")
            size, expected = info.st_size, entry["tokens"] * itemsize
            if size < expected or (record["done"] and size != expected):
                raise DataError(f"{path}: key '{key}.tokens' is {entry['tokens']:,} ({expected:,} bytes of "
                                f"{record['dtype']}), but {out / name} holds {size:,} bytes")
        if record["done"]:  # a finished preparation has both splits, and no shard it does not list
            if not entries:
                raise DataError(f"{path}: key 'shards.{split}' is empty, but a finished preparation has both splits")
            if os.path.lexists(out / shard_name(split, len(entries))):
                raise DataError(f"{path}: key 'shards.{split}' lists {len(entries)} shards, but "
                                f"{out / shard_name(split, len(entries))} is there too")


def check_tokenizer(out: Path, path: Path, record: dict) -> None:
    """The tokenizer file is the one the record names by its SHA-256, of the record's vocabulary size."""
    file = out / TOKENIZER
    if file_sha256(file) != record["tokenizer_sha256"]:
        raise DataError(f"{file} is not the tokenizer the shards were made with (its SHA-256 differs from key "
                        f"'tokenizer_sha256' in {path})")
    size = load_tokenizer(file).vocab_size
    if size != record["vocab_size"]:
        raise DataError(f"{path}: key 'vocab_size' is {record['vocab_size']:,}, but {file} has {size:,} tokens")


def is_prepared(path) -> bool:
    """Whether `path` is a directory that `data prepare` wrote to (finished or not)."""
    path = Path(path)
    return path.is_dir() and os.path.lexists(path / META)


class Shards:
    """A split's shards as one read-only sequence of ids: len(), integer-array indexing (windows,
    which may cross from one shard into the next) and slices, as data.random_windows needs.

    Every id read is checked against the record's vocabulary (the record's sizes and dtype cannot
    vouch for the values; the check costs a max() over the ids a batch reads), so a damaged shard
    is one line naming the file and the token instead of an index error inside the model.

    Args:
        out: a finished prepared directory.
        split: "train" or "val".
        record: its record, already read with `read_record` (read here when None).
    """

    def __init__(self, out, split: str, record: dict | None = None):
        self.out = Path(out)
        record = read_record(self.out) if record is None else record
        self.dtype, self.vocab_size = np.dtype(record["dtype"]), record["vocab_size"]
        kept = [s for s in record["shards"][split] if s["tokens"]]
        self.names = [s["file"] for s in kept]
        self.maps = [np.memmap(self.out / s["file"], dtype=self.dtype, mode="r", shape=(s["tokens"],)) for s in kept]
        self.starts = np.cumsum([0] + [len(m) for m in self.maps])  # (n + 1,)
        self.check = self.vocab_size < 2 ** (8 * self.dtype.itemsize)  # uint16 with 65,536 ids: every value is one

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index)
        flat = index.ravel()
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        values = np.empty(flat.shape, dtype=self.dtype)
        for s in np.unique(shard):
            rows = shard == s
            values[rows] = self.maps[s][flat[rows] - self.starts[s]]
        if self.check and values.size and values.max() >= self.vocab_size:
            bad = int(np.argmax(values >= self.vocab_size))
            s = int(shard[bad])
            raise DataError(f"{self.out / self.names[s]}: token {int(flat[bad] - self.starts[s]):,} is id "
                            f"{int(values[bad]):,}, outside the vocabulary of {self.vocab_size:,} that {META} "
                            f"records; the shard is damaged: prepare the data again")
        return values.reshape(index.shape)
