"""Llama, Mistral, Qwen2 and Qwen3 against transformers: random tiny models built here with
transformers' own classes, saved with save_pretrained, loaded with glassformer.load, and the
logits, greedy generations and exports compared with transformers' (offline, CPU)."""

import copy
import json

import pytest
import torch

import glassformer
from glassformer import GPT, GPTConfig
from glassformer.checkpoint import CheckpointError, export_hf
from glassformer.data.tokenizers import PretrainedTokenizer, load_tokenizer
from glassformer.fast import accelerate
from glassformer.generation.sampling import generate
from glassformer.hf.families import render_chat

transformers = pytest.importorskip("transformers")

CONFIGS = {
    "llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
    "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
}
VOCAB = 61


def hf_model(kind, n_head=4, n_kv_head=2, tied=False, head_dim=None, seed=0, **extra):
    """A 2-layer transformers model of family `kind` with random weights, norms and biases perturbed
    away from 1 and 0 so that a missing or swapped one shows."""
    values = dict(vocab_size=VOCAB, hidden_size=8 * n_head, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=n_head, num_key_value_heads=n_kv_head, max_position_embeddings=64,
                  tie_word_embeddings=tied, rms_norm_eps=1e-5, rope_theta=1000.0)
    if head_dim is not None:
        values["head_dim"] = head_dim
    values.update(extra)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[kind](**values), attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0, 0.2)
    return model.float().eval()


def ids_for(T=24, B=2, seed=0):
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(ours, theirs, x, atol=1e-4):
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x).logits, atol=atol, rtol=0)


