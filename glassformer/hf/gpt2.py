"""GPT-2: Hugging Face's GPT2LMHeadModel directories read into a glassformer GPT, and written back.

The other families (Llama, Mistral, Qwen2, Qwen3) are in glassformer.hf.families; which config
fields each target supports is one table, glassformer.model.config.FIELD_SUPPORT.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glassformer.base.files import atomic_write_json
from glassformer.model.config import GPTConfig, ModelConfig, unsupported
from glassformer.model.gpt import GPT
from glassformer.weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    check_tokenizer_fits,
    gpt_from_tensors,
    load_tensors_only,
    read_tensors,
    save_tensors,
)

HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def config_from_hf(hf: dict) -> GPTConfig:
    """Maps a transformers GPT2Config (as JSON) to a GPTConfig, refusing what the layout cannot express."""
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"GPT-2 activation_function {act!r} is not supported; "
                              f"supported: {', '.join(HF_ACTIVATIONS)}")
    for flag, ok in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                     ("scale_attn_weights", True), ("add_cross_attention", False)):
        if hf.get(flag, ok) != ok:
            raise CheckpointError(f"GPT-2 option {flag}={hf[flag]} is not supported")
    missing = [key for key in ("vocab_size", "n_layer", "n_head", "n_embd") if key not in hf]
    if missing:
        raise CheckpointError(f"GPT-2 config has no {', '.join(missing)}")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", 1024), n_layer=hf["n_layer"],
            n_head=hf["n_head"], n_embd=hf["n_embd"], d_ff=hf.get("n_inner"),
            dropout=0.0, bias=True, norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            norm_position="pre", activation=HF_ACTIVATIONS[act], position="learned",
            tie_weights=hf.get("tie_word_embeddings", True),
        )
    except ValueError as e:  # names the GPTConfig field; GPT-2's own name is given where it differs
        hf_names = {"block_size": "n_positions", "d_ff": "n_inner", "norm_eps": "layer_norm_epsilon",
                    "tie_weights": "tie_word_embeddings"}
        field = str(e).split()[0]
        raise CheckpointError(f"GPT-2 config: {hf_names.get(field, field)}"
                              f"{str(e)[len(field):]}") from None


def hf_incompatibilities(config: ModelConfig) -> list[str]:
    """Reasons a config cannot be written as a transformers GPT-2 model (empty when it can): the
    "gpt2" column of config.FIELD_SUPPORT."""
    if not isinstance(config, GPTConfig):
        return ["only GPT models can be exported to GPT-2 (this is a Seq2Seq model)"]
    return unsupported(config, "gpt2")


def _hf_layer_names(i: int) -> dict[str, str]:
    """Our Linear/norm module names in block i -> GPT-2's (Conv1D weights are stored transposed)."""
    return {
        f"blocks.{i}.attn_norm": f"h.{i}.ln_1",
        f"blocks.{i}.self_attn.o_proj": f"h.{i}.attn.c_proj",
        f"blocks.{i}.ffn_norm": f"h.{i}.ln_2",
        f"blocks.{i}.ffn.up": f"h.{i}.mlp.c_fc",
        f"blocks.{i}.ffn.down": f"h.{i}.mlp.c_proj",
    }


