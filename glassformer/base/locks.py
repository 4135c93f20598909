"""One writer per directory: `DIR/.lock`, held with flock(2) by the writing process, holding its pid.

A second writer is refused with that pid. The kernel drops the lock when its process ends, however
it ends, so a lock left by a killed process is taken over. Used by training runs
(glassformer.training.rundir) and `data prepare` alike; a reader asks `live_writer` whether
somebody is writing. Temporary files that a killed writer left (`.NAME.XXXX.tmp`, see
glassformer.base.files) are removed by `remove_leftovers` when the next writer starts.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = ".lock"
CACHE_DIR = "data"  # a run's token-id caches (glassformer.data.batches.cached_ids), where a writer leaves tmp files too


class RunLockedError(OSError):
    """Another live process is writing the run directory."""


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
