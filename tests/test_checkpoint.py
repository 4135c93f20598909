"""Checkpoint directories and Hugging Face GPT-2 interop, both directions."""

import json
import random
import subprocess
import sys

import pytest
import torch

import glassformer
from glassformer import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from glassformer.base.files import atomic_write
from glassformer.checkpoint import RENAMED, CheckpointError, current_name, export_hf
from glassformer.cli import main

transformers = pytest.importorskip("transformers")


def random_hf_config(seed):
    """A random small GPT-2 shape; every option the layout maps varies."""
    rng = random.Random(seed)
    n_head = rng.choice([1, 2, 4])
    return transformers.GPT2Config(
        vocab_size=rng.randint(20, 120), n_positions=rng.choice([16, 40, 64]), n_head=n_head,
        n_embd=n_head * rng.choice([4, 8, 12]), n_layer=rng.randint(1, 3),
        n_inner=rng.choice([None, 24, 40]), activation_function=rng.choice(["gelu_new", "gelu", "relu"]),
        layer_norm_epsilon=rng.choice([1e-5, 1e-6]), tie_word_embeddings=rng.random() < 0.6,
    )


def randomise(module):
    """Random values everywhere, norms included, so a swapped or transposed tensor shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def ids_for(vocab, T, seed=0):
    return torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(seed))


# Logits against Hugging Face's: atol 1e-4 where the largest difference seen (seeds 0-7, 1 and 2
# threads, logits up to 3 in size) was 8e-7, 100 times smaller.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_import_hf_gpt2_gives_same_logits(tmp_path, seed):
    torch.manual_seed(seed)
    hf = randomise(transformers.GPT2LMHeadModel(random_hf_config(seed))).eval()
    hf.save_pretrained(tmp_path)
    model, tokenizer = glassformer.load(tmp_path)
    assert tokenizer is None and isinstance(model, GPT)
    x = ids_for(hf.config.vocab_size, hf.config.n_positions)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-4, rtol=0)


def test_import_pytorch_model_bin_with_legacy_buffers(tmp_path):
    torch.manual_seed(3)
    hf = randomise(transformers.GPT2LMHeadModel(random_hf_config(3))).eval()
    state = {k: v for k, v in hf.state_dict().items()}
    n = hf.config.n_positions
    for i in range(hf.config.n_layer):  # what old checkpoints carry beside the weights
        state[f"transformer.h.{i}.attn.bias"] = torch.ones(1, 1, n, n).tril()
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    model, _ = glassformer.load(tmp_path)
    x = ids_for(hf.config.vocab_size, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", [dict(), dict(bias=False, activation="gelu", tie_weights=False, d_ff=20)])
def test_export_to_hf_gives_same_logits(tmp_path, overrides):
    torch.manual_seed(0)
    model = randomise(GPT(GPTConfig(vocab_size=57, block_size=32, n_layer=2, n_head=2, n_embd=16,
                                    **overrides))).eval()
    assert main(["export", "--format", "hf", "--model", str(glassformer.save(model, tmp_path / "ours")),
                 "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    x = ids_for(57, 32)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), atol=1e-4, rtol=0)


def test_hf_round_trip_import_then_export(tmp_path):
    torch.manual_seed(5)
    hf = randomise(transformers.GPT2LMHeadModel(random_hf_config(5))).eval()
    hf.save_pretrained(tmp_path / "a")
    model, _ = glassformer.load(tmp_path / "a")
    export_hf(model, tmp_path / "b")
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "b").eval()
    x = ids_for(hf.config.vocab_size, 10)
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, hf(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides, reason", [
    (dict(position="rope"), "position=rope"),
    (dict(norm="rmsnorm"), "norm=rmsnorm"),
    (dict(norm_position="post"), "norm_position=post"),
    (dict(activation="swiglu"), "activation=swiglu"),
])
def test_export_refuses_what_gpt2_cannot_express(tmp_path, overrides, reason):
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, **overrides))
    with pytest.raises(CheckpointError, match=reason):
        export_hf(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize("make", [
    lambda: GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=8)),
    lambda: GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, n_embd=8, tie_weights=False,
                          position="rope", n_classes=2)),
    lambda: Seq2Seq(Seq2SeqConfig(src_vocab_size=30, tgt_vocab_size=30, shared_vocab=True, block_size=12,
                                  n_encoder_layers=1, n_decoder_layers=1, n_head=2, d_model=8)),
    lambda: Seq2Seq(Seq2SeqConfig(src_vocab_size=30, tgt_vocab_size=25, tie_output=False, block_size=12,
                                  n_encoder_layers=1, n_decoder_layers=2, n_head=2, d_model=8)),
])
def test_save_load_round_trip(tmp_path, make):
    torch.manual_seed(0)
    model = randomise(make()).eval()
    glassformer.save(model, tmp_path)
    loaded, tokenizer = glassformer.load(tmp_path)
    assert tokenizer is None and loaded.config == model.config and not loaded.training
    x = ids_for(25, 6)
    with torch.no_grad():
        if isinstance(model, GPT):
            torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
        else:
            torch.testing.assert_close(loaded(x, x), model(x, x), atol=0, rtol=0)
    tied = getattr(model.config, "tie_weights", False) or getattr(model.config, "tie_output", False)
    embeddings = {p.data_ptr() for n, p in loaded.named_parameters() if "emb" in n}
    assert (loaded.lm_head.weight.data_ptr() in embeddings) == tied  # tied again after loading, and only then


def small_checkpoint(tmp_path):
    """A saved one-layer GPT without its manifest.json: the tests edit its files by hand."""
    model = GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, n_embd=8))
    path = glassformer.save(model, tmp_path / "ckpt")
    (path / "manifest.json").unlink()  # with it, a file edited by hand is refused (test_reads_hostile)
    return path, model


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file
    path, _ = small_checkpoint(tmp_path)
    tensors = load_file(path / "model.safetensors")
    del tensors["blocks.0.ffn.up.weight"]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing tensor blocks.0.ffn.up.weight"):
        glassformer.load(path)


def test_mismatched_tensor_is_named(tmp_path):
    path, _ = small_checkpoint(tmp_path)
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["d_ff"] = 64
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"blocks.0.ffn.up.weight has shape \(32, 8\).*expects \(64, 8\)"):
        glassformer.load(path)


def test_corrupt_and_missing_files(tmp_path):
    path, _ = small_checkpoint(tmp_path)
    (path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        glassformer.load(path)
    (path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        glassformer.load(path)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        glassformer.load(tmp_path / "nowhere")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "weights"
    target.write_text("old")

    def failing(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["weights"]


def test_cli_bad_checkpoint_is_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "glassformer", "export", "--model", str(tmp_path / "none"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "not a checkpoint directory" in result.stderr


OLD_NAMES = {new: old for old, new in RENAMED.items()}  # today's name part -> the one older checkpoints used


def older_name(name: str) -> str:
    for new, old in OLD_NAMES.items():
        name = name.replace(new, old)
    return name


@pytest.mark.parametrize("make", [
    lambda: GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=8, norm="rmsnorm")),
    lambda: Seq2Seq(Seq2SeqConfig(src_vocab_size=30, tgt_vocab_size=25, block_size=12, n_encoder_layers=1,
                                  n_decoder_layers=1, n_head=2, d_model=8, norm_position="pre")),
])
def test_checkpoint_with_the_older_norm_names_loads_equal(tmp_path, make):
    """A checkpoint written before the blocks' norms were their own (blocks.0.attn_res.norm.weight)
    loads into today's model (blocks.0.attn_norm.weight) with the same values."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = randomise(make()).eval()
    path = glassformer.save(model, tmp_path)
    weights = path / "model.safetensors"
    tensors = load_file(str(weights))
    old = {older_name(name): t for name, t in tensors.items()}
    assert any(".attn_res.norm." in name for name in old) and not any(".attn_norm." in name for name in old)
    save_file(old, str(weights))
    (path / "manifest.json").unlink(missing_ok=True)  # the rewritten file is no longer the one listed
    loaded, _ = glassformer.load(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_parameters_keep_the_order_older_checkpoints_saved_them_in():
    """Optimizer states saved by position (older resume.pt files) follow the parameter order: the
    renamed norms sit where their residual modules sat."""
    model = GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, n_embd=8, n_kv_head=1, qk_norm=True))
    before = ["tok_emb.weight", "pos_emb.weight", "blocks.0.self_attn.q_proj.weight", "blocks.0.self_attn.q_proj.bias",
              "blocks.0.self_attn.k_proj.weight", "blocks.0.self_attn.k_proj.bias",
              "blocks.0.self_attn.v_proj.weight", "blocks.0.self_attn.v_proj.bias",
              "blocks.0.self_attn.q_norm.weight", "blocks.0.self_attn.k_norm.weight",
              "blocks.0.self_attn.o_proj.weight", "blocks.0.self_attn.o_proj.bias",
              "blocks.0.attn_res.norm.weight", "blocks.0.attn_res.norm.bias", "blocks.0.ffn.up.weight",
              "blocks.0.ffn.up.bias", "blocks.0.ffn.down.weight", "blocks.0.ffn.down.bias",
              "blocks.0.ffn_res.norm.weight", "blocks.0.ffn_res.norm.bias", "final_norm.weight", "final_norm.bias"]
    assert [name for name, _ in model.named_parameters()] == [current_name(name) for name in before]


