"""Checkpoint directories (config.json + model.safetensors + tokenizer.json) and Hugging Face interop.

A glassformer checkpoint directory holds:
  config.json        {"format": "glassformer", "model_type": "gpt" | "seq2seq", "config": asdict(config)}
  model.safetensors  the weights, each tied matrix stored once
  tokenizer.json     the tokenizer, when the model has one
  manifest.json      the SHA-256 of each file above, written last: the files of one checkpoint
                     are published as a set. `load` reads the files, checks them against the
                     manifest and reads again while a writer is between two sets, so a reader
                     never gets parts of two checkpoints; with no writer, a file that differs is
                     refused. A directory without one loads as it is.

`load` also reads a Hugging Face GPT-2 directory (config.json with model_type "gpt2" and
model.safetensors, or pytorch_model.bin read with weights_only=True), and Llama, Mistral, Qwen2
and Qwen3 directories (glassformer.hf.families); `export_hf` writes either layout back. Nothing is unpickled
beyond plain tensors. Every file is written atomically: a temporary file, then a rename.
"""

from __future__ import annotations

import hashlib
import pickle
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file, save_file

from glassformer.base import reading
from glassformer.base.files import atomic_write, atomic_write_json
from glassformer.model.config import GPTConfig, ModelConfig, config_from_dict, model_type, unsupported
from glassformer.model.gpt import GPT
from glassformer.model.seq2seq import Seq2Seq

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
FORMAT = "glassformer"
MANIFEST_WAIT_S = 10.0  # how long `load` waits for a writer to finish a checkpoint set


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing files, bad JSON, missing or mismatched tensors."""


def save_tensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> None:
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(tmp):
        save_file(contiguous, tmp, metadata=metadata)

    atomic_write(path, write)


def read_json(path: Path) -> dict:
    """The JSON object in file `path` (a regular file of at most 64 MiB, nested at most 100 levels;
    glassformer.base.reading); one-line CheckpointError naming the file otherwise."""
    try:
        data = reading.read_json(path)
    except reading.DataError as e:
        raise CheckpointError(_not_found(e, path)) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def _not_found(error: reading.DataError, path: Path) -> str:
    """A read error's message, in the words this module always used for a missing file."""
    return f"{path} not found" if str(error) == f"{path}: no such file" else str(error)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        reading.check_regular_file(path)  # safetensors would open a FIFO and wait for a writer
    except reading.DataError as e:
        raise CheckpointError(_not_found(e, path)) from None
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


# ---------------------------------------------------------------------------------------------
# Models <-> state dicts


def build_model(config: ModelConfig) -> GPT | Seq2Seq:
    return GPT(config) if isinstance(config, GPTConfig) else Seq2Seq(config)


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors with each shared (tied) tensor kept once, under its first name."""
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.stride())
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def check_tensors(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple], source: str) -> None:
    """Raises CheckpointError naming any tensor missing from, unexpected in or mis-shaped in `tensors`."""
    missing = [k for k in shapes if k not in tensors]
    unexpected = [k for k in tensors if k not in shapes]
    if missing:
        raise CheckpointError(f"{source}: missing tensor{'s' * (len(missing) > 1)} {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor{'s' * (len(unexpected) > 1)} "
                              f"{', '.join(unexpected[:5])}")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise CheckpointError(f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                                  f"the config expects {tuple(shape)}")


def check_values(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raises CheckpointError naming a tensor that is not floating point (fp16/bf16 are converted) or not finite."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: tensor {name} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                                  f"weights must be floating point (float32, float16 or bfloat16)")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: tensor {name} holds NaN or infinite values")


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copies `tensors` into `model`, naming any missing, unexpected, mis-shaped, non-float or non-finite tensor."""
    expected = unique_state_dict(model)
    check_tensors(tensors, {name: tuple(t.shape) for name, t in expected.items()}, source)
    check_values({name: tensors[name] for name in expected}, source)
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(tensors[name])


# Tensor names older glassformer checkpoints and resume.pt files use -> today's: each block's norms
# lived in a residual-connection module (`attn_res.norm`); they are now the block's own (`attn_norm`).
# The parameters' order did not change, so optimizer states saved by position still match.
RENAMED = {".attn_res.norm.": ".attn_norm.", ".cross_res.norm.": ".cross_norm.", ".ffn_res.norm.": ".ffn_norm."}


def current_name(name: str) -> str:
    """A tensor name from any glassformer checkpoint -> the name today's model gives it (see RENAMED)."""
    for old, new in RENAMED.items():
        name = name.replace(old, new)
    return name