# Every family, query/KV head ratios 1, 2, 3 and multi-query, tied and untied, head_dim apart from
# hidden/heads. Logits within 1e-4: the largest difference seen was about 2e-6 (logits up to ~5).
CASES = {
    "llama-mha-untied": ("llama", dict(n_head=4, n_kv_head=4)),
    "llama-gqa2-tied-wide-heads": ("llama", dict(n_head=4, n_kv_head=2, tied=True, head_dim=12)),
    "mistral-gqa2": ("mistral", dict(n_head=4, n_kv_head=2)),
    "mistral-mqa-tied": ("mistral", dict(n_head=4, n_kv_head=1, tied=True)),
    "qwen2-gqa3-tied": ("qwen2", dict(n_head=6, n_kv_head=2, tied=True)),
    "qwen2-mha-untied": ("qwen2", dict(n_head=4, n_kv_head=4)),
    "qwen3-mqa-untied": ("qwen3", dict(n_head=4, n_kv_head=1, head_dim=6)),
    "qwen3-gqa3-tied": ("qwen3", dict(n_head=6, n_kv_head=2, tied=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_import_gives_transformers_logits_and_export_round_trips(tmp_path, case):
    kind, options = CASES[case]
    hf = hf_model(kind, **options)
    hf.save_pretrained(tmp_path / "hf")
    model, tokenizer = glassformer.load(tmp_path / "hf")
    assert isinstance(model, GPT) and tokenizer is None and not model.training
    c = model.config
    assert (c.kv_heads, c.tie_weights, c.qk_norm, bool(c.qkv_bias)) == (
        options["n_kv_head"], options.get("tied", False), kind == "qwen3", kind == "qwen2")
    x = ids_for()
    assert_same_logits(model, hf, x)
    export_hf(model, tmp_path / "out")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert again.config.model_type == {"mistral": "llama"}.get(kind, kind)
    assert_same_logits(model, again, x)


@pytest.mark.parametrize("case", ["llama-gqa2-tied-wide-heads", "qwen2-gqa3-tied", "qwen3-mqa-untied"])
def test_greedy_generation_is_transformers_and_the_cache_equals_recompute(tmp_path, case):
    kind, options = CASES[case]
    hf = hf_model(kind, **options)
    hf.save_pretrained(tmp_path)
    model, _ = glassformer.load(tmp_path)
    prompt = ids_for(T=8)
    with torch.inference_mode():
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, min_new_tokens=32,
                             do_sample=False, pad_token_id=0).tolist()
    assert generate(model, prompt, 32, temperature=0) == theirs  # the fast decode path
    assert generate(model, prompt, 32, temperature=0, use_cache=False) == theirs
    x = torch.tensor(theirs)  # (2, 40)
    cache, step = model.new_cache(), accelerate.decode_step(model, 2)
    with torch.inference_mode():
        full = model(x)
        torch.testing.assert_close(model.next_logits(x[:, :8], cache), full[:, 7], atol=1e-5, rtol=1e-5)
        for t in range(8, x.size(1)):
            torch.testing.assert_close(step(x[:, t : t + 1], cache), full[:, t], atol=1e-5, rtol=1e-5)
    assert cache.self_attn[0].k.size(1) == options["n_kv_head"]  # the cache holds the K/V heads only


def older_layout(path):
    """Rewrites config.json as transformers 4 wrote it: top-level rope_theta and rope_scaling."""
    config = json.loads((path / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("layout", ["newer", "older"])
def test_llama3_rope_scaling_in_both_config_layouts(tmp_path, layout):
    # original_max_position_embeddings 8 < the 48 positions used, so every band of the scaling acts.
    scaling = dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8)
    hf = hf_model("llama", rope_scaling=scaling, rope_theta=500.0)
    hf.save_pretrained(tmp_path)
    if layout == "older":
        older_layout(tmp_path)
        assert "rope_parameters" not in (tmp_path / "config.json").read_text()
    model, _ = glassformer.load(tmp_path)
    assert (model.config.rope_scaling, model.config.rope_factor, model.config.rope_theta) == ("llama3", 4.0, 500.0)
    x = ids_for(T=48)
    assert_same_logits(model, hf, x)
    unscaled = GPT.from_tensors(GPTConfig(**{**vars(model.config), "rope_scaling": "none"}),
                                dict(model.named_parameters()))
    with torch.no_grad():
        assert (unscaled(x) - model(x)).abs().max() > 1e-2  # the scaling is not a no-op here
    export_hf(model, tmp_path / "out")
    assert_same_logits(model, transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval(), x)


def test_sharded_checkpoint_loads_and_a_missing_shard_is_named(tmp_path):
    hf = hf_model("qwen2", n_head=6, n_kv_head=2)
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists()
    model, _ = glassformer.load(tmp_path)
    assert_same_logits(model, hf, ids_for())
    (tmp_path / shards[1]).unlink()
    with pytest.raises(CheckpointError, match=f"shard {shards[1]}, listed in model.safetensors.index.json, is missing"):
        glassformer.load(tmp_path)


def test_bf16_weights_load_and_compute(tmp_path):
    hf = hf_model("qwen3", n_head=4, n_kv_head=2, tied=True)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.bfloat16())  # the bf16 weights, exactly, in float32 (RoPE's frequencies stay float32)
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)
    model, _ = glassformer.load(tmp_path, dtype="bfloat16")
    assert model.tok_emb.weight.dtype == torch.bfloat16
    upcast, _ = glassformer.load(tmp_path, dtype="float32")
    assert upcast.tok_emb.weight.dtype == torch.float32
    x = ids_for()
    assert_same_logits(upcast, hf, x)  # the same numbers upcast: float32 tolerance
    # bf16 keeps 8 significant bits: each rounding is up to 2^-9 relative, and the activations are
    # rounded after every matmul, norm and residual sum (two layers). Logits here are up to ~5 in size;
    # 0.25 allows a few hundred such roundings adding up, and a wrong model is off by whole units.
    with torch.no_grad():
        ours = model(x).float()
        reference = hf(x).logits
    assert (ours - reference).abs().max() < 0.25
    assert (ours.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9
    auto, _ = glassformer.load(tmp_path)  # bf16 where this machine multiplies it natively, else float32
    from glassformer.base.device import native_bf16
    assert auto.tok_emb.weight.dtype == (torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32)


def test_native_model_with_the_new_options_exports_to_transformers(tmp_path):
    torch.manual_seed(0)
    for kind, options in {"qwen3": dict(qk_norm=True), "qwen2": dict(qkv_bias=True), "llama": dict()}.items():
        config = GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=6, n_kv_head=3, n_embd=24, d_head=6,
                           d_ff=40, bias=False, norm="rmsnorm", activation="swiglu", position="rope",
                           tie_weights=kind != "llama", **options)
        model = GPT(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        export_hf(model, tmp_path / kind)
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / kind).eval()
        assert hf.config.model_type == kind
        assert_same_logits(model, hf, ids_for(T=20))


# ---------------------------------------------------------------------------------------------
# Tokenizer, eos ids, chat template

TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_tokenizer_files(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=[], show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    words = "hello there, the cat sat on the mat; a quick brown fox jumps over lazy dogs while birds sing. "
    tok.train_from_iterator([words * 20], trainer=trainer)
    assert tok.get_vocab_size() == VOCAB  # every id the model can produce decodes
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None, "chat_template": TEMPLATE}))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))


