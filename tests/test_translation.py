"""Translation end to end on a tiny generated parallel corpus, and the bad inputs it must survive."""

import gzip
import json
import random

import pytest
import torch

from glassformer.cli import main
from glassformer.data.batches import collate
from glassformer.training.translation import bleu_chrf, bucket_batches, read_parallel

DE = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TINY = ["--set", "d_model=32", "--set", "n_head=2", "--set", "n_encoder_layers=1", "--set", "n_decoder_layers=1",
        "--set", "d_ff=64", "--set", "max_iters=400", "--set", "eval_interval=200", "--set", "warmup_iters=20",
        "--set", "batch_tokens=512", "--set", "learning_rate=3e-3", "--set", "dropout=0.0", "--set", "block_size=24",
        "--vocab-size", "300"]


def numbers(n, seed):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        digits = [rng.randrange(10) for _ in range(rng.randint(2, 5))]
        pairs.append((" ".join(DE[d] for d in digits), " ".join(EN[d] for d in digits)))
    return pairs


def write_pairs(folder, name, pairs, gz=False):
    src, tgt = folder / f"{name}.de", folder / f"{name}.en"
    for path, side in ((src, 0), (tgt, 1)):
        text = "\n".join(p[side] for p in pairs) + "\n"
        if gz:
            path = path.with_suffix(path.suffix + ".gz")
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path.write_text(text, encoding="utf-8")
    return (src.with_suffix(".de.gz"), tgt.with_suffix(".en.gz")) if gz else (src, tgt)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parallel")
    train = write_pairs(folder, "train", numbers(600, 0), gz=True)
    valid = write_pairs(folder, "valid", numbers(40, 1))
    return folder, train, valid


@pytest.fixture(scope="module")
def run_dir(corpus):
    folder, (tsrc, ttgt), (vsrc, vtgt) = corpus
    out = folder / "run"
    assert main(["train", "translation", "--train-src", str(tsrc), "--train-tgt", str(ttgt), "--valid-src", str(vsrc),
                 "--valid-tgt", str(vtgt), "--out", str(out), *TINY]) == 0
    return out


def test_training_learns_the_number_words(run_dir, corpus, capsys):
    folder, _, (vsrc, vtgt) = corpus
    assert main(["eval", "translation", "--model", str(run_dir), "--src", str(vsrc), "--ref", str(vtgt),
                 "--beam", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert set(result) == {"bleu", "chrf", "signature", "sentences"} and result["sentences"] == 40
    assert result["bleu"] > 60 and "nrefs:1" in result["signature"]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["bleu"] for r in log if "bleu" in r][-1] > 50


def test_translate_keeps_order_and_survives_unseen_text(run_dir, tmp_path, capsys):
    lines = ["eins zwei", "", "drei drei vier", "ünbekannt 猫 🐈 eins"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["translate", "--model", str(run_dir), "--input", str(tmp_path / "in.txt"), "--beam", "1"]) == 0
    out = capsys.readouterr().out.split("\n")[:-1]
    assert len(out) == 4 and out[0] == "one two" and out[1] == "" and out[2] == "three three four"


def test_mismatched_line_counts_name_both(tmp_path, capsys):
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    code = main(["train", "translation", "--train-src", str(tmp_path / "a.de"), "--train-tgt", str(tmp_path / "a.en"),
                 "--valid-src", str(tmp_path / "a.de"), "--valid-tgt", str(tmp_path / "a.en"), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "a.de has 2 lines" in err and "a.en has 1;" in err and "\n" not in err


def test_empty_lines_are_dropped_and_counted(tmp_path):
    (tmp_path / "a.de").write_text("eins\n\nzwei\ndrei\n")
    (tmp_path / "a.en").write_text("one\ntwo\n\nthree\n")
    notes = []
    pairs = read_parallel(tmp_path / "a.de", tmp_path / "a.en", notes.append)
    assert pairs == [("eins", "one"), ("drei", "three")]
    assert "dropped 2 pairs" in notes[0]


def test_non_utf8_source_is_an_error(run_dir, tmp_path, capsys):
    (tmp_path / "a.de").write_bytes(b"gr\xfc\xdfe\n")
    (tmp_path / "a.en").write_text("greetings\n")
    assert main(["eval", "translation", "--model", str(run_dir), "--src", str(tmp_path / "a.de"),
                 "--ref", str(tmp_path / "a.en")]) == 1
    assert "not UTF-8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not UTF-8"):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")


def test_long_sentences_are_truncated_with_a_notice(run_dir, tmp_path, capsys):
    long = " ".join(["eins"] * 60)
    (tmp_path / "in.txt").write_text(long + "\n")
    assert main(["translate", "--model", str(run_dir), "--input", str(tmp_path / "in.txt"), "--beam", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("one one") and "1 of 1 sentences are longer" in captured.err


def test_batches_respect_the_token_budget_and_padding():
    examples = [([5] * n + [2], [6] * m) for n, m in [(3, 4), (10, 9), (4, 4), (2, 1), (7, 8)]]
    batches = bucket_batches(examples, 24)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        src, src_mask, tgt_in, tgt_out = collate(examples, b, 0, 1, 2)
        assert src.numel() <= 24 or len(b) == 1
        assert torch.equal(src_mask, src != 0)
        assert (tgt_in[:, 0] == 1).all() and ((tgt_out == 2).sum(1) == 1).all()


def test_bleu_comes_from_sacrebleu():
    perfect = bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert "case:mixed" in perfect["signature"]
    assert bleu_chrf(["The cat"], ["the cat sat on the mat"])["bleu"] < 20


def test_translation_resume_equals_uninterrupted(corpus, tmp_path, monkeypatch):
    from glassformer.training.trainer import Trainer
    from glassformer.training.translation import train_translation

    _, (tsrc, ttgt), (vsrc, vtgt) = corpus
    settings = [a for a in TINY if a.startswith(("d_", "n_", "batch", "learning", "dropout", "block"))]
    settings += ["max_iters=60", "eval_interval=20", "warmup_iters=5", "dropout=0.1"]

    def run(out, resume=False):
        return train_translation(out, tsrc, ttgt, vsrc, vtgt, overrides=settings, vocab_size=300, resume=resume,
                                 progress=False)

    whole = run(tmp_path / "whole")
    original = Trainer.train_step

    def dying(self):  # killed at iteration 45, after the checkpoint of iteration 40 (mid-epoch)
        if self.iter == 45:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)
    assert resumed["bleu"] == pytest.approx(whole["bleu"], abs=1e-9) and resumed["epoch"] == whole["epoch"]
