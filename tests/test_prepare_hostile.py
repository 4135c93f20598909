"""`data prepare` and the directories it writes, used carelessly or with hostile intent: every case
is one line on stderr and a non-zero exit, never a traceback, never "internal error", and no file
inside or outside the directories changes. Then a property test that mutates prepare.json at
random, and two real processes: a second `data prepare` into one --out, and Ctrl-C with workers."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.base.locks import RunLock
from glassformer.cli import main
from glassformer.data.batches import LINE_LIMIT_ENV, MAX_LINE_CHARS
from glassformer.data.prepare import prepare
from glassformer.data.shards import META, Shards, read_record

TINY = ["--preset", "gpt-tiny", "--set", "max_iters=2", "--set", "eval_interval=2", "--set", "eval_iters=1",
        "--set", "block_size=8"]
LINES = [f"line {i}: the quick brown fox {'jumps ' * (i % 4)}over the lazy dog\n" for i in range(150)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A text corpus, a finished prepared directory of it (char tokenizer), an unfinished copy of that,
    a run trained on it, and a prepared directory of other text (another tokenizer)."""
    root = tmp_path_factory.mktemp("made")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("".join(LINES), encoding="utf-8")
    prepare([str(corpus)], root / "prepared", "char", workers=1, shard_tokens=2000, progress=False)  # 4 train shards
    other = root / "other.txt"
    other.write_text("".join(f"ZYXW {i} qv!\n" for i in range(300)), encoding="utf-8")
    prepare([str(other)], root / "other_prepared", "char", workers=1, progress=False)
    assert main(["train", "lm", "--data", str(root / "prepared"), "--out", str(root / "run"), *TINY]) == 0
    return root


@pytest.fixture
def case(made, tmp_path):
    """Fresh copies of the made directories, a victim file outside them, and their fingerprints."""
    for name in ("corpus", "prepared", "other_prepared", "run"):
        shutil.copytree(made / name, tmp_path / name, symlinks=True)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(made / "prepared", unfinished)
    record = json.loads((unfinished / META).read_text())
    record["done"] = False
    (unfinished / META).write_text(json.dumps(record))
    (tmp_path / "victim.txt").write_text("precious\n")
    return tmp_path


