"""Run directories protected: no silent clobber, one writer at a time, no leftovers.

A training command that starts a new run refuses a directory that already holds anything
(besides the token-id caches in data/, which are rebuilt from the text when they do not match)
unless it is told `--overwrite`; `--resume` continues the run that is there. While a run is
being written, the directory holds `.lock`, locked with flock(2) by the writing process and
holding its pid: a second writer is refused with that pid. The kernel drops the lock when its
process ends, however it ends, so a lock left by a killed process is taken over. Temporary files
that a killed process left (`.NAME.XXXX.tmp`, see glassformer.base.files) are removed when the next
writer starts.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glassformer.training.distributed import world_from_env

LOCK_FILE = ".lock"
CACHE_DIR = "data"  # token-id caches, keyed by a fingerprint of text and tokenizer (data.batches.cached_ids)
CACHE_FILES = ("train.bin", "train.json", "val.bin", "val.json")
# What a run writes; --overwrite removes these (and only these) before the new run starts.
RUN_FILES = ("config.json", "model.safetensors", "tokenizer.json", "source_tokenizer.json", "manifest.json",
             "resume.pt", "log.jsonl", "loss.png")


class RunLockedError(OSError):
    """Another live process is writing the run directory."""


def holds_a_run(path: Path) -> bool:
    """Whether directory `path` holds anything besides the lock and data/ with token-id caches alone."""
    if not path.is_dir():
        return False
    for entry in path.iterdir():
        if entry.name == CACHE_DIR and entry.is_dir():
            if any(not (f.name in CACHE_FILES or f.name.endswith(".tmp")) for f in entry.iterdir()):
                return True
        elif entry.name != LOCK_FILE:
            return True
    return False


class RunLock:
    """An exclusive flock(2) on `dir/.lock`, which holds the holder's pid while it is held.

    Args:
        directory: the run directory (created if missing).
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises RunLockedError naming the pid that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunLockedError(f"{self.path.parent} is being written by process {holder} "
                                     f"(lock {self.path}); wait for it to finish or stop it") from None
            # The holder we waited on may have removed the file as it released it: lock the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd

    def release(self) -> None:
        """Removes the lock file, then drops the lock."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def live_writer(directory: Path) -> int | None:
    """The pid written in `directory`'s lock file when that process is alive; None when nobody is writing."""
    try:
        pid = int((Path(directory) / LOCK_FILE).read_text(encoding="ascii").strip())
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (OSError, ValueError):  # no lock file, no pid in it yet, or its process is gone
        return None
    return pid


def remove_leftovers(directory: Path, min_age_s: float = 0.0) -> list[Path]:
    """Deletes the temporary files a killed writer left in `directory` and its data/; returns them.

    Args:
        directory: the run directory.
        min_age_s: keep temporary files modified less than this many seconds ago (under torchrun
            the other processes may be writing their token-id caches while process 0 starts).
    """
    removed, now = [], time.time()
    for folder in (directory, directory / CACHE_DIR):
        if folder.is_dir():
            for leftover in folder.glob(".*.tmp"):
                if leftover.is_file() and now - leftover.stat().st_mtime >= min_age_s:
                    leftover.unlink(missing_ok=True)
                    removed.append(leftover)
    return removed


@contextmanager
def run_directory(out, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Holds run directory `out` for one writer: refuses clobbering, takes the lock, removes leftovers.

    Under torchrun only process 0 does this (it is the process that writes the run's files; the
    others write only the token-id caches in data/, which do not make a directory hold a run).

    Args:
        out: the run directory.
        resume: the run in `out` is continued (it is expected to hold files).
        overwrite: a new run replaces whatever run `out` holds (its files in RUN_FILES are removed).

    Returns:
        A context manager yielding `out` as a Path; the lock is released when it exits.
    """
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run directory")
    if resume and not (out / "resume.pt").exists():
        raise ValueError(f"{out / 'resume.pt'} not found: nothing to resume (train without --resume to start)")
    if not world_from_env().main:
        yield out
        return
    created = not out.exists()
    lock = RunLock(out)
    lock.acquire()
    finished = False
    try:
        if not (resume or overwrite) and holds_a_run(out):
            raise ValueError(f"{out} already holds files; give --resume to continue the run there, "
                             f"or --overwrite to replace it with a new run")
        remove_leftovers(out, min_age_s=60.0 if world_from_env().distributed else 0.0)
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        yield out
        finished = True
    finally:
        lock.release()
        if created and not finished and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no directory behind
