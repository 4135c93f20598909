"""Llama, Mistral, Qwen2 and Qwen3 checkpoints in Hugging Face's layout, read into a GPT and written back.

The four families are one GPT with options (glassformer.model.config.GPTConfig): pre-norm RMSNorm
blocks, RoPE, a SwiGLU feed-forward and no biases; grouped-query attention (n_kv_head);
Qwen2 adds biases on Q, K and V (qkv_bias), Qwen3 an RMSNorm over each head's q and k
(qk_norm); Llama 3.1 scales RoPE's frequencies (rope_scaling "llama3"). A setting outside
these (another RoPE scaling, a sliding window, experts, biases on W_O) is refused in one line
naming its key.

A directory holds config.json, model.safetensors or shards listed in
model.safetensors.index.json, and optionally tokenizer.json, tokenizer_config.json (special
tokens, chat template; or chat_template.jinja) and generation_config.json (the ids that end a
generation). Weights are memory-mapped and become the model's parameters as they are, so
loading never holds two copies; bf16/fp16 stay so where the device multiplies them natively.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from glassformer.base import reading
from glassformer.base.device import native_bf16
from glassformer.base.files import atomic_write_json, atomic_write_text
from glassformer.data.tokenizers import PretrainedTokenizer
from glassformer.hf.chat import render_chat  # noqa: F401  (chat templates are part of a model directory's interface)
from glassformer.model.config import GPTConfig, check_fits_in_memory, unsupported
from glassformer.model.gpt import GPT
from glassformer.weights import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    all_finite,
    empty_gpt,
    hand_over,
    read_json,
    save_tensors,
)

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM"}
INDEX_FILE = "model.safetensors.index.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STORED_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}

# Our module in block i -> theirs in model.layers.i (the parameter name after it is the same).
LAYER_PARTS = {
    "attn_norm": "input_layernorm",
    "self_attn.q_proj": "self_attn.q_proj", "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj", "self_attn.o_proj": "self_attn.o_proj",
    "self_attn.q_norm": "self_attn.q_norm", "self_attn.k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn.gate": "mlp.gate_proj", "ffn.up": "mlp.up_proj", "ffn.down": "mlp.down_proj",
}
OUTER_NAMES = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
               "lm_head.weight": "lm_head.weight"}


def their_name(ours: str) -> str:
    """A GPT parameter name -> the Hugging Face name of the same tensor (same layout: both use nn.Linear)."""
    if ours in OUTER_NAMES:
        return OUTER_NAMES[ours]
    _, i, rest = ours.split(".", 2)  # blocks.{i}.{module}.{parameter}
    module, parameter = rest.rsplit(".", 1)
    return f"model.layers.{i}.{LAYER_PARTS[module]}.{parameter}"


# ---------------------------------------------------------------------------------------------
# config.json <-> GPTConfig


def rope_settings(hf: dict) -> tuple[dict, str]:
    """RoPE's settings from either config.json layout -> (settings, the key they came from).

    Older: top-level rope_theta and rope_scaling (None or {"rope_type" | "type": ..., ...}).
    Newer (transformers 5): rope_parameters {"rope_type": ..., "rope_theta": ..., ...}.
    """
    if isinstance(hf.get("rope_parameters"), dict):
        return hf["rope_parameters"], "rope_parameters"
    scaling = hf.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        raise CheckpointError(f"rope_scaling must be a JSON object or null; got {scaling!r}")
    return {"rope_theta": hf.get("rope_theta", 10000.0), **scaling}, "rope_scaling"


def _refuse_unsupported(hf: dict) -> None:
    """Raises CheckpointError naming the first config key that asks for what the layers lack."""
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"hidden_act {hf['hidden_act']!r} is not supported; supported: silu (SwiGLU)")
    if hf.get("quantization_config"):
        raise CheckpointError("quantization_config: quantized weights are not supported; use float weights")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise CheckpointError(f"{key}: true is not supported (biases on W_O and the feed-forward); "
                                  f"only Qwen2's biases on Q, K and V are")
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if hf.get(key):
            raise CheckpointError(f"{key}: mixture of experts is not supported")
    if hf.get("use_sliding_window"):
        raise CheckpointError("use_sliding_window: true is not supported (sliding-window attention)")
    layer_types = hf.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
        raise CheckpointError(f"layer_types: only full_attention is supported; got {sorted(set(layer_types))}")


def config_from_family(hf: dict) -> GPTConfig:
    """A Llama/Mistral/Qwen2/Qwen3 config.json (as a dict) -> GPTConfig, refusing what the layers cannot express.

    Mistral's sliding window, where shorter than max_position_embeddings, becomes the context
    (block_size): no query then sees past the window, as in the window itself, and generation
    slides the context along.
    """
    kind = hf["model_type"]
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in hf]
    if missing:
        raise CheckpointError(f"{kind} config has no {', '.join(missing)}")
    _refuse_unsupported(hf)
    rope, source = rope_settings(hf)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = {}
    if rope_type == "llama3":
        try:
            scaling = dict(rope_scaling="llama3", rope_factor=rope["factor"],
                           rope_low_freq_factor=rope["low_freq_factor"], rope_high_freq_factor=rope["high_freq_factor"],
                           rope_original_max_len=rope["original_max_position_embeddings"])
        except KeyError as e:
            raise CheckpointError(f"{source}: llama3 scaling needs {e.args[0]}") from None
    elif rope_type not in ("default", None):
        raise CheckpointError(f"{source}.rope_type {rope_type!r} is not supported; supported: default, llama3")
    block_size = hf.get("max_position_embeddings", 2048)
    window = hf.get("sliding_window") if kind == "mistral" else None
    if window is not None:
        block_size = min(block_size, window)
    values = dict(
        vocab_size=hf["vocab_size"], block_size=block_size, n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"], d_head=hf.get("head_dim"),
        d_ff=hf["intermediate_size"], dropout=0.0, bias=False, norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6),
        norm_position="pre", activation="swiglu", position="rope", rope_theta=rope.get("rope_theta", 10000.0),
        tie_weights=hf.get("tie_word_embeddings", False), n_kv_head=hf.get("num_key_value_heads"),
        qkv_bias=True if kind == "qwen2" else None, qk_norm=kind == "qwen3", **scaling)
    try:
        return GPTConfig(**values)
    except ValueError as e:  # names the GPTConfig field; the config.json key is given where it differs
        names = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
                 "n_kv_head": "num_key_value_heads", "d_head": "head_dim", "d_ff": "intermediate_size",
                 "norm_eps": "rms_norm_eps", "block_size": "max_position_embeddings",
                 "tie_weights": "tie_word_embeddings"}
        message = str(e)
        for ours, theirs in names.items():
            message = message.replace(ours, theirs)
        raise CheckpointError(f"{kind} config: {message}") from None


def family_of(config: GPTConfig) -> str:
    """The Hugging Face family a GPT is written as: Qwen3 with q/k norms, Qwen2 with Q/K/V biases, else Llama."""
    return "qwen3" if config.qk_norm else "qwen2" if config.qkv_bias else "llama"


def family_incompatibilities(config) -> list[str]:
    """Reasons a config cannot be written as a Llama/Qwen2/Qwen3 model (empty when it can): the
    "llama" column of config.FIELD_SUPPORT."""
    if not isinstance(config, GPTConfig):
        return ["only GPT models can be exported (this is a Seq2Seq model)"]
    return unsupported(config, "llama")


def family_config(config: GPTConfig, dtype: torch.dtype, tokenizer=None) -> dict:
    """GPTConfig -> the config.json of its family, in the older layout (top-level rope_theta and
    rope_scaling), which transformers 4 and 5 both read."""
    kind = family_of(config)
    scaling = None
    if config.rope_scaling == "llama3":
        scaling = {"rope_type": "llama3", "factor": config.rope_factor, "low_freq_factor": config.rope_low_freq_factor,
                   "high_freq_factor": config.rope_high_freq_factor,
                   "original_max_position_embeddings": config.rope_original_max_len}
    out = {
        "model_type": kind, "architectures": [ARCHITECTURES[kind]], "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd, "intermediate_size": config.ff_dim, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.kv_heads, "head_dim": config.head_dim,
        "hidden_act": "silu", "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_weights, "rope_theta": config.rope_theta, "rope_scaling": scaling,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    if kind != "qwen2":
        out["attention_bias"] = False
    if kind == "llama":
        out["mlp_bias"] = False
    else:
        out["use_sliding_window"] = False
    if tokenizer is not None:
        out["bos_token_id"], out["eos_token_id"] = tokenizer.bos_id, tokenizer.eos_id
    return out


# ---------------------------------------------------------------------------------------------
# Weights: memory-mapped safetensors, one file or shards


def weight_files(path: Path) -> dict[str, Path]:
    """Each tensor's name -> the safetensors file that holds it: model.safetensors, or the shards that
    model.safetensors.index.json lists (each checked to exist)."""
    index = path / INDEX_FILE
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map object")
        try:  # a shard's name, read from the file, must not lead out of the directory
            files = {name: reading.confined(path, file, index, f"weight_map[{name!r}]")
                     for name, file in weight_map.items()}
        except reading.DataError as e:
            raise CheckpointError(str(e)) from None
        for file in sorted(set(files.values())):
            if not file.exists():
                raise CheckpointError(f"{path}: shard {file.name}, listed in {INDEX_FILE}, is missing")
        return files
    single = path / WEIGHTS_FILE
    if single.exists():
        return {name: single for name in _open(single).keys()}
    if (path / "pytorch_model.bin").exists():
        raise CheckpointError(f"{path} holds pytorch_model.bin (pickled); convert it to safetensors to load it")
    raise CheckpointError(f"{path} has neither {WEIGHTS_FILE} nor {INDEX_FILE}")


def _open(file: Path, backend: str = "mmap"):
    try:
        reading.check_regular_file(file)  # safetensors would open a FIFO and wait for a writer
    except reading.DataError as e:
        raise CheckpointError(str(e)) from None
    try:
        return safe_open(str(file), framework="pt", backend=backend)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None


def pick_dtype(stored: torch.dtype, asked, device: torch.device) -> torch.dtype:
    """The dtype to compute in: `asked` (a name or torch.dtype) if given; else the weights' own where
    the device multiplies it natively (bf16 on CPUs with AVX512-BF16/AMX and on GPUs, fp16 on GPUs), else float32."""
    if asked not in (None, "auto"):
        if isinstance(asked, torch.dtype) and asked in DTYPES.values():
            return asked
        if asked in DTYPES:
            return DTYPES[asked]
        raise CheckpointError(f"dtype {asked!r} is not one of auto, {', '.join(DTYPES)}")
    if stored == torch.bfloat16 and native_bf16(device):
        return stored
    if stored == torch.float16 and device.type == "cuda":
        return stored
    return torch.float32


def shell(config: GPTConfig) -> GPT:
    """A GPT to hand the weights to, its own never written: GPT(config) with its initialisation
    skipped, whose float32 parameters, never touched, take no memory; where float32 would not fit
    in this machine's memory (GPT refuses it; bf16 weights may still fit), built on the meta device,
    which costs an import of torch's compiler (about 80 MB) to build RoPE's tables there."""
    try:
        return empty_gpt(config)
    except ValueError:
        with torch.device("meta"):
            return GPT(config)


def read_tensors(path: Path, config: GPTConfig, dtype=None, device: torch.device = torch.device("cpu")):
    """The tensors of a family checkpoint under our names, memory-mapped (not copied) where kept in
    their dtype; checked against the config's shapes, for dtype and for finite values."""
    files = weight_files(path)
    embedding = files.get(their_name("tok_emb.weight"))
    stored = STORED_DTYPES.get(_open(embedding).get_slice(their_name("tok_emb.weight")).get_dtype()) \
        if embedding else None
    target = pick_dtype(stored, dtype, device)
    try:
        check_fits_in_memory(config, target.itemsize)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    shapes = {name: tuple(p.shape) for name, p in shell(config).named_parameters()}  # a tied matrix once
    # Kept in their dtype, tensors stay in the mapped file; converted, each is read into memory
    # (pread) and dropped once converted, so the file's pages are not held beside the copies.
    backend = "mmap" if stored == target else "pread"
    handles = {file: _open(file, backend) for file in set(files.values())}
    out = {}
    for ours, shape in shapes.items():
        theirs = their_name(ours)
        if theirs not in files:
            raise CheckpointError(f"{path}: missing tensor {theirs}")
        tensor = handles[files[theirs]].get_tensor(theirs)
        if tuple(tensor.shape) != shape:
            raise CheckpointError(f"{path}: tensor {theirs} has shape {tuple(tensor.shape)}, "
                                  f"the config expects {shape}")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{path}: tensor {theirs} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                                  f"weights must be floating point")
        if not all_finite(tensor):
            raise CheckpointError(f"{path}: tensor {theirs} holds NaN or infinite values")
        out[ours] = tensor if tensor.dtype == target else tensor.to(target)
    used = {their_name(name) for name in shapes}
    ignored = {"lm_head.weight"} if config.tie_weights else set()  # some tied checkpoints store it anyway
    unexpected = sorted(n for n in files if n not in used | ignored and not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor{'s' * (len(unexpected) > 1)} {', '.join(unexpected[:5])}")
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizer, generation settings, chat template


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, {"content": ...}, or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def eos_ids(path: Path, hf_config: dict) -> list[int]:
    """The ids that end a generation: generation_config.json's eos_token_id (one or a list), else config.json's."""
    generation = path / "generation_config.json"
    value = read_json(generation).get("eos_token_id") if generation.exists() else None
    if value is None:
        value = hf_config.get("eos_token_id")
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise CheckpointError(f"{path}: eos_token_id must be an integer or a list of them; got {value!r}")
    return values


def chat_template(path: Path, tokenizer_config: dict) -> str | None:
    """The chat template: chat_template.jinja, or tokenizer_config.json's chat_template (a string, or
    a list of named templates, of which "default")."""
    if (path / "chat_template.jinja").exists():
        try:
            return reading.read_utf8(path / "chat_template.jinja")
        except reading.DataError as e:
            raise CheckpointError(str(e)) from None
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def load_tokenizer(path: Path, hf_config: dict) -> PretrainedTokenizer | None:
    """tokenizer.json with tokenizer_config.json's special tokens, the eos ids and the chat template;
    None without a tokenizer.json."""
    if not (path / TOKENIZER_FILE).exists():
        return None
    settings = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").exists() else {}
    eos, template = eos_ids(path, hf_config), chat_template(path, settings)
    try:
        return PretrainedTokenizer.from_file(
            path / TOKENIZER_FILE, bos=_token_text(settings.get("bos_token")),
            eos=_token_text(settings.get("eos_token")), pad=_token_text(settings.get("pad_token")),
            eos_ids=eos, chat_template=template)
    except reading.DataError as e:  # names the file already
        raise CheckpointError(str(e)) from None
    except ValueError as e:
        raise CheckpointError(f"{path / TOKENIZER_FILE}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Load and export


def load_family(path: Path, hf_config: dict, dtype=None, device="cpu"):
    """A Llama/Mistral/Qwen2/Qwen3 directory -> (GPT in eval mode, PretrainedTokenizer or None).

    Args:
        path: the directory.
        hf_config: its config.json, already read.
        dtype: None or "auto" (the weights' dtype where the device computes it natively, else
            float32), "float32", "bfloat16", "float16" or a torch.dtype.
        device: where the model will run (it is moved there by the caller).
    """
    try:
        config = config_from_family(hf_config)
    except CheckpointError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    tensors = read_tensors(path, config, dtype, torch.device(device))
    model = hand_over(shell(config), tensors)  # the tensors themselves become the parameters
    tokenizer = load_tokenizer(path, hf_config)
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, more than vocab_size "
                              f"{config.vocab_size} in {path / CONFIG_FILE}; they do not belong together")
    return model, tokenizer


def family_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """Our GPT's parameters under Hugging Face's names, a tied matrix once (as model.embed_tokens.weight)."""
    return {their_name(name): p.detach().contiguous() for name, p in model.named_parameters()}


def export_family(model: GPT, out: Path, tokenizer=None) -> Path:
    """Writes config.json, model.safetensors (and the tokenizer's files, for a PretrainedTokenizer) into
    `out`, which transformers' AutoModelForCausalLM.from_pretrained loads with the same logits.
    The caller has checked `out` (checkpoint.export_hf)."""
    dtype = model.tok_emb.weight.dtype
    save_tensors(family_tensors(model), out / WEIGHTS_FILE, metadata={"format": "pt"})
    if isinstance(tokenizer, PretrainedTokenizer):
        atomic_write_text(out / TOKENIZER_FILE, tokenizer.hf.to_str())
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": tokenizer.chat_template}
        for role, id in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id),
                         ("pad_token", tokenizer.pad_id)):
            settings[role] = None if id is None else tokenizer.hf.id_to_token(id)
        atomic_write_json(out / "tokenizer_config.json", settings)
        if tokenizer.eos_ids:
            atomic_write_json(out / "generation_config.json", {"eos_token_id": tokenizer.eos_ids,
                                                               "bos_token_id": tokenizer.bos_id})
    else:
        tokenizer = None
    atomic_write_json(out / CONFIG_FILE, family_config(model.config, dtype, tokenizer))
    return out