def snapshot(root: Path) -> dict:
    """Every file and link under root -> its bytes (a link: where it points)."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            found[p.relative_to(root)] = ("link", os.readlink(p))
        elif p.is_file():
            found[p.relative_to(root)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def edit_record(directory: Path, change) -> None:
    record = json.loads((directory / META).read_text())
    change(record)
    (directory / META).write_text(json.dumps(record))


def set_shard_file(value):
    def change(record):
        record["shards"]["train"][0]["file"] = value
    return change


def prepare_args(t: Path, out: str = "unfinished") -> list[str]:
    return ["data", "prepare", "--data", str(t / "corpus"), "--tokenizer", "char", "--workers", "1",
            "--out", str(t / out)]


def train_args(t: Path, data: str = "prepared", *extra) -> list[str]:
    return ["train", "lm", "--data", str(t / data), "--out", str(t / "new_run"), *TINY, *extra]


def eval_args(t: Path, data: str = "prepared") -> list[str]:
    return ["eval", "lm", "--model", str(t / "run"), "--data", str(t / data)]


def symlink_shard(t: Path, directory: str) -> None:
    shard = t / directory / "train_0000.bin"
    shard.unlink()
    shard.symlink_to(t / "victim.txt")


def huge_line(t: Path) -> None:
    """A line one character over the default limit (GLASSFORMER_MAX_LINE_CHARS, 1,048,576)."""
    (t / "corpus" / "b.txt").write_text("short\n" + "x" * (MAX_LINE_CHARS + 1) + "\nshort\n", encoding="utf-8")


def held_lock(t: Path):
    lock = RunLock(t / "unfinished")
    lock.acquire()
    return lock


# (id, setup(t) -> optional thing to release, argv(t), exit status, texts the one line must hold)
CASES = [
    # Item 1: recorded paths stay inside the directory.
    ("resume-dotdot-shard", lambda t: edit_record(t / "unfinished", set_shard_file("../victim.txt")),
     prepare_args, 1, ["prepare.json", "shards.train[0].file", "../victim.txt"]),
    ("resume-absolute-shard", lambda t: edit_record(t / "unfinished", set_shard_file(str(t / "victim.txt"))),
     prepare_args, 1, ["prepare.json", "shards.train[0].file", "victim.txt"]),
    ("resume-symlinked-shard", lambda t: symlink_shard(t, "unfinished"), prepare_args, 1,
     ["prepare.json", "shards.train[0].file", "not a regular file"]),
    ("train-dotdot-shard", lambda t: edit_record(t / "prepared", set_shard_file("../victim.txt")),
     train_args, 1, ["prepare.json", "shards.train[0].file", "../victim.txt"]),
    ("train-absolute-shard", lambda t: edit_record(t / "prepared", set_shard_file("/etc/passwd")),
     train_args, 1, ["shards.train[0].file", "/etc/passwd"]),
    ("train-symlinked-shard", lambda t: symlink_shard(t, "prepared"), train_args, 1, ["not a regular file"]),
    ("eval-dotdot-shard", lambda t: edit_record(t / "prepared", set_shard_file("../victim.txt")),
     eval_args, 1, ["shards.train[0].file"]),
    # Item 3: data prepare as documented, and safe.
    ("fifo-data", lambda t: os.mkfifo(t / "fifo"),
     lambda t: ["data", "prepare", "--data", str(t / "fifo"), "--out", str(t / "o")], 1, ["fifo", "FIFO"]),
    ("dev-zero-data", None, lambda t: ["data", "prepare", "--data", "/dev/zero", "--out", str(t / "o")], 1,
     ["/dev/zero", "character device"]),
    ("nul-bytes", lambda t: (t / "corpus" / "b.txt").write_bytes(b"fine text\nthen \x00 binary\n"),
     lambda t: ["data", "prepare", "--data", str(t / "corpus"), "--workers", "1", "--out", str(t / "o")], 1,
     ["b.txt", "NUL", "offset 15"]),
    ("huge-line", huge_line,
     lambda t: ["data", "prepare", "--data", str(t / "corpus" / "b.txt"), "--workers", "1", "--out", str(t / "o")],
     1, ["b.txt", "line at byte 6", LINE_LIMIT_ENV]),
    ("vocab-size-bpe-too-small", None, lambda t: [*prepare_args(t, "o"), "--tokenizer", "bpe", "--vocab-size", "100"],
     2, ["--vocab-size", "260"]),
    ("vocab-size-char", None, lambda t: [*prepare_args(t, "o"), "--vocab-size", "100"], 2, ["--vocab-size"]),
    ("vocab-size-with-tokenizer-file", None,
     lambda t: [*prepare_args(t, "o"), "--tokenizer", "bpe", "--vocab-size", "300", "--tokenizer-file",
                str(t / "run" / "tokenizer.json")], 2, ["--vocab-size", "--tokenizer-file"]),
    ("val-fraction-over-half", None, lambda t: [*prepare_args(t, "o"), "--val-fraction", "0.7"], 2,
     ["--val-fraction", "0.5"]),
    ("val-fraction-zero", None, lambda t: [*prepare_args(t, "o"), "--val-fraction", "0"], 2, ["--val-fraction"]),
    ("val-fraction-nan", None, lambda t: [*prepare_args(t, "o"), "--val-fraction", "nan"], 2, ["--val-fraction"]),
    ("workers-zero", None, lambda t: [*prepare_args(t, "o"), "--workers", "0"], 2, ["--workers"]),
    ("shard-tokens-zero", None, lambda t: [*prepare_args(t, "o"), "--shard-tokens", "0"], 2, ["--shard-tokens"]),
    ("out-is-a-file", None, lambda t: [*prepare_args(t, "o")[:-1], str(t / "victim.txt")], 1, ["victim.txt", "file"]),
    ("second-writer", held_lock, prepare_args, 1, ["being written by process", str(os.getpid())]),
    ("train-unfinished", None, lambda t: train_args(t, "unfinished"), 1,
     ["unfinished", "run the same glassformer data prepare command again"]),
    ("eval-unfinished", None, lambda t: eval_args(t, "unfinished"), 1, ["unfinished", "data prepare"]),
    ("train-plain-directory", None, lambda t: train_args(t, "corpus"), 1, ["without prepare.json"]),
    # Item 4: identity, not luck.
    ("resume-other-tokenizer", None,
     lambda t: ["train", "lm", "--data", str(t / "other_prepared"), "--out", str(t / "run"), "--resume", *TINY[:2],
                "--set", "max_iters=4"], 1, ["run/tokenizer.json", "other_prepared/tokenizer.json", "different"]),
    ("init-from-other-tokenizer", None,
     lambda t: ["train", "lm", "--data", str(t / "other_prepared"), "--out", str(t / "new_run"), "--init-from",
                str(t / "run"), *TINY], 1, ["--init-from", "other_prepared/tokenizer.json", "different"]),
    ("eval-other-tokenizer", None, lambda t: eval_args(t, "other_prepared"), 1, ["different tokenizers"]),
    ("replaced-tokenizer", lambda t: shutil.copy(t / "other_prepared" / "tokenizer.json", t / "prepared"),
     train_args, 1, ["prepared/tokenizer.json", "tokenizer_sha256"]),
    ("dtype-tampered", lambda t: edit_record(t / "prepared", lambda r: r.update(dtype="uint32")), train_args, 1,
     ["prepare.json", "'dtype'", "uint16"]),
    ("dtype-unknown", lambda t: edit_record(t / "prepared", lambda r: r.update(dtype="float64")), train_args, 1,
     ["'dtype'"]),
    ("tokens-over-file", lambda t: edit_record(t / "prepared", lambda r: r["shards"]["val"][0].update(tokens=10**9)),
     train_args, 1, ["shards.val[0].tokens", "bytes"]),
    ("tokens-negative", lambda t: edit_record(t / "prepared", lambda r: r["shards"]["val"][0].update(tokens=-1)),
     train_args, 1, ["shards.val[0].tokens", "at least 0"]),
    ("last-shard-dropped", lambda t: edit_record(t / "prepared", lambda r: r["shards"]["train"].pop()), train_args,
     1, ["'shards.train' lists 3 shards", "train_0003.bin is there too"]),
    ("split-emptied", lambda t: edit_record(t / "prepared", lambda r: r["shards"].update(val=[])), train_args, 1,
     ["'shards.val' is empty"]),
    ("key-missing", lambda t: edit_record(t / "prepared", lambda r: r.pop("vocab_size")), train_args, 1,
     ["prepare.json", "'vocab_size' is missing"]),
    ("vocab-size-lies", lambda t: edit_record(t / "prepared", lambda r: r.update(vocab_size=20)), train_args, 1,
     ["'vocab_size'", "tokens"]),
    ("not-an-object", lambda t: (t / "prepared" / META).write_text("[1, 2]"), train_args, 1, ["JSON object"]),
    ("nested-deep", lambda t: (t / "prepared" / META).write_text("[" * 200_000 + "]" * 200_000), train_args, 1,
     ["prepare.json", "nested more than 100 levels"]),
    ("not-utf8", lambda t: (t / "prepared" / META).write_bytes(b'{"done": "\xff"}'), train_args, 1,
     ["prepare.json", "UTF-8", "offset 10"]),
    ("record-is-a-fifo", lambda t: ((t / "prepared" / META).unlink(), os.mkfifo(t / "prepared" / META)),
     train_args, 1, ["prepare.json", "FIFO"]),
    ("ids-outside-vocabulary", lambda t: (t / "prepared" / "val_0000.bin").write_bytes(
        np.full(os.path.getsize(t / "prepared" / "val_0000.bin") // 2, 60000, dtype=np.uint16).tobytes()),
     eval_args, 1, ["val_0000.bin", "id 60,000", "outside the vocabulary"]),
    ("train-vocab-size-with-prepared", None, lambda t: train_args(t, "prepared", "--vocab-size", "50"), 1,
     ["--vocab-size", "prepared"]),
]


@pytest.mark.parametrize("name, setup, argv, status, texts", CASES, ids=[c[0] for c in CASES])
def test_each_hostile_case_is_one_line_and_changes_nothing(case, capsys, name, setup, argv, status, texts):
    held = setup(case) if setup is not None else None
    before = snapshot(case)
    capsys.readouterr()
    signal.alarm(60)  # a FIFO or device opened by mistake would block forever: fail instead
    try:
        code = main(argv(case))
    finally:
        signal.alarm(0)
        if isinstance(held, RunLock):
            held.release()
    err = capsys.readouterr().err
    assert code == status, err
    assert err.count("\n") == 1 and err.startswith("glassformer: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for text in texts:
        assert text in err, err
    after = snapshot(case)
    if isinstance(held, RunLock):
        after[Path("unfinished/.lock")] = before[Path("unfinished/.lock")]  # the test's own lock, now released
    assert after == before  # nothing inside or outside the directories changed, nothing was created


# ---------------------------------------------------------------------------------------------
# The README's own command, on text files, for every tokenizer


@pytest.mark.parametrize("tokenizer", [["bpe", "--vocab-size", "300"], ["word", "--vocab-size", "40"], ["char"]])
def test_the_documented_command_on_a_directory_of_text_files(tmp_path, monkeypatch, capsys, tokenizer):
    """`glassformer data prepare --data corpus/ --tokenizer bpe --vocab-size 2000 --out shards`, then
    train lm on the shards: the word and BPE samples were once read in chunks of 0 bytes."""
    corpus = tmp_path / "corpus"
    (corpus / "more").mkdir(parents=True)
    for i in range(3):
        (corpus / f"part{i}.txt").write_text("".join(LINES[i::3]), encoding="utf-8")
    (corpus / "more" / "notes.md").write_text("# notes\nthe lazy dog again\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", "--data", "corpus/", "--tokenizer", *tokenizer, "--workers", "1",
                 "--out", "shards"]) == 0
    out = capsys.readouterr().out
    record = read_record(tmp_path / "shards")
    tokens = {split: sum(s["tokens"] for s in record["shards"][split]) for split in ("train", "val")}
    assert tokens["train"] > 0 and tokens["val"] > 0 and f"{tokens['train']:,} training" in out
    if tokenizer[0] == "char":  # every character of the corpus, and nothing else, in the two splits
        text = "".join(LINES) + "# notes\nthe lazy dog again\n"
        assert record["vocab_size"] == len(set(text)) + 1  # + <unk>
    assert main(["train", "lm", "--data", "shards", "--out", "run", *TINY]) == 0
    assert main(["eval", "lm", "--model", "run", "--data", "shards"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["tokens"] == tokens["val"] - 1  # every validation token but the first is predicted


# ---------------------------------------------------------------------------------------------
# prepare.json mutated at random: a one-line error or the right shards, never anything else

HOSTILE_PATHS = ["../victim.txt", "/etc/passwd", "train_0000.bin/../../victim.txt", "./train_0000.bin",
                 "train_0001.bin", "val_0000.bin", "", "train_0000.bin\x00", "TRAIN_0000.BIN", "train_00000.bin"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(HOSTILE_PATHS) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def paths_in(value, prefix=()):
    """Every (path of keys and indices) into a JSON value, itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_in(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths_in(item, prefix + (i,))


@st.composite
def mutations(draw, record):
    """1-3 changes to a record: a key or item removed, a value replaced (hostile paths among them)."""
    record = json.loads(json.dumps(record))
    for _ in range(draw(st.integers(1, 3))):
        places = [p for p in paths_in(record) if p]
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        elif path[-1] == "file":
            parent[path[-1]] = draw(st.sampled_from(HOSTILE_PATHS))
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return record


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    (root / "a.txt").write_text("".join(LINES[:40]), encoding="utf-8")
    args = dict(tokenizer="char", val_fraction=0.25, workers=1, shard_tokens=300, progress=False)
    record = prepare([str(root / "a.txt")], root / "prepared", **args)
    ids = {split: Shards(root / "prepared", split)[:].copy() for split in ("train", "val")}
    return root, record, ids, args


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_randomly_mutated_record_is_a_one_line_error_or_the_right_shards(small_prepared, data):
    root, record, ids, args = small_prepared
    mutated = data.draw(mutations(record))
    if data.draw(st.booleans()):
        mutated["done"] = False  # also as an unfinished run, which data prepare continues
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "prepared"
        shutil.copytree(root / "prepared", out)
        (out / META).write_text(json.dumps(mutated), encoding="utf-8")
        victim = tmp / "victim.txt"
        victim.write_text("precious\n")
        outside = {k: v for k, v in snapshot(tmp).items() if k.parts[0] != "prepared"}
        try:
            checked = read_record(out)
        except ValueError as e:  # DataError: one line naming the file
            assert "\n" not in str(e) and str(out) in str(e)
        else:  # accepted: then it reads exactly the shards that were written
            for split in ("train", "val"):
                assert np.array_equal(Shards(out, split, checked)[:], ids[split])
        try:
            again = prepare([str(root / "a.txt")], out, **args)
        except (ValueError, OSError) as e:
            assert "\n" not in str(e)
        else:
            assert again["done"]
        assert {k: v for k, v in snapshot(tmp).items() if k.parts[0] != "prepared"} == outside


# ---------------------------------------------------------------------------------------------
# Real processes: two writers, and Ctrl-C with workers

SLOW = ("import time, glassformer.data.prepare as p; real = p.atomic_write_text; "
        "p.atomic_write_text = lambda path, text: (time.sleep(0.05), real(path, text)); "
        "from glassformer.cli import entry; entry()")


def slow_prepare(corpus: Path, out: Path, workers: int) -> subprocess.Popen:
    """`data prepare` in a new process group, slowed to 50 ms a record so that a test can catch it at work."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", SLOW, "data", "prepare", "--data", str(corpus), "--workers",
                             str(workers), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def wait_for_chunks(out: Path, process: subprocess.Popen, chunks: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads((out / META).read_text())["chunks"] >= chunks:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"data prepare did not get to chunk {chunks}: {process.communicate()}")


@pytest.fixture
def text_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(LINES * 4), encoding="utf-8")  # about 100 chunks: 5 s at 50 ms a record
    return path


def test_a_second_data_prepare_into_the_same_directory_is_refused(tmp_path, text_corpus):
    out = tmp_path / "shards"
    first = slow_prepare(text_corpus, out, workers=1)
    wait_for_chunks(out, first, 3)
    second = subprocess.run([sys.executable, "-m", "glassformer", "data", "prepare", "--data", str(text_corpus),
                             "--workers", "1", "--out", str(out)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert second.returncode == 1
    assert second.stderr == f"glassformer: error: {out} is being written by process {first.pid} (lock " \
                            f"{out / '.lock'}); wait for it to finish or stop it\n"
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0 and stderr == "", stderr
    alone = tmp_path / "alone"
    prepare([str(text_corpus)], alone, "char", workers=1, progress=False)
    for split in ("train", "val"):  # the first run's shards, as if it had been alone
        assert np.array_equal(Shards(out, split)[:], Shards(alone, split)[:])


def test_ctrl_c_with_workers_is_one_line_and_the_run_finishes_later(tmp_path, text_corpus):
    out = tmp_path / "shards"
    process = slow_prepare(text_corpus, out, workers=2)
    wait_for_chunks(out, process, 3)  # the encoding workers are at work
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr == "glassformer: interrupted\n"  # no worker traceback, no resource-tracker warning
    assert not read_record(out, finished=False)["done"]
    prepare([str(text_corpus)], out, "char", workers=2, progress=False)
    alone = tmp_path / "alone"
    prepare([str(text_corpus)], alone, "char", workers=1, progress=False)
    for split in ("train", "val"):
        assert np.array_equal(Shards(out, split)[:], Shards(alone, split)[:])
