"""Files written safely: atomically, never onto a file a run keeps, and with one line when the disk is full.

`atomic_write` writes a temporary file beside the target, then renames it over the target: a
process killed at any instant leaves either the old file or the new one, never half of one. A
write that fails because the filesystem is full (or the quota spent) raises `NoSpaceError`, one
line naming the filesystem and the file, and leaves the old file as it was.

`check_output` and `check_output_dir` guard the files and directories a user names for a
command's output (`--out`, `--json`, `--html`, `--png`): none of them may replace a file of a
checkpoint, a training run or a prepared-data directory, whatever the name it is given (symlinks
and `..` are resolved). Any other existing file is replaced, atomically, as a compiler replaces
its `-o` file and matplotlib its figure.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# A full disk, in one line

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How writers that are not Python's say it: Rust's io::Error (safetensors), C's strerror.
FULL_MESSAGE = re.compile(r"No space left on device|Disk quota exceeded|os error (28|122)\b")
# torch.save's stream writer reports a short write as "[enforce fail at inline_container.cc:...] unexpected pos"
# or "file write failed", without the errno: it is a full disk when the filesystem has no room left.
TORCH_WRITER = re.compile(r"inline_container\.cc|PytorchStreamWriter|file write failed")
NEARLY_FULL_BYTES = 1 << 20


class NoSpaceError(OSError):
    """A write that the filesystem had no room for; its errno is ENOSPC and its text one line:
    "no space left on DEVICE while writing FILE"."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def filesystem_of(path: str | os.PathLike) -> str:
    """The filesystem holding `path`, as a person finds it in `df`: its mount point and, where known, its source.

    Args:
        path: a file or directory (it need not exist: its nearest existing parent is used).

    Returns:
        "MOUNT_POINT (SOURCE)", e.g. "/home (/dev/sda2)", or the mount point alone.
    """
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    mount = Path(os.path.realpath(here))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:  # /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS ... - FSTYPE SOURCE SUPER_OPTIONS"
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return str(mount)
    source = None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        fields, rest = fields.split(), rest.split()
        if len(fields) >= 5 and len(rest) >= 2 and fields[4] == str(mount):
            source = rest[1]  # the last mount on a mount point is the one in effect
    return f"{mount} ({source})" if source and source != "none" else str(mount)


def is_disk_full(error: BaseException, directory: Path) -> bool:
    """Whether `error`, raised by a writer in `directory`, means the filesystem had no room."""
    if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
        return True
    message = str(error)
    if FULL_MESSAGE.search(message):
        return True
    if isinstance(error, RuntimeError) and TORCH_WRITER.search(message):
        try:
            stats = os.statvfs(directory)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES
    return False


def no_space(path: Path) -> NoSpaceError:
    return NoSpaceError(f"no space left on {filesystem_of(path.parent)} while writing {path}")


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Runs the block that writes `path`; a full filesystem in it becomes one NoSpaceError naming `path`.

    A torch.save that failed on anything but a full disk becomes an OSError naming `path` too:
    torch's own message names neither the file nor the cause.

    Args:
        path: the file the block writes (the name the user knows, not a temporary file's).
    """
    path = Path(path)
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as e:  # OSError; torch's RuntimeError; safetensors' SafetensorError, a bare Exception
        if is_disk_full(e, path.parent):
            raise no_space(path) from None
        if isinstance(e, RuntimeError) and TORCH_WRITER.search(str(e)):
            raise OSError(f"could not write {path}: {' '.join(str(e).split())}") from None
        raise


# ---------------------------------------------------------------------------------------------
# Atomic writes


def atomic_write(path: str | os.PathLike, write) -> None:
    """Calls write(tmp_path) for a temporary file beside `path`, then renames it over `path`.

    Args:
        path: the file to write (its directory is created if missing).
        write: a function that writes the whole file at the path it is given.

    Raises:
        NoSpaceError: the filesystem is full; `path` is as it was and the temporary file is removed.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        try:
            write(tmp)
            # mkstemp makes the file private (and some writers, safetensors among them, make their file anew):
            # give what was written the permissions of an ordinary file under the user's umask.
            os.chmod(tmp, 0o666 & ~umask)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            # Judged before the temporary file goes: removing it frees the space that tells a full disk.
            full = isinstance(e, Exception) and is_disk_full(e, path.parent)
            Path(tmp).unlink(missing_ok=True)
            if full:
                raise no_space(path) from None
            raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Appends `text` to `path` (a log); a full disk is one NoSpaceError (a line cut short may remain)."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# Outputs never replace what a run keeps

# Every file that a checkpoint, a training run or a prepared-data directory is made of. In a directory
# that holds one of them (`kept_kind`), these files are never an output's target.
KEPT_FILES = frozenset({
    "config.json", "model.safetensors", "tokenizer.json", "source_tokenizer.json", "manifest.json", "resume.pt",
    "log.jsonl", "loss.png", "prepare.json", ".lock",
    # Hugging Face model directories (read by `sample`, `explain`, written by `export`)
    "model.safetensors.index.json", "pytorch_model.bin", "tokenizer_config.json", "generation_config.json",
    "special_tokens_map.json", "vocab.json", "merges.txt",
})
KEPT_SUFFIXES = (".safetensors", ".bin")  # weight shards; token-id shards (train_0000.bin) of prepared data
CACHE_DIR, CACHE_FILES = "data", frozenset({"train.bin", "train.json", "val.bin", "val.json"})  # see rundir


def kept_kind(directory: str | os.PathLike) -> str | None:
    """What `directory` holds that its files are kept for, or None for an ordinary directory.

    Returns:
        "training run" (resume.pt or log.jsonl), "prepared-data directory" (prepare.json),
        "checkpoint" (manifest.json, or config.json beside weights), or None.
    """
    d = Path(directory)

    def has(name):
        return (d / name).is_file()

    if has("resume.pt") or has("log.jsonl"):
        return "training run"
    if has("prepare.json"):
        return "prepared-data directory"
    if has("manifest.json") or (has("config.json") and any(
            has(name) for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))):
        return "checkpoint"
    return None


