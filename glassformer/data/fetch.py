"""`glassformer data fetch NAME`: download a public data set into a local cache, checked by SHA-256.

Each file is streamed into a temporary file beside its final name, hashed on the way, and
renamed into place only when the hash matches, so the cache never holds a partial or
altered file. A file already in the cache with the right hash is not downloaded again,
which also means a copy placed there by hand is used as it is.

For tests and mirrors, `base_url` (or the environment variable GLASSFORMER_DATA_URL)
replaces each file's public URL with `base_url.rstrip("/") + "/" + filename`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from glassformer.base.files import atomic_write

TIMEOUT_S = 30  # per connect and per read; a stalled server fails instead of hanging forever
CHUNK = 1 << 16
MAX_DOWNLOAD_BYTES = 1 << 30  # the data sets are megabytes; a server sending without end is cut off here
ENV_CACHE = "GLASSFORMER_CACHE"
ENV_URL = "GLASSFORMER_DATA_URL"

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None when unknown)


class FetchError(OSError):
    """A download that failed; the message is one line and says how to go on without it."""


class ChecksumError(FetchError):
    """Downloaded bytes whose SHA-256 is not the one on record."""


class RemoteFile(NamedTuple):
    filename: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    name: str
    files: list[RemoteFile]
    about: str
    local_hint: str  # the command that uses the user's own copy instead of the download


_MULTI30K_RAW = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"

DATASETS: dict[str, Dataset] = {
    "shakespeare": Dataset(
        name="shakespeare",
        files=[
            RemoteFile(
                "input.txt",
                "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        ],
        about="tiny-shakespeare from char-rnn: 1,115,394 characters of plays, one file",
        local_hint="glassformer train lm --data /path/to/input.txt",
    ),
    "multi30k": Dataset(
        name="multi30k",
        files=[
            RemoteFile(f, _MULTI30K_RAW + f, sha)
            for f, sha in [
                ("train.de.gz", "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
                ("train.en.gz", "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
                ("val.de.gz", "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
                ("val.en.gz", "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
                ("test_2016_flickr.de.gz", "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
                ("test_2016_flickr.en.gz", "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
            ]
        ],
        about="Multi30k task 1, raw German-English image captions: 29,000 train, 1,014 val, 1,000 test pairs",
        local_hint="glassformer train translation --train-src /path/to/train.de.gz --train-tgt /path/to/train.en.gz",
    ),
}


def default_cache_dir() -> Path:
    """$GLASSFORMER_CACHE if set, else ~/.cache/glassformer."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "glassformer"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Makes sure every file of data set `name` is in `cache_dir/name`, verified; returns that directory.

    base_url (else $GLASSFORMER_DATA_URL) fetches each file from base_url + "/" + filename
    instead of its public URL; the checksums are the same either way.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    dataset = DATASETS[name]
    directory = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    directory.mkdir(parents=True, exist_ok=True)
    base_url = base_url or os.environ.get(ENV_URL) or None
    for file in dataset.files:
        dest = directory / file.filename
        if dest.exists() and sha256_of(dest) == file.sha256:
            continue
        url = base_url.rstrip("/") + "/" + file.filename if base_url else file.url
        atomic_write(dest, lambda tmp: _download_checked(url, Path(tmp), file, dataset, progress))
    return directory


def _download_checked(url: str, dest: Path, file: RemoteFile, dataset: Dataset, progress: Progress | None) -> None:
    """Streams url into dest; raises ChecksumError (and atomic_write removes dest) on a hash mismatch."""
    got = _download(url, dest, file.filename, dataset.local_hint, progress)
    if got != file.sha256:
        raise ChecksumError(
            f"checksum mismatch for {file.filename} from {url}: expected sha256 {file.sha256}, got {got}"
        )


def _download(url: str, dest: Path, filename: str, hint: str, progress: Progress | None) -> str:
    """Writes the body of url to dest and returns its SHA-256 hex digest."""
    digest = hashlib.sha256()
    done = 0
    # Only network failures become FetchError; a full disk stays the OSError it is.
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_DOWNLOAD_BYTES:
                raise FetchError(f"{url} offers {total} bytes for {filename}, more than {MAX_DOWNLOAD_BYTES}, "
                                 f"so it is not downloaded; if you have the file, pass it directly: {hint}")
            while chunk := response.read(CHUNK):
                if done + len(chunk) > MAX_DOWNLOAD_BYTES:
                    raise FetchError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes for {filename}, so it was "
                                     f"cut off; if you have the file, pass it directly: {hint}")
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        raise FetchError(
            f"could not download {filename} from {url} ({_reason(e)}); if you have the file, pass it directly: {hint}"
        ) from e
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    """A short, one-line cause: 'HTTP 404 Not Found', 'Connection refused', 'timed out'."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        return (reason.strerror or str(reason)) if isinstance(reason, OSError) else str(reason)
    return str(error) or type(error).__name__
