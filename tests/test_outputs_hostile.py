"""No output replaces what a user keeps, and a full disk is one line (issue 27, items 2 and 6).

Every option that writes a file (`plot attention --out`, `plot loss --out`, `explain --json/--html/--png`,
`export --out`) is pointed at the files of a run, a checkpoint and a prepared-data directory, by
name, through a symlink and through `..`: each is refused in one line naming the file, and every
file inside and outside those directories is byte-identical afterwards. An ordinary existing file
is replaced, atomically. Writes that meet a full filesystem end in "no space left on DEVICE while
writing FILE", with the file that was there intact and no temporary file left.
"""

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import glassformer
from glassformer.base import files
from glassformer.base.files import NoSpaceError, atomic_write, check_output, check_output_dir
from glassformer.checkpoint import load, save
from glassformer.cli import main
from glassformer.data.tokenizers import CharTokenizer
from glassformer.model.config import GPTConfig
from glassformer.model.gpt import GPT
from glassformer.weights import load_tensors_only

TEXT = "the cat sat on the mat. "


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A directory holding a training run (`run`), a prepared-data directory (`prep`) and a file of the user's.

    The run is built with checkpoint.save (a tiny GPT and its char tokenizer), with the files a
    trainer adds beside it: resume.pt, log.jsonl, loss.png and a token-id cache in data/.
    """
    root = tmp_path_factory.mktemp("place")
    run = root / "run"
    tok = CharTokenizer.train(TEXT * 4)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    save(model, run, tokenizer=tok)
    torch.save({"iter": torch.tensor(2)}, run / "resume.pt")
    (run / "log.jsonl").write_text("".join(json.dumps({"iter": i, "train_loss": 3.0 - i / 10}) + "\n"
                                           for i in range(1, 6)), encoding="utf-8")
    (run / "loss.png").write_bytes(b"\x89PNG the run's own figure")
    (run / "data").mkdir()
    (run / "data" / "train.bin").write_bytes(b"\x01\x00" * 8)
    prep = root / "prep"
    prep.mkdir()
    (prep / "prepare.json").write_text(json.dumps({"done": True, "shards": {"train": [
        {"file": "train_0000.bin", "tokens": 8}]}}), encoding="utf-8")
    (prep / "train_0000.bin").write_bytes(b"\x02\x00" * 8)
    tok.save(prep / "tokenizer.json")
    (root / "notes.txt").write_text("mine\n", encoding="utf-8")
    return root


def snapshot(directory: Path) -> dict:
    """Every file under `directory` (links as their targets' names) -> SHA-256 of its bytes."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_symlink():
            out[p.relative_to(directory)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[p.relative_to(directory)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("glassformer: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


# (argv with {run}, {prep}, {root} and {link} to fill, the text the one line must name). {link} is a
# symlink made beside the run, pointing at the file named in the row's last field.
REFUSED = [
    (["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{run}/model.safetensors"],
     "model.safetensors", None),
    (["plot", "loss", "--run", "{run}", "--out", "{run}/config.json"], "config.json", None),
    (["explain", "--model", "{run}", "--text", "the cat", "--json", "{run}/model.safetensors"],
     "model.safetensors", None),
    (["explain", "--model", "{run}", "--text", "the cat", "--html", "{run}/tokenizer.json"], "tokenizer.json", None),
    (["explain", "--model", "{run}", "--text", "the cat", "--patch", "the mat", "--png", "{run}/log.jsonl"],
     "log.jsonl", None),
    (["explain", "--model", "{run}", "--text", "the cat", "--json", "{run}/manifest.json"], "manifest.json", None),
    (["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{run}/resume.pt"], "resume.pt", None),
    (["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{run}/loss.png"], "loss.png", None),
    (["plot", "loss", "--run", "{run}", "--out", "{run}/.lock"], ".lock", None),
    (["explain", "--model", "{run}", "--text", "the cat", "--json", "{run}/data/train.bin"], "train.bin", None),
    # through `..` and through a symlink
    (["plot", "loss", "--run", "{run}", "--out", "{run}/data/../../run/model.safetensors"], "model.safetensors",
     None),
    (["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{link}"], "manifest.json",
     "run/manifest.json"),
    (["explain", "--model", "{run}", "--text", "the cat", "--html", "{link}"], "tokenizer.json",
     "run/tokenizer.json"),
    # a prepared-data directory
    (["explain", "--model", "{run}", "--text", "the cat", "--json", "{prep}/prepare.json"], "prepare.json", None),
    (["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{prep}/train_0000.bin"],
     "train_0000.bin", None),
    (["plot", "loss", "--run", "{run}", "--out", "{prep}/tokenizer.json"], "tokenizer.json", None),
    # directories
    (["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{run}"], "is a directory", None),
    (["export", "--model", "{run}", "--out", "{prep}", "--overwrite"], "prepared-data directory", None),
    (["export", "--model", "{run}", "--out", "{run}/config.json"], "config.json", None),
]


@pytest.mark.parametrize("argv, named, link", REFUSED, ids=[" ".join(r[0][:2]) + " " + r[0][-1] for r in REFUSED])
def test_an_output_never_replaces_a_file_a_run_keeps(place, capsys, argv, named, link):
    linked = place / "link"
    if link is not None:
        linked.symlink_to(place / link)
    try:
        before = snapshot(place)
        argv = [a.format(run=place / "run", prep=place / "prep", root=place, link=linked) for a in argv]
        code = main(argv)
        err = one_line(capsys)
        assert code == 1, err
        assert named in err, err
        assert snapshot(place) == before  # the run, the prepared data and the user's file, byte for byte
        assert not list(place.rglob(".*.tmp")) and not (place / "run" / ".lock").exists()
    finally:
        linked.unlink(missing_ok=True)
    model, tok = load(place / "run")  # and the run still loads
    assert tok.decode(tok.encode("the cat")) == "the cat"


def test_export_refuses_a_training_run_even_with_overwrite(place, tmp_path, capsys):
    other = tmp_path / "other"  # a second run, as train lm leaves one
    save(load(place / "run")[0], other)
    (other / "log.jsonl").write_text('{"iter": 1, "train_loss": 2.0}\n', encoding="utf-8")
    before = snapshot(other)
    assert main(["export", "--model", str(place / "run"), "--out", str(other), "--overwrite"]) == 1
    err = one_line(capsys)
    assert "holds a training run" in err and str(other) in err, err
    assert snapshot(other) == before


def test_a_fifo_is_no_output(tmp_path, capsys):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    assert main(["explain", "--json", str(fifo)]) == 1  # the built-in example: nothing to load
    assert "not a regular file" in one_line(capsys)
    assert fifo.is_fifo()


# ---------------------------------------------------------------------------------------------
# The rule for any other existing file: replaced, atomically


def test_an_ordinary_existing_file_is_replaced(place, tmp_path, capsys):
    run = place / "run"
    before = snapshot(place)
    png, js, html = tmp_path / "attn.png", tmp_path / "w.json", tmp_path / "w.html"
    for path in (png, js, html):
        path.write_text("an older output\n", encoding="utf-8")
    assert main(["plot", "attention", "--model", str(run), "--text", "the cat", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert main(["explain", "--model", str(run), "--text", "the cat", "--json", str(js), "--html", str(html)]) == 0
    assert json.loads(js.read_text(encoding="utf-8"))["steps"]  # the walkthrough's data, whole
    assert html.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert snapshot(place) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attn.png", "w.html", "w.json"]  # no temporary file
    capsys.readouterr()


def test_a_symlink_to_an_ordinary_file_is_written_through(place, tmp_path):
    target, link = tmp_path / "figures" / "loss.png", tmp_path / "latest.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert main(["plot", "loss", "--run", str(place / "run"), "--out", str(link)]) == 0
    assert link.is_symlink() and target.read_bytes().startswith(b"\x89PNG")


def test_plot_loss_redraws_its_own_runs_figure(place, capsys):
    """The run's loss.png is the one kept file `plot loss --run RUN` may replace: it draws it from RUN's own log."""
    run = place / "run"
    kept = {name: (run / name).read_bytes() for name in ("config.json", "model.safetensors", "log.jsonl")}
    old = (run / "loss.png").read_bytes()
    try:
        assert main(["plot", "loss", "--run", str(run), "--out", str(run / "loss.png")]) == 0
        assert (run / "loss.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert {name: (run / name).read_bytes() for name in kept} == kept
    finally:
        (run / "loss.png").write_bytes(old)  # the module's run as the other tests expect it
    capsys.readouterr()


def test_check_output_dir_lets_a_command_write_its_own_kind(place, tmp_path):
    assert check_output_dir(place / "prep", "--out", own="prepared-data directory") == place / "prep"
    assert check_output_dir(tmp_path / "new", "--out") == tmp_path / "new"
    with pytest.raises(ValueError, match="holds a training run"):
        check_output_dir(place / "run", "--out", own="prepared-data directory")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_output_dir(place / "notes.txt", "--out")
    # a file of the user's that happens to be called config.json, outside any run, is theirs to replace
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert check_output(tmp_path / "config.json", "--json") == tmp_path / "config.json"


# ---------------------------------------------------------------------------------------------
# A full disk


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path):
    path = tmp_path / "resume.pt"
    path.write_bytes(b"the previous checkpoint")

    def write(tmp):
        Path(tmp).write_bytes(b"half of a new")
        enospc()

    with pytest.raises(NoSpaceError) as caught:
        atomic_write(path, write)
    message = str(caught.value)
    assert message == f"no space left on {files.filesystem_of(tmp_path)} while writing {path}"
    assert "\n" not in message and os.path.ismount(message.split()[4])  # "no space left on MOUNT ..."
    assert path.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.pt"]


# torch.save's words for a write cut short, as it said them on a full tmpfs (torch 2.x)
TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def test_torch_save_short_write_is_a_full_disk_when_the_filesystem_is_full(tmp_path, monkeypatch):
    """torch.save says "unexpected pos" or "file write failed", not ENOSPC: the filesystem's free space decides."""
    path = tmp_path / "resume.pt"

    def write(tmp):
        Path(tmp).write_bytes(b"PK part of an archive")
        raise RuntimeError(TORCH_SHORT_WRITE)

    with pytest.raises(OSError) as caught:
        atomic_write(path, write)
    assert str(caught.value) == f"could not write {path}: {TORCH_SHORT_WRITE}"  # tmp_path has room: not "full"
    assert not isinstance(caught.value, NoSpaceError)

    class Full:  # what statvfs says of a full filesystem: a few blocks left
        f_bavail, f_frsize = 3, 4096

    monkeypatch.setattr(files.os, "statvfs", lambda path: Full())
    with pytest.raises(NoSpaceError, match=f"while writing {path}$"):
        atomic_write(path, write)
    assert not list(tmp_path.iterdir())


@pytest.fixture
def small_filesystem(tmp_path):
    """A 256 KiB tmpfs at tmp_path/small, where the machine lets this process mount one (root, no container limits)."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, timeout=30)


def test_real_writers_on_a_really_full_filesystem(small_filesystem):
    """torch.save, safetensors, matplotlib and an append each meet ENOSPC in their own way; each is one line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from glassformer.checkpoint import save_tensors

    mount = small_filesystem
    (mount / "resume.pt").write_bytes(b"the previous checkpoint")
    big = {"w": torch.zeros(100_000)}  # 400 KB: more than the whole filesystem
    fig = plt.figure(figsize=(20, 20))
    fig.gca().imshow(torch.rand(600, 600).numpy())  # noise: a PNG of megabytes
    writes = {"resume.pt": lambda path: atomic_write(path, lambda tmp: torch.save(big, tmp)),
              "model.safetensors": lambda path: save_tensors(big, path),
              "loss.png": lambda path: atomic_write(path, lambda tmp: fig.savefig(tmp, format="png")),
              "log.jsonl": lambda path: files.append_text(path, "x" * 400_000)}
    try:
        for name, write in writes.items():
            with pytest.raises(NoSpaceError) as caught:
                write(mount / name)
            assert str(caught.value) == f"no space left on {mount} (tmpfs) while writing {mount / name}"
            (mount / "log.jsonl").unlink(missing_ok=True)
    finally:
        plt.close(fig)
    assert (mount / "resume.pt").read_bytes() == b"the previous checkpoint"
    assert [p.name for p in mount.iterdir()] == ["resume.pt"]


def test_safetensors_and_log_appends_on_a_full_disk(tmp_path):
    from safetensors import SafetensorError

    def write(tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(NoSpaceError, match="model.safetensors$"):
        atomic_write(tmp_path / "model.safetensors", write)
    if Path("/dev/full").is_char_device():  # a real ENOSPC, from the kernel, at the append's flush (appending
        # replaces nothing: never hand a device to a writer that makes its file anew, as safetensors does)
        with pytest.raises(NoSpaceError, match="^no space left on .* while writing /dev/full$"):
            files.append_text("/dev/full", '{"iter": 1}\n')


FULL_EXPORTS = [
    ["plot", "loss", "--run", "{run}", "--out", "{out}/loss.png"],
    ["plot", "attention", "--model", "{run}", "--text", "the cat", "--out", "{out}/attn.png"],
    ["explain", "--model", "{run}", "--text", "the cat", "--json", "{out}/w.json"],
    ["explain", "--model", "{run}", "--text", "the cat", "--html", "{out}/w.html"],
    ["explain", "--model", "{run}", "--text", "the cat", "--patch", "the mat", "--png", "{out}/patch.png"],
]


@pytest.mark.parametrize("argv", FULL_EXPORTS, ids=[" ".join(a[:2]) + " " + a[-2] for a in FULL_EXPORTS])
def test_an_export_on_a_full_disk_is_one_line(place, tmp_path, capsys, monkeypatch, argv):
    argv = [a.format(run=place / "run", out=tmp_path) for a in argv]
    target = Path(argv[-1])
    target.write_bytes(b"the earlier output")
    monkeypatch.setattr(files.os, "fsync", enospc)  # the last step before the rename: everything was written
    assert main(argv) == 1
    err = one_line(capsys)
    assert err == f"glassformer: error: no space left on {files.filesystem_of(tmp_path)} while writing {target}\n"
    assert target.read_bytes() == b"the earlier output" and [p.name for p in tmp_path.iterdir()] == [target.name]


# In a process of its own: `train lm` whose second resume.pt meets a full disk. torch.save is replaced
# there by one that, from its second call, writes part of the file and then fails as a full disk's
# write() fails.
FULL_AT_SECOND_SAVE = r"""
import errno, sys, torch
real_save, calls = torch.save, []
def save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) >= 2:
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from glassformer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_keeps_its_first_checkpoint_when_the_disk_fills(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 200, encoding="utf-8")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(glassformer.__file__).parent.parent)}
    argv = ["train", "lm", "--data", str(corpus), "--out", str(run), "--preset", "gpt-tiny", "--set", "max_iters=2",
            "--set", "eval_interval=2", "--set", "eval_iters=1", "--set", "block_size=16"]
    done = subprocess.run([sys.executable, "-c", FULL_AT_SECOND_SAVE, *argv], capture_output=True, text=True,
                          env=env, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert err[-1] == f"glassformer: error: no space left on {files.filesystem_of(run)} while writing " \
                      f"{run / 'resume.pt'}", done.stderr
    assert not any("Traceback" in line or "internal error" in line for line in err), done.stderr
    # Checkpoints at iterations 0 (eval_first) and 2: the second resume.pt met the full disk, the first is whole
    state = load_tensors_only(run / "resume.pt")
    assert state["iter"] == 0
    model, tok = load(run)
    assert tok.decode(tok.encode("the cat")) == "the cat"
    assert not list(run.glob(".*.tmp"))