def renamed(tensors: dict) -> dict:
    """`tensors` (or any dict keyed by tensor name) with every name as today's model gives it."""
    return {current_name(name): value for name, value in tensors.items()}


# ---------------------------------------------------------------------------------------------
# glassformer checkpoints


def save(model: GPT | Seq2Seq, path, tokenizer=None, extra: dict | None = None,
         tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Writes config.json, model.safetensors and (if given) tokenizer.json into directory `path`.

    `tensors`: the weights to write instead of the model's own (gathered from a sharded model).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": 1, "model_type": model_type(model.config), "config": asdict(model.config)}
    if extra:
        meta.update(extra)
    tensors = unique_state_dict(model) if tensors is None else tensors
    save_tensors(tensors, path / WEIGHTS_FILE, metadata={"format": "pt"})
    atomic_write_json(path / CONFIG_FILE, meta)
    names = [CONFIG_FILE, WEIGHTS_FILE]
    if tokenizer is not None:
        tokenizer.save(path / TOKENIZER_FILE)
        names.append(TOKENIZER_FILE)
    # Written last: until it is, readers see the previous set (or wait for this one).
    atomic_write_json(path / MANIFEST_FILE, {"files": {name: _sha256((path / name).read_bytes()) for name in names}})
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checkpoint_set(path: Path) -> dict[str, bytes] | None:
    """The bytes of each file the manifest of checkpoint `path` names, all of one set; None without a manifest.

    A writer replaces the files one by one and the manifest last: while a writer holds the
    directory (glassformer.training.rundir), files that do not match the manifest are read again (for up
    to MANIFEST_WAIT_S seconds) until they do. A writer killed midway leaves its lock file behind
    (a live one removes it as it ends): its files are read as they are, with a warning (a killed
    run always loads). Otherwise a file that does not match was changed after the checkpoint was
    saved and is refused in one line naming it: loaded anyway, a tokenizer or config would be
    paired with weights it was not made with. Removing manifest.json is how a user says the
    change was on purpose. Each name the manifest lists must be a file inside `path`.
    """
    from glassformer.training.rundir import LOCK_FILE, live_writer

    manifest = path / MANIFEST_FILE
    deadline = time.monotonic() + MANIFEST_WAIT_S
    while True:
        if not manifest.exists():
            return None
        files = read_json(manifest).get("files")
        if not isinstance(files, dict):
            raise CheckpointError(f"{manifest} does not list the checkpoint's files")
        contents, problem = {}, None
        for name, digest in files.items():
            file = _listed_file(path, name)
            try:
                data = reading.read_file(file, _bound_of(name))
            except reading.DataError as e:
                if not str(e).endswith("no such file"):
                    raise CheckpointError(str(e)) from None
                problem = f"{file}, listed in {manifest}, is missing"
                break
            if _sha256(data) != digest:
                problem = f"{file} differs from the SHA-256 in {manifest}"
                break
            contents[name] = data
        else:
            return contents
        writer = live_writer(path)
        if writer is None and (path / LOCK_FILE).exists():  # its writer was killed before it could finish
            warnings.warn(f"{problem}: {path} was being written by a process that was stopped; loading its files "
                          f"as they are (resume the run to write a whole checkpoint)", stacklevel=2)
            return None
        if writer is None:
            raise CheckpointError(f"{problem}: it was changed after the checkpoint was saved; "
                                  f"if you changed it on purpose, remove {manifest}")
        if time.monotonic() > deadline:
            raise CheckpointError(f"{path} is being written by process {writer} and did not hold a whole "
                                  f"checkpoint for {MANIFEST_WAIT_S:g} s; try again")
        time.sleep(0.05)


def _listed_file(path: Path, name) -> Path:
    """path / name for a name read from manifest.json, which must stay inside the checkpoint directory."""
    try:
        return reading.confined(path, name, path / MANIFEST_FILE, "a file name under 'files'")
    except reading.DataError as e:
        raise CheckpointError(str(e)) from None


def _bound_of(name: str) -> reading.Bound | None:
    """A checkpoint file's size bound: none for the weights (read whole by design), else a tokenizer's or JSON's."""
    if name == WEIGHTS_FILE:
        return None
    return reading.TOKENIZER if name.endswith(TOKENIZER_FILE) else reading.JSON


def load(path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None):
    """Loads a checkpoint directory -> (model in eval mode, tokenizer or None).

    Args:
        path: a glassformer checkpoint, or a Hugging Face GPT-2, Llama, Mistral, Qwen2 or Qwen3
            directory (config.json's model_type; see glassformer.hf.families for the last four).
        device: where the model runs.
        dtype: None or "auto": Llama/Mistral/Qwen weights keep their bf16/fp16 where the device
            computes it natively, everything else is float32; or "float32", "bfloat16", "float16".
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory")
    files = read_checkpoint_set(path)  # the bytes of one checkpoint set, or None: read the files as they are
    if files is not None and not {CONFIG_FILE, WEIGHTS_FILE} <= files.keys():
        raise CheckpointError(f"{path / MANIFEST_FILE} does not list {CONFIG_FILE} and {WEIGHTS_FILE}")
    meta = read_json(path / CONFIG_FILE) if files is None else _json_from_bytes(files[CONFIG_FILE], path / CONFIG_FILE)
    from glassformer.hf import families as hf

    if meta.get("model_type") == "gpt2":
        model, tokenizer = load_hf_gpt2(path, meta)
    elif meta.get("model_type") in hf.FAMILIES and meta.get("format") != FORMAT:
        model, tokenizer = hf.load_family(path, meta, dtype, device)
        return model.to(device).eval(), tokenizer
    elif meta.get("format") == FORMAT:
        values = meta.get("config")
        if not isinstance(values, dict):  # without it a default-sized model would be built, then found wanting
            raise CheckpointError(f"{path / CONFIG_FILE}: key 'config' must hold the model settings "
                                  f"(a JSON object); got {values!r}")
        try:
            config = config_from_dict(meta.get("model_type", ""), values)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
        for key in ("vocab_size", "src_vocab_size", "tgt_vocab_size"):  # 0 is only a preset's "from the tokenizer"
            if getattr(config, key, 1) < 1:
                raise CheckpointError(f"{path / CONFIG_FILE}: {key} must be at least 1; got {getattr(config, key)}")
        model = build_model(config)
        if files is None:
            tensors = read_tensors(path / WEIGHTS_FILE)
            tokenizer = _load_tokenizer(path / TOKENIZER_FILE)
        else:
            tensors = _tensors_from_bytes(files[WEIGHTS_FILE], path / WEIGHTS_FILE)
            tokenizer = _load_tokenizer(path / TOKENIZER_FILE, files.get(TOKENIZER_FILE, b""))
        load_weights(model, renamed(tensors), str(path / WEIGHTS_FILE))
        check_tokenizer_fits(tokenizer, config, path)
    else:
        supported = ", ".join(("gpt2", *hf.FAMILIES))
        raise CheckpointError(f"{path / CONFIG_FILE} is neither a glassformer checkpoint nor a supported Hugging "
                              f"Face model: model_type {meta.get('model_type')!r}; supported: {supported}")
    if dtype not in (None, "auto"):
        model = model.to(hf.pick_dtype(torch.float32, dtype, torch.device(device)))
    return model.to(device).eval(), tokenizer


def check_tokenizer_fits(tokenizer, config: ModelConfig, path: Path, tokenizer_file: str = TOKENIZER_FILE) -> None:
    """Raises CheckpointError when the tokenizer has more ids than the model's (target) vocabulary.

    A smaller tokenizer is fine: the vocabulary may be padded (nanoGPT pads 50257 to 50304).
    """
    if tokenizer is None:
        return
    size = config.vocab_size if isinstance(config, GPTConfig) else config.tgt_vocab_size
    key = "vocab_size" if isinstance(config, GPTConfig) else "tgt_vocab_size"
    if tokenizer.vocab_size > size:
        raise CheckpointError(f"{path / tokenizer_file} has {tokenizer.vocab_size} tokens, more than the model's "
                              f"{key} {size} in {path / CONFIG_FILE}; they do not belong together")


def _load_tokenizer(path: Path, data: bytes | None = None):
    """The tokenizer in `path` (or in `data`, its bytes already read; b"": none); None when there is none."""
    if data == b"" or (data is None and not path.exists()):
        return None
    from glassformer.data.tokenizers import load_tokenizer

    if data is None:
        return load_tokenizer(path)
    try:
        text = reading.decode_text(data, path)
    except reading.DataError as e:
        raise CheckpointError(str(e)) from None
    return load_tokenizer(path, text)


def _json_from_bytes(data: bytes, path: Path) -> dict:
    try:
        meta = reading.parse_json(data, path)
    except reading.DataError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return meta


def _tensors_from_bytes(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


# ---------------------------------------------------------------------------------------------
# Hugging Face GPT-2: config and parameter layout

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
    """GPT-2 state dict (with or without the "transformer." prefix) -> our names and layout."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    # Old checkpoints carry the causal mask as buffers named attn.bias / attn.masked_bias; we build our own.
    hf = {k: v for k, v in hf.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}

    def take(name):
        if name not in hf:
            raise CheckpointError(f"GPT-2 checkpoint is missing tensor {name}")
        return hf.pop(name)

    out = {"tok_emb.weight": take("wte.weight"), "pos_emb.weight": take("wpe.weight")}
    for i in range(config.n_layer):
        # c_attn is one Conv1D (C, 3C) computing x @ W + b: split into W_Q, W_K, W_V as Linear (out, in).
        qkv_w, qkv_b = take(f"h.{i}.attn.c_attn.weight"), take(f"h.{i}.attn.c_attn.bias")
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), qkv_w.t().chunk(3, dim=0), qkv_b.chunk(3)):
            out[f"blocks.{i}.self_attn.{name}.weight"], out[f"blocks.{i}.self_attn.{name}.bias"] = w, b
        for ours, theirs in _hf_layer_names(i).items():
            w = take(f"{theirs}.weight")
            out[f"{ours}.weight"] = w if theirs.split(".")[-1].startswith("ln") else w.t()
            out[f"{ours}.bias"] = take(f"{theirs}.bias")
    out["final_norm.weight"], out["final_norm.bias"] = take("ln_f.weight"), take("ln_f.bias")
    lm_head = hf.pop("lm_head.weight", None)
    if not config.tie_weights:
        if lm_head is None:
            raise CheckpointError("GPT-2 checkpoint has tie_word_embeddings=false but no lm_head.weight")
        out["lm_head.weight"] = lm_head
    if hf:
        raise CheckpointError(f"GPT-2 checkpoint has unexpected tensors: {', '.join(sorted(hf)[:5])}")
    return {k: v.contiguous() for k, v in out.items()}


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


