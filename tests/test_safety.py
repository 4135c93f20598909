"""Runs are protected: no silent clobber, one writer per run, checkpoints published as sets, no leftovers."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import glassformer
from glassformer import checkpoint
from glassformer.base.locks import LOCK_FILE, RunLock
from glassformer.checkpoint import CheckpointError
from glassformer.cli import main
from glassformer.model.config import GPTConfig
from glassformer.model.gpt import GPT

TINY = ["--preset", "gpt-tiny", "--set", "max_iters=2", "--set", "eval_interval=2", "--set", "eval_iters=1",
        "--set", "block_size=16"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("".join(f"the cat number {i} sat on the mat.\n" for i in range(200)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    path = tmp_path_factory.mktemp("other") / "other.txt"
    path.write_text("".join(f"a dog called {i} ran to the park.\n" for i in range(200)), encoding="utf-8")
    return path


@pytest.fixture
def run_dir(tmp_path, corpus):
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus), "--out", str(out), *TINY]) == 0
    return out


def snapshot(directory):
    """Every file under `directory` -> its bytes."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def one_line_error(capsys, code, *expected):
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


# ---------------------------------------------------------------------------------------------
# Clobbering


def test_training_refuses_an_existing_run(run_dir, other, capsys):
    before = snapshot(run_dir)
    code = main(["train", "lm", "--data", str(other), "--out", str(run_dir), *TINY])
    one_line_error(capsys, code, str(run_dir), "--resume", "--overwrite")
    assert snapshot(run_dir) == before


def test_training_refuses_a_directory_of_the_users_files(tmp_path, corpus, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}\n')
    (out / "log.jsonl").write_text('{"my": "log"}\n')
    before = snapshot(out)
    one_line_error(capsys, main(["train", "lm", "--data", str(corpus), "--out", str(out), *TINY]), str(out))
    assert snapshot(out) == before


def test_translation_refuses_before_writing_its_source_tokenizer(run_dir, tmp_path, capsys):
    before = snapshot(run_dir)
    missing = str(tmp_path / "not-read.txt")  # refused before any input is read
    code = main(["train", "translation", "--train-src", missing, "--train-tgt", missing, "--valid-src", missing,
                 "--valid-tgt", missing, "--tokenizer", "separate", "--out", str(run_dir)])
    one_line_error(capsys, code, str(run_dir), "--resume", "--overwrite")
    assert snapshot(run_dir) == before


def test_overwrite_replaces_the_run(run_dir, other):
    assert main(["train", "lm", "--data", str(other), "--out", str(run_dir), "--overwrite", *TINY]) == 0
    meta = glassformer.checkpoint.read_json(run_dir / "config.json")
    assert meta["data"] == str(other.resolve())
    assert not (run_dir / LOCK_FILE).exists()


def test_resume_and_overwrite_together_are_refused(run_dir, capsys):
    code = main(["train", "lm", "--out", str(run_dir), "--resume", "--overwrite", *TINY])
    one_line_error(capsys, code, "--resume", "--overwrite")


def test_a_run_that_fails_before_writing_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "new"
    one_line_error(capsys, main(["train", "lm", "--data", str(tmp_path / "missing.txt"), "--out", str(out)]))
    one_line_error(capsys, main(["train", "lm", "--out", str(out), "--resume"]), "nothing to resume")
    assert not out.exists()


def test_export_refuses_its_source_and_a_non_empty_directory(run_dir, tmp_path, capsys):
    before = snapshot(run_dir)
    for flags in ([], ["--overwrite"]):
        code = main(["export", "--model", str(run_dir), "--out", str(run_dir), *flags])
        one_line_error(capsys, code, str(run_dir))
    assert snapshot(run_dir) == before
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine\n")
    one_line_error(capsys, main(["export", "--model", str(run_dir), "--out", str(full)]), str(full), "--overwrite")
    assert snapshot(full) == {full.joinpath("notes.txt").relative_to(full): b"mine\n"}
    assert main(["export", "--model", str(run_dir), "--out", str(full), "--overwrite"]) == 0
    assert main(["export", "--model", str(run_dir), "--out", str(tmp_path / "new")]) == 0
    glassformer.load(tmp_path / "new")


# ---------------------------------------------------------------------------------------------
# One writer


def start_writer(out, corpus):
    """A training process that runs until killed, once it holds the run's lock."""
    command = [sys.executable, "-m", "glassformer", "train", "lm", "--data", str(corpus), "--out", str(out),
               *TINY, "--set", "max_iters=1000000", "--set", "eval_interval=1"]
    writer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "resume.pt").exists():  # past the first checkpoint: it holds the lock and writes
        assert writer.poll() is None and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.1)
    return writer


