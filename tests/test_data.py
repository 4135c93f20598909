"""Reading text, the nanoGPT split, cached ids and batches."""

import gzip

import numpy as np
import pytest
import torch

from glassformer.data import (
    DataError,
    cached_ids,
    check_length,
    random_windows,
    read_text,
    sequential_windows,
    split_text,
)
from glassformer.tokenizers import CharTokenizer


def test_split_is_nanogpts_last_ten_percent():
    text = "".join(chr(97 + i % 26) for i in range(1003))
    train, val = split_text(text, 0.1)
    n = len(text)
    assert train == text[: int(n * 0.9)] and val == text[int(n * 0.9):]
    assert split_text(text, 0.25)[1] == text[int(n * 0.75):]
    with pytest.raises(DataError):
        split_text(text, 0.0)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"  \n\n", "is empty"),
    (b"abc\x00\x01\x02def", "binary"),
    (b"caf\xe9 au lait", "not UTF-8"),
])
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="directory"):
        read_text(tmp_path)


def test_gzip_and_chinese_text(tmp_path):
    path = tmp_path / "zh.txt.gz"
    path.write_bytes(gzip.compress("我爱你\n你好".encode("utf-8")))
    assert read_text(path) == "我爱你\n你好"


def test_cached_ids_are_reused_only_for_same_text_and_tokenizer(tmp_path):
    tok = CharTokenizer.train("hello world")
    ids = cached_ids("hello", tok, tmp_path / "a.bin")
    assert ids.dtype == np.uint16 and list(ids) == tok.encode("hello")
    stamp = (tmp_path / "a.bin").stat().st_mtime_ns
    assert list(cached_ids("hello", tok, tmp_path / "a.bin")) == tok.encode("hello")
    assert (tmp_path / "a.bin").stat().st_mtime_ns == stamp  # not rewritten
    assert list(cached_ids("world", tok, tmp_path / "a.bin")) == tok.encode("world")  # text changed


def test_random_windows_are_shifted_pairs_from_the_data():
    ids = np.arange(1000, dtype=np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(ids, 16, 8, g)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(y, x + 1)  # consecutive ids: y is x shifted by one position
    assert (x[:, 1:] - x[:, :-1] == 1).all()
    x2, _ = random_windows(ids, 16, 8, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_sequential_windows_predict_every_token_once():
    ids = np.arange(103, dtype=np.uint16)
    targets = torch.cat([y.flatten() for _, y in sequential_windows(ids, 10, 4)])
    assert targets.tolist() == list(range(1, 103))


def test_corpus_shorter_than_a_block_is_an_error():
    with pytest.raises(DataError, match="fewer than block_size"):
        check_length(np.arange(30), 64, "validation")