def load_tensors_only(path: Path):
    """torch.load of a file of tensors and plain values, refusing anything else in one line.

    weights_only=True makes torch refuse pickled objects instead of running their code; its
    own message is several lines long and suggests weights_only=False, which must not be done
    with a file one did not write, so it is replaced here.
    """
    try:
        reading.check_regular_file(path)  # torch.load would open a FIFO and wait for a writer
    except reading.DataError as e:
        raise CheckpointError(_not_found(e, path)) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds pickled Python objects, whose code glassformer will not run; convert "
                              f"it to safetensors with a program you trust (e.g. transformers' save_pretrained "
                              f"with safe_serialization=True) and load that") from None
    except Exception as e:  # truncated, or not a torch file at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read: {first}") from None


def load_hf_gpt2(path: Path, hf_config: dict):
    try:
        config = config_from_hf(hf_config)
    except CheckpointError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None
    weights = path / WEIGHTS_FILE
    if weights.exists():
        tensors = read_tensors(weights)
    elif (path / "pytorch_model.bin").exists():
        tensors = load_tensors_only(path / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{path} has neither {WEIGHTS_FILE} nor pytorch_model.bin")
    model = GPT(config)
    load_weights(model, tensors_from_hf(tensors, config), str(path))
    tokenizer = None
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
        from glassformer.data.tokenizers import BPETokenizer

        tokenizer = BPETokenizer.from_gpt2(path)
    check_tokenizer_fits(tokenizer, config, path, "vocab.json")
    return model, tokenizer


def export_hf(model: GPT, out, overwrite: bool = False, source=None, tokenizer=None) -> Path:
    """Writes a directory that transformers' from_pretrained loads with the same logits: a GPT-2
    (GPT2LMHeadModel) where the model has GPT-2's layout, else a Llama, Qwen2 or Qwen3 one
    (glassformer.hf.families.family_of) where it has theirs.

    Args:
        model: the GPT to export.
        out: the directory to write; it must be new or empty unless `overwrite`.
        overwrite: write into `out` even though it holds files (their same-named files are replaced).
        source: the checkpoint directory `model` came from; `out` may never be it.
        tokenizer: for Llama/Qwen, a PretrainedTokenizer to write beside the weights
            (tokenizer.json, tokenizer_config.json, generation_config.json); other kinds are not written.

    Returns:
        `out`, as a Path.
    """
    from glassformer.hf.families import export_family, family_incompatibilities

    problems = hf_incompatibilities(model.config)
    family_problems = family_incompatibilities(model.config) if problems else []
    if problems and family_problems:
        raise CheckpointError("not GPT-2-compatible: " + "; ".join(problems) + "; nor Llama/Qwen-compatible: "
                              + "; ".join(family_problems))
    c = model.config
    out = Path(out)
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the checkpoint being exported; give another directory")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} already holds files; give an empty or new directory, "
                         f"or --overwrite to write into it anyway")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a glassformer checkpoint's manifest would not match these files
    if problems:
        return export_family(model, out, tokenizer)
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
