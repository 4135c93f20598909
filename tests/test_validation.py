"""Every file and setting is checked before it is trusted: one line naming the file, key and value, never a traceback.

Each case builds a tiny checkpoint in tmp_path, spoils one thing, runs the command and expects
exit 1 (a bad file or value) or 2 (bad usage) with exactly one line on stderr that names the key.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import glassformer
from glassformer.cli import main
from glassformer.data.tokenizers import BPETokenizer, CharTokenizer
from glassformer.model.config import GPTConfig, Seq2SeqConfig
from glassformer.model.gpt import GPT
from glassformer.model.seq2seq import Seq2Seq

TEXT = "abc cab bca\n" * 20


def tiny_gpt(path, vocab_size=8):
    """A one-layer GPT checkpoint with a character tokenizer of 4 ids (a, b, c, space... and <unk>)."""
    glassformer.save(GPT(GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)), path,
                     tokenizer=CharTokenizer.train("abc \n"))
    (path / "manifest.json").unlink()  # the cases edit files by hand
    return path


def tiny_seq2seq(path, tokenizer):
    cfg = Seq2SeqConfig(src_vocab_size=tokenizer.vocab_size, tgt_vocab_size=tokenizer.vocab_size, shared_vocab=True,
                        block_size=16, n_encoder_layers=1, n_decoder_layers=1, n_head=2, d_model=16, dropout=0.0)
    glassformer.save(Seq2Seq(cfg), path, tokenizer=tokenizer)
    (path / "manifest.json").unlink()
    return path


def edit_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def set_config(key, value):
    return lambda meta: meta["config"].__setitem__(key, value)


def edit_tensor(path, name, change):
    tensors = load_file(str(path / "model.safetensors"))
    tensors[name] = change(tensors[name])
    save_file(tensors, str(path / "model.safetensors"))


def expect_one_line(capsys, code, got, *words):
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def nan_at_0(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


CONFIG_CASES = [  # (what to change in config.json, words the error names)
    ("n_layer string", set_config("n_layer", "1"), ["config.json", "n_layer", "'1'", "integer"]),
    ("n_head float", set_config("n_head", 2.0), ["n_head", "2.0", "integer"]),
    ("huge vocab", set_config("vocab_size", 30_000_000), ["vocab_size", "30000000", "1000000"]),
    ("negative layers", set_config("n_layer", -3), ["n_layer", "-3"]),
    ("bool width", set_config("n_embd", True), ["n_embd", "True"]),
    ("nan init_std", set_config("init_std", float("nan")), ["init_std", "nan"]),
    ("zero vocab", set_config("vocab_size", 0), ["config.json", "vocab_size", "0"]),
    ("no config key", lambda meta: meta.pop("config"), ["config.json", "'config'"]),
    ("config not an object", lambda meta: meta.__setitem__("config", [1]), ["config.json", "'config'"]),
]


@pytest.mark.parametrize("change,words", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_json(tmp_path, capsys, change, words):
    model = tiny_gpt(tmp_path / "m")
    edit_json(model / "config.json", change)
    expect_one_line(capsys, 1, main(["sample", "--model", str(model), "--max-new-tokens", "2"]), *words)


TENSOR_CASES = [
    ("int weights", lambda t: t.to(torch.int32), ["tok_emb.weight", "int32"]),
    ("bool weights", lambda t: t > 0, ["tok_emb.weight", "bool"]),
    ("uint8 weights", lambda t: t.to(torch.uint8), ["tok_emb.weight", "uint8"]),
    ("nan weights", nan_at_0, ["tok_emb.weight", "NaN"]),
    ("inf weights", lambda t: t + float("inf"), ["tok_emb.weight", "infinite"]),
]


@pytest.mark.parametrize("change,words", [c[1:] for c in TENSOR_CASES], ids=[c[0] for c in TENSOR_CASES])
def test_bad_weights(tmp_path, capsys, change, words):
    model = tiny_gpt(tmp_path / "m")
    edit_tensor(model, "tok_emb.weight", change)
    expect_one_line(capsys, 1, main(["sample", "--model", str(model), "--max-new-tokens", "2"]),
                    "model.safetensors", *words)


def test_half_precision_weights_load(tmp_path):
    model = tiny_gpt(tmp_path / "m")
    edit_tensor(model, "tok_emb.weight", lambda t: t.to(torch.bfloat16))
    loaded, _ = glassformer.load(model)
    assert loaded.tok_emb.weight.dtype == torch.float32


def test_tokenizer_larger_than_model(tmp_path, capsys):
    model = tiny_gpt(tmp_path / "m", vocab_size=4)  # the tokenizer has 6 ids
    line = expect_one_line(capsys, 1, main(["sample", "--model", str(model)]), "tokenizer.json", "config.json")
    assert "6" in line and "4" in line


def test_smaller_tokenizer_is_fine(tmp_path):
    _, tok = glassformer.load(tiny_gpt(tmp_path / "m", vocab_size=64))
    assert tok.vocab_size == 6


SET_CASES = [
    ("block_size=0", ["block_size", "0"]),
    ("init_std=-1", ["init_std", "-1"]),
    ("n_layer=-1", ["n_layer", "-1"]),
    ("grad_clip=nan", ["grad_clip", "nan"]),
    ("weight_decay=-1", ["weight_decay", "-1"]),
    ("vocab_size=30000000", ["vocab_size", "30000000"]),
    ("beta2=1.5", ["beta2", "1.5"]),
    ("device=tpu9", ["device", "tpu9"]),
]


@pytest.mark.parametrize("assignment,words", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_set_values(tmp_path, capsys, assignment, words):
    data = tmp_path / "t.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    code = main(["train", "lm", "--data", str(data), "--out", str(out), "--preset", "gpt-tiny", "--set", assignment])
    expect_one_line(capsys, 2, code, "--set", *words)
    assert not out.exists()  # refused before anything was written


def test_unknown_device(tmp_path, capsys):
    model = tiny_gpt(tmp_path / "m")
    expect_one_line(capsys, 2, main(["sample", "--model", str(model), "--device", "tpu9"]), "--device", "tpu9", "cpu",
                    "cuda")
    expect_one_line(capsys, 2, main(["eval", "translation", "--model", str(model), "--src", "s", "--ref", "r",
                                     "--beam", "0"]), "--beam", "0")


def test_eval_lm_with_malformed_train_section(tmp_path, capsys):
    model = tiny_gpt(tmp_path / "m")
    data = tmp_path / "t.txt"
    data.write_text(TEXT)
    for train, words in (([1, 2], ["'train'"]), ({"val_fraction": "x"}, ["val_fraction", "'x'"]),
                         ({"val_fraction": 2.0}, ["val_fraction", "2.0"]), ({"bogus": 1}, ["bogus"])):
        edit_json(model / "config.json", lambda meta, train=train: meta.__setitem__("train", train))
        expect_one_line(capsys, 1, main(["eval", "lm", "--model", str(model), "--data", str(data)]),
                        "config.json", *words)


def test_hf_config_without_vocab_size_or_with_string_layers(tmp_path, capsys):
    model = tmp_path / "hf"
    model.mkdir()
    for hf, words in (({"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16}, ["vocab_size"]),
                      ({"model_type": "gpt2", "vocab_size": 8, "n_layer": "1", "n_head": 2, "n_embd": 16},
                       ["n_layer", "'1'"]),
                      ({"model_type": "gpt2", "vocab_size": 8, "n_positions": 0, "n_layer": 1, "n_head": 2,
                        "n_embd": 16}, ["n_positions", "0"])):
        (model / "config.json").write_text(json.dumps(hf))
        expect_one_line(capsys, 1, main(["sample", "--model", str(model)]), "config.json", *words)


def test_resume_without_optimizer_state(tmp_path, capsys):
    data = tmp_path / "t.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    args = ["train", "lm", "--data", str(data), "--out", str(out), "--preset", "gpt-tiny", "--set", "max_iters=2",
            "--set", "eval_interval=1", "--set", "eval_iters=1", "--set", "block_size=8", "--set", "batch_size=2"]
    assert main(args) == 0
    capsys.readouterr()
    state = torch.load(out / "resume.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, out / "resume.pt")
    expect_one_line(capsys, 1, main([*args[:-8], "--set", "max_iters=3", "--resume"]), "resume.pt", "'optimizer'")


def test_translation_run_with_char_tokenizer(tmp_path, capsys):
    model = tiny_seq2seq(tmp_path / "m", CharTokenizer.train("abc \n"))
    src = tmp_path / "src.txt"
    src.write_text("abc\n")
    expect_one_line(capsys, 1, main(["translate", "--model", str(model), "--input", str(src)]),
                    "tokenizer", "<pad>")


def test_special_ids_outside_the_target_vocabulary(tmp_path, capsys):
    model = tiny_seq2seq(tmp_path / "m", BPETokenizer.train(TEXT, vocab_size=270))
    edit_json(model / "config.json", set_config("eos_id", 5000))
    expect_one_line(capsys, 1, main(["translate", "--model", str(model), "--input", str(model / "config.json")]),
                    "config.json", "eos_id", "5000")


def test_beam_larger_than_vocabulary_is_narrowed(tmp_path, capsys):
    tok = BPETokenizer.train(TEXT, vocab_size=270)
    model = tiny_seq2seq(tmp_path / "m", tok)
    src = tmp_path / "src.txt"
    src.write_text("abc\n")
    assert main(["translate", "--model", str(model), "--input", str(src), "--beam", "100000"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--beam 100000" in err and f"--beam {tok.vocab_size}" in err, err


@pytest.mark.parametrize("config", [
    GPTConfig(vocab_size=1_000_000, block_size=16, n_layer=2, n_head=64, n_embd=65536),
    Seq2SeqConfig(src_vocab_size=1_000_000, tgt_vocab_size=1_000_000, block_size=16, n_head=64, d_model=65536),
])
def test_a_model_too_big_for_memory_is_refused_before_any_allocation(config):
    # Each size is within its own limit; together they need hundreds of GiB. The estimate is
    # checked against this machine's memory before a single tensor is made.
    assert config.parameter_estimate() * 4 > 2 ** 39  # over 512 GiB: more than any machine this project runs on
    with pytest.raises(ValueError, match="parameters.*GiB.*memory"):
        (GPT if isinstance(config, GPTConfig) else Seq2Seq)(config)


def test_the_parameter_estimate_is_close_to_the_real_count():
    for config in (GPTConfig(vocab_size=500, block_size=32, n_layer=2, n_head=4, n_embd=64, activation="swiglu"),
                   Seq2SeqConfig(src_vocab_size=300, tgt_vocab_size=200, block_size=32, n_encoder_layers=2,
                                 n_decoder_layers=2, n_head=4, d_model=64, d_ff=96, shared_vocab=False)):
        model = (GPT if isinstance(config, GPTConfig) else Seq2Seq)(config)
        real = sum(p.numel() for p in model.parameters())
        assert 0.7 * real < config.parameter_estimate() < 1.6 * real