def kept_by(real: Path) -> str | None:
    """The kind of directory whose file `real` (a resolved path) is, or None when no run keeps it."""
    if real.name in KEPT_FILES or real.name.endswith(KEPT_SUFFIXES):
        kind = kept_kind(real.parent)
        if kind is not None:
            return kind
    if real.name in CACHE_FILES and real.parent.name == CACHE_DIR and kept_kind(real.parent.parent) == "training run":
        return "training run"  # the run's token-id caches
    return None


def shown(path: str | os.PathLike, real: Path) -> str:
    """`path` as the user gave it, with what it resolves to when that is another name."""
    return str(path) if os.path.abspath(path) == str(real) else f"{path} (that is {real})"


def check_output(path: str | os.PathLike, option: str, may_replace: str | os.PathLike | None = None) -> Path:
    """Refuses an output file that would replace a file a run keeps; returns the file to write.

    Call it before any work. The rule for every output file: a file of a checkpoint, training run
    or prepared-data directory (KEPT_FILES, weight and token shards, the lock, in a directory that
    `kept_kind` recognises) is never replaced, whatever its name on the command line; a directory
    or a FIFO, device or socket is refused; any other existing file is replaced (atomically).

    Args:
        path: the file named on the command line.
        option: the option that named it (`--out`, `--json`), for the message.
        may_replace: one kept file the command may replace all the same (`plot loss` redrawing
            its own run's loss.png).

    Returns:
        The resolved path (symlinks followed): the output is written there, so a symlink's target
        is replaced as `cc -o` and `savefig` replace it, not the symlink itself.

    Raises:
        ValueError: one line naming the option, the file and why.
    """
    real = Path(os.path.realpath(path))
    if real.is_dir():
        raise ValueError(f"{option} {shown(path, real)} is a directory; give a file name")
    if real.exists() and not real.is_file():
        raise ValueError(f"{option} {shown(path, real)} is not a regular file (a FIFO, device or socket); "
                         f"give a file name")
    kind = kept_by(real)
    if kind is not None and not (may_replace is not None and real == Path(os.path.realpath(may_replace))):
        raise ValueError(f"{option} {shown(path, real)} is {real.name} of the {kind} in {real.parent}; "
                         f"outputs never replace a run's files: give another file name")
    return real


def check_output_dir(path: str | os.PathLike, option: str, own: str | None = None) -> Path:
    """Refuses an output directory that is a file, or a directory whose files a run keeps; returns it resolved.

    Args:
        path: the directory named on the command line (it need not exist).
        option: the option that named it, for the message.
        own: the kind of directory the command itself writes and may write again
            (`data prepare` resuming its "prepared-data directory", `export --overwrite` a "checkpoint").

    Raises:
        ValueError: one line naming the option, the path and why.
    """
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_dir():
        kind = kept_by(real)
        if kind is not None:
            raise ValueError(f"{option} {shown(path, real)} is {real.name} of the {kind} in {real.parent}, "
                             f"not a directory; give a new or empty directory")
        raise ValueError(f"{option} {shown(path, real)} is a file, not a directory")
    kind = kept_kind(real) if real.is_dir() else None
    if kind is not None and kind != own:
        raise ValueError(f"{option} {shown(path, real)} holds a {kind}; writing into it would replace its files: "
                         f"give a new or empty directory")
    return real