def test_tokenizer_eos_ids_and_chat_template_match_transformers(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path)
    tiny_tokenizer_files(tmp_path)
    model, tok = glassformer.load(tmp_path)
    assert isinstance(tok, PretrainedTokenizer)
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                                     eos_token="<|im_end|>", chat_template=TEMPLATE)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat sat?"}]
    text = render_chat(tok.chat_template, messages, eos_token="<|im_end|>")
    assert text == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tok.encode(text) == reference.encode(text, add_special_tokens=False)
    assert tok.encode(text).count(tok.hf.token_to_id("<|im_start|>")) == 3  # the markers are special tokens
    assert tok.decode(tok.encode("the mat")) == "the mat" and tok.token(tok.encode(" cat")[0]).startswith(" ")
    assert (tok.eos_id, tok.eos_ids, tok.pad_id) == (2, [2, 0], 0)
    tok.save(tmp_path / "saved.json")
    again = load_tokenizer(tmp_path / "saved.json")
    assert (again.encode(text), again.eos_ids, again.chat_template) == (tok.encode(text), [2, 0], TEMPLATE)
    export_hf(model, tmp_path / "out", tokenizer=tok)  # the tokenizer files travel with the export
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    assert glassformer.load(tmp_path / "out")[1].eos_ids == [2, 0]


def test_render_chat_is_sandboxed_and_errors_are_one_line():
    with pytest.raises(ValueError, match="chat template"):
        render_chat("{{ ''.__class__.__mro__[1].__subclasses__() }}", [])
    with pytest.raises(ValueError, match="chat template: no system role"):
        render_chat("{{ raise_exception('no system role') }}", [])
    assert render_chat("{{ messages[0] | tojson }}", [{"role": "user", "content": "é"}]) == \
        '{"role": "user", "content": "é"}'


# ---------------------------------------------------------------------------------------------
# One-line errors


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="gemma"), r"model_type 'gemma'; supported: gpt2, llama, mistral, qwen2, qwen3"),
    (dict(intermediate_size=44), r"tensor model.layers.0.mlp.up_proj.weight has shape \(40, 32\), "
                                 r"the config expects \(44, 32\)"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
     r"rope_parameters.rope_type 'yarn' is not supported; supported: default, llama3"),
    (dict(attention_bias=True), r"attention_bias: true is not supported"),
    (dict(hidden_act="gelu"), r"hidden_act 'gelu' is not supported"),
    (dict(num_local_experts=8), r"num_local_experts: mixture of experts is not supported"),
    (dict(num_key_value_heads=3), r"num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
])
def test_unsupported_or_mismatched_configs_are_one_line_errors(tmp_path, changes, message):
    hf_model("llama").save_pretrained(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as error:
        glassformer.load(tmp_path)
    assert "\n" not in str(error.value)


def test_sliding_window_refused_or_taken_as_the_context(tmp_path):
    hf_model("qwen2").save_pretrained(tmp_path)
    edit_config(tmp_path, use_sliding_window=True, sliding_window=16)
    with pytest.raises(CheckpointError, match="use_sliding_window: true is not supported"):
        glassformer.load(tmp_path)
    hf = hf_model("mistral", sliding_window=16)
    hf.save_pretrained(tmp_path / "mistral")
    model, _ = glassformer.load(tmp_path / "mistral")
    assert model.config.block_size == 16  # no query sees past the window
    assert_same_logits(model, hf, ids_for(T=16))


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    hf_model("qwen3").save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing tensor model.layers.1.self_attn.k_norm.weight"):
        glassformer.load(tmp_path)


@pytest.mark.parametrize("kind, tied, stored, asked", [("llama", False, torch.float32, None),
                                                       ("qwen2", True, torch.float32, None),
                                                       ("qwen2", True, torch.bfloat16, "float32"),
                                                       ("llama", False, torch.bfloat16, "bfloat16")])
def test_loaded_parameters_are_the_files_tensors(tmp_path, kind, tied, stored, asked):
    """Every parameter, under Hugging Face's name (family_tensors), is the file's tensor: bit for bit in
    its own dtype, and exactly its value when bf16 is read as float32 (every bf16 value is a float32)."""
    from safetensors.torch import load_file

    from glassformer.hf.families import family_tensors

    hf_model(kind, tied=tied).to(stored).save_pretrained(tmp_path)
    file = load_file(tmp_path / "model.safetensors")
    model, _ = glassformer.load(tmp_path, dtype=asked)
    ours = family_tensors(model)
    assert set(ours) == set(file) - ({"lm_head.weight"} if tied else set())
    for name, tensor in ours.items():
        assert tensor.dtype == (torch.float32 if asked in (None, "float32") else stored), name
        assert torch.equal(tensor, file[name].to(tensor.dtype)), name
    assert (model.lm_head.weight is model.tok_emb.weight) == tied