def tensors_from_hf(hf: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """GPT-2 state dict (with or without the "transformer." prefix) -> our names and layout.

    `hf` is emptied as its tensors are converted: a transposed matrix's original is dropped as soon
    as its copy is made, so the conversion holds one matrix beyond the weights, not a second set.
    """
    for name in list(hf):
        tensor = hf.pop(name)
        # Old checkpoints carry the causal mask as buffers named attn.bias / attn.masked_bias; we build our own.
        if not name.endswith((".attn.bias", ".attn.masked_bias")):
            hf[name.removeprefix("transformer.")] = tensor
        del tensor

    def take(name):
        if name not in hf:
            raise CheckpointError(f"GPT-2 checkpoint is missing tensor {name}")
        return hf.pop(name)

    out = {"tok_emb.weight": take("wte.weight"), "pos_emb.weight": take("wpe.weight")}
    for i in range(config.n_layer):
        # c_attn is one Conv1D (C, 3C) computing x @ W + b: split into W_Q, W_K, W_V as Linear (out, in).
        qkv_w, qkv_b = take(f"h.{i}.attn.c_attn.weight"), take(f"h.{i}.attn.c_attn.bias")
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), qkv_w.t().chunk(3, dim=0), qkv_b.chunk(3)):
            out[f"blocks.{i}.self_attn.{name}.weight"] = w.contiguous()  # (C, 3C) -> three (C, C) copies
            out[f"blocks.{i}.self_attn.{name}.bias"] = b.clone()  # its own memory, not a view of c_attn's
        del qkv_w, qkv_b, w, b
        for ours, theirs in _hf_layer_names(i).items():
            w = take(f"{theirs}.weight")
            out[f"{ours}.weight"] = w if theirs.split(".")[-1].startswith("ln") else w.t().contiguous()
            out[f"{ours}.bias"] = take(f"{theirs}.bias")
            del w
    out["final_norm.weight"], out["final_norm.bias"] = take("ln_f.weight"), take("ln_f.bias")
    lm_head = hf.pop("lm_head.weight", None)
    if not config.tie_weights:
        if lm_head is None:
            raise CheckpointError("GPT-2 checkpoint has tie_word_embeddings=false but no lm_head.weight")
        out["lm_head.weight"] = lm_head
    if hf:
        raise CheckpointError(f"GPT-2 checkpoint has unexpected tensors: {', '.join(sorted(hf)[:5])}")
    return out


def tensors_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """Our GPT -> GPT2LMHeadModel's state dict. Missing biases (bias=False) are written as zeros."""
    c = model.config
    ours = model.state_dict()

    def get(name, shape):
        return ours[name] if name in ours else torch.zeros(shape)

    out = {"transformer.wte.weight": ours["tok_emb.weight"], "transformer.wpe.weight": ours["pos_emb.weight"]}
    C = c.n_embd
    for i in range(c.n_layer):
        p = f"blocks.{i}.self_attn"
        w = torch.cat([ours[f"{p}.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj")], dim=0)  # (3C, C)
        b = torch.cat([get(f"{p}.{n}.bias", (C,)) for n in ("q_proj", "k_proj", "v_proj")])
        out[f"transformer.h.{i}.attn.c_attn.weight"], out[f"transformer.h.{i}.attn.c_attn.bias"] = w.t(), b
        for mine, theirs in _hf_layer_names(i).items():
            w = ours[f"{mine}.weight"]
            out[f"transformer.{theirs}.weight"] = w if theirs.split(".")[-1].startswith("ln") else w.t()
            out[f"transformer.{theirs}.bias"] = get(f"{mine}.bias", (w.shape[0],))
    out["transformer.ln_f.weight"] = ours["final_norm.weight"]
    out["transformer.ln_f.bias"] = get("final_norm.bias", (C,))
    if not c.tie_weights:
        out["lm_head.weight"] = ours["lm_head.weight"]
    return {k: v.detach().contiguous() for k, v in out.items()}


def load_hf_gpt2(path: Path, hf_config: dict):
    try:
        config = config_from_hf(hf_config)
    except CheckpointError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    weights = path / WEIGHTS_FILE
    if weights.exists():
        tensors = read_tensors(weights)  # each tensor read into memory of its own
    elif (path / "pytorch_model.bin").exists():
        tensors = load_tensors_only(path / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{path} has neither {WEIGHTS_FILE} nor pytorch_model.bin")
    # The file's tensors become the parameters (transposed ones copied, their originals dropped at once).
    model = gpt_from_tensors(config, tensors_from_hf(tensors, config), str(path))
    tokenizer = None
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
        from glassformer.data.tokenizers import BPETokenizer

        tokenizer = BPETokenizer.from_gpt2(path)
    check_tokenizer_fits(tokenizer, config, path, "vocab.json")
    return model, tokenizer


def export_gpt2(model: GPT, out: Path) -> Path:
    """Writes model.safetensors and config.json of a GPT2LMHeadModel into `out` (already checked by the caller)."""
    c = model.config
    hf_act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[c.activation]
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": c.vocab_size,
        "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
        "n_inner": c.d_ff, "activation_function": hf_act, "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "tie_word_embeddings": c.tie_weights, "scale_attn_weights": True,
    }
    save_tensors(tensors_to_hf(model), out / WEIGHTS_FILE, metadata={"format": "pt"})
    atomic_write_json(out / CONFIG_FILE, hf_config)
    return out
