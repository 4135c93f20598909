"""Bounded reads and bad text input: each gives one line on stderr naming the input, exit 1, no traceback.

Devices and FIFOs are refused before they are opened (a FIFO nobody writes to would block forever),
text above a size limit is refused without reading it all, a gzip file is bounded by its decompressed
size, and translate's standard input is checked like a file.
"""

import gzip
import http.server
import io
import json
import os
import sys
import threading

import pytest
import torch

import glassformer
from glassformer.cli import main
from glassformer.data import fetch as fetch_mod
from glassformer.data.batches import LINE_LIMIT_ENV, TEXT_LIMIT_ENV
from glassformer.data.tokenizers import WordTokenizer
from glassformer.model.config import Seq2SeqConfig
from glassformer.model.seq2seq import Seq2Seq


def run_cli(argv, capsys) -> tuple[int, str]:
    """Exit code and stderr of `glassformer argv`, asserting the error is one line without a traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("glassformer: error: ") and err.count("\n") == 1, err
    return code, err


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """A tiny untrained Seq2Seq saved with its word tokenizer: enough for translate to run."""
    tok = WordTokenizer.train("a b c d e f")
    config = Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, shared_vocab=True,
                           block_size=12, n_encoder_layers=1, n_decoder_layers=1, n_head=2, d_model=16, d_ff=32,
                           dropout=0.0, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(0)
    return glassformer.save(Seq2Seq(config).eval(), tmp_path_factory.mktemp("model"), tokenizer=tok)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_train_lm_refuses_a_device(tmp_path, capsys):
    code, err = run_cli(["train", "lm", "--data", "/dev/zero", "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "/dev/zero is a character device, not a regular file" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path, capsys, translator):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # nobody ever writes: opening it for reading would block
    code, err = run_cli(["train", "lm", "--data", str(fifo), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and f"{fifo} is a FIFO, not a regular file" in err
    code, err = run_cli(["translate", "--model", str(translator), "--input", str(fifo)], capsys)
    assert code == 1 and f"{fifo} is a FIFO" in err


def test_a_file_over_the_limit_names_its_size_and_the_way_to_raise_it(tmp_path, capsys, monkeypatch):
    data = tmp_path / "big.txt"
    data.write_text("hello world\n" * 100)
    monkeypatch.setenv(TEXT_LIMIT_ENV, "1000")
    code, err = run_cli(["train", "lm", "--data", str(data), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and f"{data} is 1200 bytes, more than 1000" in err and f"{TEXT_LIMIT_ENV}=" in err


def test_a_bad_limit_is_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "a.txt"
    data.write_text("hello\n")
    monkeypatch.setenv(TEXT_LIMIT_ENV, "lots")
    code, err = run_cli(["train", "lm", "--data", str(data), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and f"{TEXT_LIMIT_ENV} must be a positive whole number" in err


def test_a_gzip_bomb_is_bounded_by_its_decompressed_size(tmp_path, capsys, monkeypatch):
    bomb = tmp_path / "bomb.txt.gz"
    bomb.write_bytes(gzip.compress(b"a" * (20 << 20)))  # 20 MiB of text in about 20 KiB
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv(TEXT_LIMIT_ENV, str(1 << 20))
    code, err = run_cli(["train", "lm", "--data", str(bomb), "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and f"{bomb} decompresses to more than {1 << 20} bytes" in err


def test_a_too_long_line_names_its_number(tmp_path, capsys, monkeypatch, translator):
    src = tmp_path / "src.txt"
    src.write_text("a b\nc d\n" + "a " * 60 + "\n")
    monkeypatch.setenv(LINE_LIMIT_ENV, "100")
    code, err = run_cli(["translate", "--model", str(translator), "--input", str(src)], capsys)
    assert code == 1 and f"{src} line 3 is 120 characters long, more than 100" in err and LINE_LIMIT_ENV in err


@pytest.mark.parametrize("data, message", [
    ("café\n".encode("latin-1"), "standard input is not UTF-8 text (invalid byte 0xe9 at offset 3)"),
    (b"a b\x00\x01\x02", "standard input looks like a binary file (it contains NUL bytes, the first at offset 3)"),
])
def test_translate_refuses_bad_standard_input(capsys, monkeypatch, translator, data, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, err = run_cli(["translate", "--model", str(translator)], capsys)
    assert code == 1 and message in err


def test_translate_bounds_standard_input(capsys, monkeypatch, translator):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a b c\n" * 100)))
    monkeypatch.setenv(TEXT_LIMIT_ENV, "100")
    code, err = run_cli(["translate", "--model", str(translator)], capsys)
    assert code == 1 and "standard input holds more than 100 bytes" in err


def test_translate_reads_good_standard_input(capsys, monkeypatch, translator):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a b\nc d e\n")))
    assert main(["translate", "--model", str(translator)]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "error" not in err


@pytest.mark.parametrize("lines, message", [
    (['{"iter": 0, "train_loss": 1.0}', "not json at all", '{"iter": 1, "train_loss": 0.9}'],
     "line 2 is not a JSON record"),
    (['{"iter": 0, "train_loss": 1.0}', "[1, 2]", ""], "line 2 is not a JSON object"),
    (['{"iter": 0, "train_loss": "low"}'], "line 1 has train_loss without a numeric iter and train_loss"),
    (['{"iter": 0, "note": "started"}', '{"iter": 1, "train'], "has no loss records to plot"),
    ([], "is empty"),
])
def test_plot_loss_validates_the_log(tmp_path, capsys, lines, message):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(line + "\n" for line in lines))
    code, err = run_cli(["plot", "loss", "--run", str(tmp_path), "--out", str(tmp_path / "loss.png")], capsys)
    assert code == 1 and f"{log}" in err and message in err
    assert not (tmp_path / "loss.png").exists()


def test_plot_loss_skips_a_last_line_cut_short(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"iter": 0, "train_loss": 1.0}) + "\n" + '{"iter": 1, "tra')
    assert main(["plot", "loss", "--run", str(tmp_path), "--out", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").exists()


class Endless(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 5000 bytes and, when `length` is set, a Content-Length saying so."""

    length = False

    def do_GET(self) -> None:
        self.send_response(200)
        if self.length:
            self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"x" * 5000)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.mark.parametrize("length, message", [(True, "offers 5000 bytes for input.txt, more than 1000"),
                                             (False, "sent more than 1000 bytes for input.txt")])
def test_fetch_stops_a_download_over_the_limit(tmp_path, capsys, monkeypatch, length, message):
    handler = type("Handler", (Endless,), {"length": length})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("GLASSFORMER_DATA_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
        monkeypatch.setattr(fetch_mod, "MAX_DOWNLOAD_BYTES", 1000)
        code, err = run_cli(["data", "fetch", "shakespeare", "--dir", str(tmp_path)], capsys)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert code == 1 and message in err and "pass it directly" in err
    assert os.listdir(tmp_path / "shakespeare") == []  # the partial download is removed
