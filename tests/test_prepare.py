"""`data prepare`: shards that hold exactly the corpus, in both splits as documented; resumable
after a kill; read back across shard boundaries; trained on by `train lm`."""

import json

import numpy as np
import pytest

import glassformer.data.prepare as prepare_module
from glassformer.data import prepare_worker
from glassformer.data.batches import DataError
from glassformer.data.prepare import parallel, prepare
from glassformer.data.shards import Shards
from glassformer.data.tokenizers import load_tokenizer

LINES = [f"line {i}: the quick brown fox {'jumps ' * (i % 5)}over the lazy dog\n" for i in range(120)]


@pytest.fixture
def corpus(tmp_path):
    """60 lines in a text file, then 60 documents (one line each) in a .jsonl file, in one directory."""
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("".join(LINES[:60]))
    (d / "sub" / "b.jsonl").write_text("".join(json.dumps({"text": line[:-1]}) + "\n" for line in LINES[60:]))
    (d / "notes.bin").write_bytes(b"\xff\x00")  # not a text file: a directory's other files are left out
    return d


def split_text(out, split: str) -> str:
    return load_tokenizer(out / "tokenizer.json").decode(Shards(out, split)[:].tolist())


@pytest.mark.parametrize("workers", [1, 2])
def test_chunks_alternate_between_the_splits_and_hold_exactly_the_corpus(corpus, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 1)  # a chunk is one line (or one document)
    record = prepare([str(corpus)], tmp_path / "out", "char", val_fraction=0.5, workers=workers, progress=False)
    assert record["done"] and record["chunks"] == 120
    assert split_text(tmp_path / "out", "train") == "".join(LINES[0::2])  # chunk k is validation when k % 2 == 1
    assert split_text(tmp_path / "out", "val") == "".join(LINES[1::2])
    again = prepare([str(corpus)], tmp_path / "out", "char", val_fraction=0.5, workers=workers, progress=False)
    assert again == record  # a finished preparation is returned as it is


def test_a_killed_run_resumes_to_the_same_shards(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 1)
    args = dict(tokenizer="word", val_fraction=0.25, workers=1, shard_tokens=100, progress=False)
    whole = prepare([str(corpus)], tmp_path / "whole", **args)
    writes = {"n": 0}
    real = prepare_module.atomic_write_text

    def dies_after_40_records(path, text):
        writes["n"] += 1
        if writes["n"] == 40:
            raise KeyboardInterrupt  # as a kill between writing ids and recording them
        real(path, text)

    monkeypatch.setattr(prepare_module, "atomic_write_text", dies_after_40_records)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(corpus)], tmp_path / "killed", **args)
    monkeypatch.setattr(prepare_module, "atomic_write_text", real)
    killed = tmp_path / "killed"
    half = json.loads((killed / "prepare.json").read_text())
    assert not half["done"] and 0 < half["chunks"] < 120
    resumed = prepare([str(corpus)], killed, **args)
    assert resumed == whole
    for split in ("train", "val"):
        assert len(whole["shards"][split]) > 1  # several shards of at most 100 tokens
        for shard in whole["shards"][split]:
            assert (killed / shard["file"]).read_bytes() == (tmp_path / "whole" / shard["file"]).read_bytes()


def test_shards_read_back_across_their_boundaries(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 64)
    prepare([str(corpus)], tmp_path / "out", "char", val_fraction=0.1, workers=1, shard_tokens=97, progress=False)
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    whole = np.concatenate([np.fromfile(tmp_path / "out" / s["file"], dtype=record["dtype"])
                            for s in record["shards"]["train"]])
    shards = Shards(tmp_path / "out", "train")
    assert len(shards) == len(whole) and len(record["shards"]["train"]) > 3
    index = np.random.default_rng(0).integers(0, len(whole), size=(7, 33))
    assert np.array_equal(shards[index], whole[index])
    assert np.array_equal(shards[-5:], whole[-5:])