# -- weights read straight into the model: every parameter is the file's tensor ---------------


def test_read_tensors_equals_safetensors_and_hashes_the_file(tmp_path):
    import hashlib

    from safetensors.torch import load_file, save_file

    from glassformer.weights import read_tensors

    tensors = {"a": torch.randn(3, 5), "b": torch.randn(4).to(torch.bfloat16), "c": torch.randn(2, 2).half(),
               "d": torch.arange(6).view(2, 3), "scalar": torch.tensor(2.5, dtype=torch.float64),
               "empty": torch.zeros(0, 4), "flags": torch.tensor([True, False, True])}
    save_file(tensors, tmp_path / "w.safetensors", metadata={"format": "pt"})
    sha256 = hashlib.sha256()
    ours, theirs = read_tensors(tmp_path / "w.safetensors", sha256), load_file(tmp_path / "w.safetensors")
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape, name
        assert torch.equal(ours[name], tensor), name
    assert sha256.hexdigest() == hashlib.sha256((tmp_path / "w.safetensors").read_bytes()).hexdigest()


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    """A safetensors file written by hand: u64 header length, the JSON header, the data."""
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


F32_2 = {"dtype": "F32", "shape": [2]}
MALFORMED = {
    "truncated": safetensors_bytes({"a": {**F32_2, "data_offsets": [0, 8]}}, bytes(5)),
    "header longer than the file": (10 ** 6).to_bytes(8, "little") + b"{}",
    "header not JSON": (5).to_bytes(8, "little") + b"{oops",
    "a gap between tensors": safetensors_bytes({"a": {**F32_2, "data_offsets": [0, 8]},
                                                "b": {**F32_2, "data_offsets": [12, 20]}}, bytes(20)),
    "overlapping tensors": safetensors_bytes({"a": {**F32_2, "data_offsets": [0, 8]},
                                              "b": {**F32_2, "data_offsets": [4, 12]}}, bytes(12)),
    "bytes that do not fit the shape": safetensors_bytes({"a": {**F32_2, "data_offsets": [0, 12]}}, bytes(12)),
    "an unknown dtype": safetensors_bytes({"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    "bytes after the last tensor": safetensors_bytes({"a": {**F32_2, "data_offsets": [0, 8]}}, bytes(9)),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_read_tensors_refuses_a_malformed_file_in_one_line(tmp_path, case):
    from glassformer.weights import read_tensors

    (tmp_path / "w.safetensors").write_bytes(MALFORMED[case])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file") as error:
        read_tensors(tmp_path / "w.safetensors")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("tied, dtype", [(True, torch.float32), (False, torch.float32), (True, torch.bfloat16)])
def test_loaded_parameters_are_the_files_tensors(tmp_path, tied, dtype):
    """Each parameter equals the file's tensor (converted to float32 where stored otherwise, exactly:
    every bf16 value is a float32 value); tied matrices are one Parameter again; all trainable."""
    from safetensors.torch import load_file

    torch.manual_seed(5)
    model = randomise(GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=8,
                                    tie_weights=tied, position="learned"))).to(dtype)
    glassformer.save(model, tmp_path)  # with its manifest: the weights are hashed as they are read
    stored = load_file(tmp_path / "model.safetensors")
    loaded, _ = glassformer.load(tmp_path)
    parameters = dict(loaded.named_parameters(remove_duplicate=False))
    assert set(parameters) == set(stored) | ({"lm_head.weight"} if tied else set())
    for name, p in parameters.items():
        source = stored["tok_emb.weight" if tied and name == "lm_head.weight" else name]
        assert p.dtype == torch.float32 and p.requires_grad and torch.equal(p, source.float()), name
    assert (loaded.lm_head.weight is loaded.tok_emb.weight) == tied


@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin"])
def test_loaded_hf_gpt2_parameters_are_the_files_tensors(tmp_path, file):
    """Our parameters written back in GPT-2's layout (tensors_to_hf) are the file's tensors, bit for bit."""
    from safetensors.torch import load_file

    from glassformer.hf.gpt2 import tensors_to_hf

    torch.manual_seed(6)
    hf = randomise(transformers.GPT2LMHeadModel(random_hf_config(6))).eval()
    if file == "model.safetensors":
        hf.save_pretrained(tmp_path)
        stored = load_file(tmp_path / file)
    else:  # transformers 5 writes no .bin: as older versions did, torch.save of the state dict
        torch.save(hf.state_dict(), tmp_path / file)
        hf.config.to_json_file(tmp_path / "config.json")
        stored = torch.load(tmp_path / file)
    stored = {name if name.startswith(("transformer.", "lm_head")) else f"transformer.{name}": t
              for name, t in stored.items() if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    loaded, _ = glassformer.load(tmp_path)
    ours = tensors_to_hf(loaded)
    assert set(ours) == set(stored) - ({"lm_head.weight"} if hf.config.tie_word_embeddings else set())
    for name, tensor in ours.items():
        assert torch.equal(tensor, stored[name]), name
