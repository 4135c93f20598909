"""Reading a file a user gave: every read of such a file (data, configs, tokenizers, templates, logs,
manifests, index files) goes through here.

The rules, one place for all of them:
- only a regular file is opened: a FIFO nobody writes to would block forever and a device
  (`/dev/zero`) never ends, so both are refused, from os.stat, before any open;
- each kind of file has a size bound (`Bound`), checked from its size and again while reading
  (the file may grow), raised with an environment variable named in the error;
- text is UTF-8 without NUL bytes, and an error gives the byte offset;
- JSON is nested at most MAX_JSON_DEPTH levels (Python's parser would recurse until
  RecursionError, and so would anything that walks or prints the result);
- a path read from a file stays inside its directory (`confined`).
Every failure is one DataError line naming the file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

READ_CHUNK = 1 << 20
MAX_JSON_DEPTH = 100  # configs nest 3-4 levels, a tokenizer.json about 8
TEXT_LIMIT_ENV = "GLASSFORMER_MAX_TEXT_BYTES"


class DataError(ValueError):
    """Input that cannot be used: missing, empty, binary, not UTF-8, too large, malformed or not a regular file."""


@dataclass(frozen=True)
class Bound:
    """The most bytes one kind of file may hold, and the environment variable that raises it.

    Attributes:
        default: the bound when the variable is unset.
        env: the variable's name (its value: a positive number of bytes).
        kind: how an error names this kind of file ("a JSON file").
    """

    default: int
    env: str
    kind: str

    def limit(self) -> int:
        return env_limit(self.env, self.default)


TEXT = Bound(1 << 30, TEXT_LIMIT_ENV, "a text input")  # after decompression, for .gz
JSON = Bound(64 << 20, "GLASSFORMER_MAX_JSON_BYTES", "a JSON or template file")
TOKENIZER = Bound(256 << 20, "GLASSFORMER_MAX_TOKENIZER_BYTES", "a tokenizer file")  # Qwen's is 7 MB


def env_limit(name: str, default: int) -> int:
    """A positive integer limit from environment variable `name`, or `default` when it is unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise DataError(f"{name} must be a positive whole number; got {value!r}")
    return limit


def check_regular_file(path) -> None:
    """Refuses, without opening it, anything but a regular file: a FIFO or a device could block or never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
        raise DataError(f"{path} is {kind}, not a regular file")


def too_large(name, limit: int, what: str = "holds", bound: Bound = TEXT) -> DataError:
    return DataError(f"{name} {what} more than {limit} bytes, the limit for {bound.kind}; "
                     f"raise it with {bound.env}=<bytes>")


def read_bounded(f, name, limit: int, what: str = "holds", bound: Bound = TEXT) -> bytearray:
    """At most `limit` bytes of binary stream `f`, read in chunks; one-line DataError when there are more."""
    raw = bytearray()
    while chunk := f.read(min(READ_CHUNK, limit + 1 - len(raw))):
        raw += chunk
        if len(raw) > limit:
            raise too_large(name, limit, what, bound)
    return raw


def decode_text(raw, name) -> str:
    """UTF-8 text from bytes; one-line DataError naming `name` for binary (NUL bytes) or other encodings."""
    if (nul := raw.find(b"\x00")) >= 0:
        raise DataError(f"{name} looks like a binary file (it contains NUL bytes, the first at offset {nul}), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def read_file(path, bound: Bound | None) -> bytes:
    """The bytes of a regular file, at most `bound`'s limit (None: no bound, for weights that are
    read whole by design); one-line DataError naming the file otherwise."""
    check_regular_file(path)
    if bound is None:
        return Path(path).read_bytes()
    limit = bound.limit()
    if (size := os.stat(path).st_size) > limit:
        raise DataError(f"{path} is {size} bytes, more than {limit}, the limit for {bound.kind}; "
                        f"raise it with {bound.env}=<bytes>")
    with open(path, "rb") as f:
        return bytes(read_bounded(f, path, limit, bound=bound))  # bounded again: the file may grow while it is read


def read_utf8(path, bound: Bound = JSON) -> str:
    """A regular file's text: at most `bound`'s limit, UTF-8 without NUL bytes (errors give the byte offset)."""
    return decode_text(read_file(path, bound), path)


# A JSON string (escapes included), and the brackets that nest
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of JSON text nest more than `limit` levels, brackets inside strings
    not counted."""
    if text.count("[") + text.count("{") <= limit:  # cannot nest deeper: no need to look
        return False
    depth = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        if depth > limit:
            return True
    return False


def parse_json(text: str | bytes, name):
    """The value of JSON `text` read from `name`; one-line DataError naming `name` when it is not JSON,
    not UTF-8 or nested more than MAX_JSON_DEPTH levels."""
    if isinstance(text, (bytes, bytearray)):
        text = decode_text(text, name)
    if too_deep(text):
        raise DataError(f"{name} is not valid JSON for glassformer: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except RecursionError:  # not reached after the depth check; kept so that no input can reach it
        raise DataError(f"{name} is not valid JSON for glassformer: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and integers longer than Python converts
        raise DataError(f"{name} is not valid JSON: {e}") from None


def read_json(path, bound: Bound = JSON):
    """The JSON value in a regular file of at most `bound`'s limit (see parse_json)."""
    return parse_json(read_utf8(path, bound), path)


def confined(directory: Path, name, source, key: str) -> Path:
    """directory / name, where `name` was read from file `source` under `key`: refused in one line
    unless it is a relative path that stays inside `directory`, symlinks resolved.

    A symlink out is allowed in one case, Hugging Face's cache: a snapshot directory
    (HUB/snapshots/REV) whose files are symlinks into HUB/blobs.
    """
    where = f"{source}: {key} is {name!r}"
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}; it must be a file name")
    parts = PurePosixPath(name).parts
    if os.path.isabs(name) or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise DataError(f"{where}, a path outside {directory}; a file it names must be inside that directory")
    path = Path(directory) / name
    real, base = path.resolve(), Path(directory).resolve()
    hub_blobs = base.parent.parent / "blobs" if base.parent.name == "snapshots" else None
    if not real.is_relative_to(base) and not (hub_blobs and real.is_relative_to(hub_blobs)):
        raise DataError(f"{where}, which leads outside {directory} (a symlink to {real}); "
                        f"a file it names must be inside that directory")
    return path