def test_second_writer_is_refused_naming_the_first_and_a_killed_writer_leaves_nothing(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    writer = start_writer(out, corpus)
    try:
        for flags in (["--resume"], ["--overwrite"]):
            code = main(["train", "lm", "--data", str(corpus), "--out", str(out), *TINY, *flags])
            one_line_error(capsys, code, str(out), f"process {writer.pid}")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    # What a kill -9 in the middle of writing leaves: the stale lock and temporary files.
    assert (out / LOCK_FILE).exists()
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"half")
    (out / "data" / ".train.bin.x1y2.tmp").write_bytes(b"half")
    assert main(["train", "lm", "--out", str(out), "--resume", "--set", "max_iters=3"]) == 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / LOCK_FILE).exists()


def test_lock_names_its_holder_and_is_released(tmp_path):
    first = RunLock(tmp_path)
    first.acquire()
    with pytest.raises(OSError, match=f"process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    second = RunLock(tmp_path)
    second.acquire()
    second.release()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Checkpoint sets and file modes


def model(seed):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, n_embd=8))


def weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_a_reader_never_gets_parts_of_two_checkpoints(tmp_path):
    old, new = model(0), model(1)
    glassformer.save(old, tmp_path / "old")
    glassformer.save(new, tmp_path / "new")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tmp_path / "old", ckpt)
    lock = RunLock(ckpt)
    lock.acquire()  # a writer is at work: it has written the new weights, not yet the rest of the set
    shutil.copy(tmp_path / "new" / "model.safetensors", ckpt / "model.safetensors")

    def finish():
        time.sleep(0.3)
        for name in ("config.json", "manifest.json"):
            shutil.copy(tmp_path / "new" / name, ckpt / name)

    finisher = threading.Thread(target=finish)
    finisher.start()
    loaded, _ = glassformer.load(ckpt)  # waits for the whole new set
    finisher.join()
    lock.release()
    assert torch.equal(weights(loaded), weights(new))


def test_a_checkpoint_that_never_completes_is_refused(tmp_path, monkeypatch):
    glassformer.save(model(0), tmp_path)
    glassformer.save(model(1), tmp_path / "new")
    shutil.copy(tmp_path / "new" / "model.safetensors", tmp_path / "model.safetensors")
    lock = RunLock(tmp_path)
    lock.acquire()
    monkeypatch.setattr(checkpoint, "MANIFEST_WAIT_S", 0.2)
    with pytest.raises(CheckpointError, match=f"being written by process {os.getpid()}"):
        glassformer.load(tmp_path)
    lock.release()
    # With nobody writing, a file changed since the manifest is refused, naming it and the way to accept it;
    # removing the manifest (the user's explicit choice) loads the files as they are.
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'model.safetensors'} differs from the SHA-256 in "
                                              f".*if you changed it on purpose, remove {tmp_path / 'manifest.json'}"):
        glassformer.load(tmp_path)
    (tmp_path / "manifest.json").unlink()
    loaded, _ = glassformer.load(tmp_path)
    assert torch.equal(weights(loaded), weights(model(1)))


def test_every_file_gets_the_same_mode_under_the_umask(tmp_path, corpus):
    old = os.umask(0o027)
    try:
        out = tmp_path / "run"
        assert main(["train", "lm", "--data", str(corpus), "--out", str(out), *TINY]) == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(out): oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o640)}, modes


def test_resuming_after_a_writer_killed_mid_save_publishes_the_files_it_left(run_dir):
    # A kill between the weights and the manifest leaves a set the manifest does not describe; a
    # resumed run need not save a better checkpoint, so the run's next writer makes the set whole.
    from glassformer.training.rundir import run_directory
    from glassformer.weights import WEIGHTS_FILE, save_tensors

    model, _ = glassformer.load(run_dir)
    changed = {name: value + 1 for name, value in checkpoint.unique_state_dict(model).items()}
    save_tensors(changed, run_dir / WEIGHTS_FILE, metadata={"format": "pt"})  # what the killed writer got to
    with pytest.raises(CheckpointError, match="differs from the SHA-256"):  # no writer, no lock: refused
        glassformer.load(run_dir)
    with pytest.warns(UserWarning, match="published as they are"):
        with run_directory(run_dir, resume=True):
            pass
    loaded, _ = glassformer.load(run_dir)
    for name, value in checkpoint.unique_state_dict(loaded).items():
        assert torch.equal(value, changed[name])
