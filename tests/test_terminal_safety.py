"""What the user typed and what files hold reach the terminal as plain text; Ctrl-C and a
pickled checkpoint end in one line. Issue 11's terminal cases."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import glassformer
from glassformer import GPT, GPTConfig
from glassformer.base.display import plain
from glassformer.cli import main
from glassformer.data.tokenizers import CharTokenizer

HOSTILE = "[/oops] [bold red]x[/bold red] [link=https://example.com]click[/link] \x1b]0;pwned\x07\x1b[2J\r\u202e"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An untrained GPT whose character vocabulary holds every character of HOSTILE."""
    out = tmp_path_factory.mktemp("runs") / "hostile"
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz " + HOSTILE)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=16))
    glassformer.save(model, out, tokenizer=tok)
    return out


def assert_plain(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text, repr(text[:200])


def test_plain_escapes_control_characters_but_newline_and_tab():
    assert plain("a\tb\nc") == "a\tb\nc"
    assert plain("\x1b[2J\r\x00\x7f\x9b\u202e\u2066 é 你好") == "\\x1b[2J\\x0d\\x00\\x7f\\x9b\\u202e\\u2066 é 你好"


def test_explain_prints_markup_and_escapes_in_the_text_literally(run, capsys):
    assert main(["explain", "--model", str(run), "--text", HOSTILE]) == 0
    out = capsys.readouterr().out
    assert_plain(out)
    assert "[/oops]" in out and "[bold red]x[/bold red]" in out and "[link=https://example.com]" in out
    assert "\\x1b]0;pwned\\x07" in out  # shown, not sent


def test_sample_shows_control_characters_of_the_prompt_and_generation_escaped(run, capsys):
    assert main(["sample", "--model", str(run), "--prompt", HOSTILE, "--max-new-tokens", "60"]) == 0
    out = capsys.readouterr().out
    assert_plain(out)
    assert "[bold red]x[/bold red]" in out and "\\x1b[2J" in out


def test_errors_show_control_characters_in_file_names_escaped(tmp_path, capsys):
    assert main(["sample", "--model", str(tmp_path / "no\x1b[2Jsuch")]) == 1
    err = capsys.readouterr().err
    assert_plain(err)
    assert err.count("\n") == 1 and "\\x1b[2J" in err


class Payload:
    """Anything that is not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


def test_a_pickled_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    config.to_json_file(tmp_path / "config.json")
    torch.save({"transformer.wte.weight": torch.zeros(20, 8), "payload": Payload()}, tmp_path / "pytorch_model.bin")
    assert main(["sample", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "pickled Python objects" in err and "safetensors" in err and "weights_only" not in err


@pytest.mark.parametrize("delay", [0.3, 1.5, 4.0])  # importing torch, setting up, training
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(tmp_path, delay):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "glassformer", "train", "lm", "--out", str(tmp_path / "run"),
               "--set", "max_iters=100000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1] == "glassformer: interrupted", err
    assert all(line.startswith("iter ") for line in lines[:-1]), err  # before it, only the run's progress


def test_a_pickled_resume_file_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lm", "--out", str(out), "--set", "max_iters=2", "--set", "eval_interval=1",
                 "--set", "eval_iters=1"]) == 0
    torch.save({"model": {}, "payload": Payload()}, out / "resume.pt")
    capsys.readouterr()
    assert main(["train", "lm", "--out", str(out), "--resume", "--set", "max_iters=4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickled Python objects" in err and "weights_only" not in err, err
