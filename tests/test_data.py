"""Reading text, the nanoGPT split, cached ids and batches; source ids, padding, the LM loss and evaluation."""

import gzip

import numpy as np
import pytest
import torch

from glassformer.data.batches import (
    SOURCE_TOKENIZER_FILE,
    DataError,
    cached_ids,
    check_length,
    collate,
    lm_eval_loss,
    lm_loss,
    load_translation_tokenizers,
    random_windows,
    read_text,
    right_pad,
    sequential_windows,
    source_ids,
    split_text,
)
from glassformer.data.tokenizers import CharTokenizer


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


def test_source_ids_are_cut_to_the_block_with_room_for_eos():
    assert source_ids([7, 8, 9], 8, 2) == [7, 8, 9, 2]
    assert source_ids(list(range(10, 30)), 8, 2) == [10, 11, 12, 13, 14, 15, 16, 2]  # block_size ids in all
    assert source_ids([], 8, 2) == [2]


def test_right_pad_pads_on_the_right_and_masks_the_padding():
    ids, mask = right_pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]] and ids.dtype == torch.long
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]


def test_collate_builds_decoder_input_and_targets():
    examples = [([5, 6, 2], [7, 8]), ([9, 2], [10, 11, 12])]
    src, src_mask, tgt_in, tgt_out = collate(examples, [1, 0], pad_id=0, bos_id=1, eos_id=2)
    assert src.tolist() == [[9, 2, 0], [5, 6, 2]] and src_mask.tolist() == [[True, True, False], [True] * 3]
    assert tgt_in.tolist() == [[1, 10, 11, 12], [1, 7, 8, 0]]
    assert tgt_out.tolist() == [[10, 11, 12, 2], [7, 8, 2, 0]]


def test_lm_eval_loss_weights_each_batch_by_its_tokens():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 11)  # five windows of four positions
    targets = torch.randint(0, 11, (5, 4))

    def model(x):
        return logits[x[:, 0]]  # each window's logits, found by the row index the window carries

    rows = torch.arange(5)[:, None].expand(5, 4)
    windows = [(rows[:3], targets[:3]), (rows[3:], targets[3:])]  # batches of 3 and 2 windows
    loss, count = lm_eval_loss(model, windows, "cpu")
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert count == 20 and loss == pytest.approx(expected.item(), rel=1e-6)
    assert lm_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="no tokens"):
        lm_eval_loss(model, [], "cpu")


def test_translation_tokenizers_are_one_when_joint_and_two_when_separate(tmp_path):
    tgt = CharTokenizer.train("hello")
    tgt.save(tmp_path / "tokenizer.json")
    src_tok, tgt_tok = load_translation_tokenizers(tmp_path)
    assert src_tok is tgt_tok and tgt_tok.encode("hello") == tgt.encode("hello")
    CharTokenizer.train("xyz").save(tmp_path / SOURCE_TOKENIZER_FILE)
    src_tok, tgt_tok = load_translation_tokenizers(tmp_path)
    assert src_tok.encode("xyz") == CharTokenizer.train("xyz").encode("xyz") and src_tok is not tgt_tok
