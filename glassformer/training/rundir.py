"""Run directories protected: no silent clobber, one writer at a time, no leftovers.

A training command that starts a new run refuses a directory that already holds anything
(besides the token-id caches in data/, which are rebuilt from the text when they do not match)
unless it is told `--overwrite`; `--resume` continues the run that is there. While a run is
being written, the directory holds `.lock` (glassformer.base.locks): a second writer is refused
with the first one's pid, and what a killed writer left is removed when the next one starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glassformer.base.locks import CACHE_DIR, LOCK_FILE, RunLock, remove_leftovers
from glassformer.checkpoint import publish_again
from glassformer.training.distributed import world_from_env
from glassformer.weights import MANIFEST_FILE

CACHE_FILES = ("train.bin", "train.json", "val.bin", "val.json")
# What a run writes; --overwrite removes these (and only these) before the new run starts.
RUN_FILES = ("config.json", "model.safetensors", "tokenizer.json", "source_tokenizer.json", "manifest.json",
             "resume.pt", "log.jsonl", "loss.png")


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
        if resume and (differed := publish_again(out)) is not None:
            warnings.warn(f"{differed} did not match {out / MANIFEST_FILE}: the run's last writer was stopped while "
                          f"saving a checkpoint; the files it left are published as they are")
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        yield out
        finished = True
    finally:
        lock.release()
        if created and not finished and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no directory behind