def test_bpe_over_parquet_and_a_saved_dataset(tmp_path):
    pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [line[:-1] for line in LINES]
    pq.write_table(pa.table({"text": texts[:70]}), tmp_path / "a.parquet")
    datasets.Dataset.from_dict({"text": texts[70:]}).save_to_disk(str(tmp_path / "ds"))
    prepare([str(tmp_path / "a.parquet"), str(tmp_path / "ds")], tmp_path / "out", "bpe", vocab_size=300,
            val_fraction=0.5, workers=1, progress=False)
    decoded = split_text(tmp_path / "out", "train") + split_text(tmp_path / "out", "val")
    assert sorted(decoded.splitlines()) == sorted(texts)  # byte-level BPE gives every document back


def test_train_lm_from_prepared_shards(corpus, tmp_path, monkeypatch):
    from glassformer.checkpoint import load
    from glassformer.training.lm import train_lm

    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 256)
    prepare([str(corpus)], tmp_path / "data", "char", val_fraction=0.2, workers=1, progress=False)
    metrics = train_lm(tmp_path / "run", data=str(tmp_path / "data"), preset="gpt-tiny",
                       overrides=["max_iters=3", "eval_interval=3", "eval_iters=1", "block_size=16"], progress=False)
    assert np.isfinite(metrics["val_loss"])
    model, tok = load(tmp_path / "run")
    assert tok.vocab_size == load_tokenizer(tmp_path / "data" / "tokenizer.json").vocab_size == model.config.vocab_size
    # The run kept the shards' tokenizer: resuming on them, and evaluating on their validation split, are accepted.
    resumed = train_lm(tmp_path / "run", data=str(tmp_path / "data"), resume=True,
                       overrides=["max_iters=4", "eval_interval=2"], progress=False)
    assert np.isfinite(resumed["val_loss"])
    from glassformer.training.lm import eval_lm

    metrics = eval_lm(tmp_path / "run", str(tmp_path / "data"), device="cpu")
    assert metrics["tokens"] == len(Shards(tmp_path / "data", "val")) - 1


def test_bad_inputs_are_one_line(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK_BYTES", 64)
    with pytest.raises(DataError, match="does not exist"):
        prepare([str(tmp_path / "missing.txt")], tmp_path / "o1", progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="is not empty"):
        prepare([str(corpus)], tmp_path / "full", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    with pytest.raises(DataError, match="bad.jsonl: the line at byte .* \"text\" field"):
        prepare([str(bad)], tmp_path / "o2", workers=1, progress=False)
    prepare([str(corpus)], tmp_path / "o3", "char", workers=1, progress=False)
    with pytest.raises(DataError, match="other inputs or settings"):
        prepare([str(corpus)], tmp_path / "o3", "word", workers=1, progress=False)
    with pytest.raises(DataError, match="--vocab-size"):
        prepare([str(corpus)], tmp_path / "o4", "char", vocab_size=10, workers=1, progress=False)


def test_parallel_keeps_order_bounds_what_is_in_flight_and_raises_a_workers_error(tmp_path):
    from glassformer.data.tokenizers import train_tokenizer

    tok = train_tokenizer("char", "0123456789\n")
    tok.save(tmp_path / "tok.json")
    setup = (str(tmp_path / "tok.json"), "uint16")
    taken, given = [0], [0]

    def items():
        for i in range(30):
            taken[0] += 1
            assert taken[0] - given[0] <= 2 * 2 + 1  # two per worker in flight, and the one being read
            yield f"{i}\n", (0, i)

    decoded = []
    for ids, position, size in parallel(prepare_worker.encode, items(), 2, setup):
        given[0] += 1
        decoded.append((position, tok.decode(ids)))
    assert decoded == [((0, i), f"{i}\n") for i in range(30)]  # in order, each chunk's own ids
    with pytest.raises(AttributeError):  # raised in a worker (None has no splitlines), raised again here
        list(parallel(prepare_worker.encode, iter([("1\n", (0, 0)), (None, (0, 1))]), 2, setup))
