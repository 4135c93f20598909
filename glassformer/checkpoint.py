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
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from glassformer.base import reading
from glassformer.base.files import atomic_write_json
from glassformer.model.config import GPTConfig, ModelConfig, config_from_dict, model_type
from glassformer.model.gpt import GPT
from glassformer.model.seq2seq import Seq2Seq
from glassformer.weights import (
    CONFIG_FILE,
    FORMAT,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    check_tokenizer_fits,
    gpt_from_tensors,
    load_weights,
    read_json,
    read_tensors,
    save_tensors,
    unique_state_dict,
)

MANIFEST_WAIT_S = 10.0  # how long `load` waits for a writer to finish a checkpoint set


# ---------------------------------------------------------------------------------------------
# Models <-> state dicts


def build_model(config: ModelConfig) -> GPT | Seq2Seq:
    return GPT(config) if isinstance(config, GPTConfig) else Seq2Seq(config)


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


def read_checkpoint_set(path: Path) -> dict[str, bytes | dict[str, torch.Tensor]] | None:
    """The bytes of each file the manifest of checkpoint `path` names, all of one set (the weights
    file's as its tensors, read straight into memory of their own and hashed as they are read: the
    digest is of the very bytes the tensors hold); None without a manifest.

    A writer replaces the files one by one and the manifest last: while a writer holds the
    directory (glassformer.training.rundir), files that do not match the manifest are read again (for up
    to MANIFEST_WAIT_S seconds) until they do. A writer killed midway leaves its lock file behind
    (a live one removes it as it ends): its files are read as they are, with a warning (a killed
    run always loads). Otherwise a file that does not match was changed after the checkpoint was
    saved and is refused in one line naming it: loaded anyway, a tokenizer or config would be
    paired with weights it was not made with. Removing manifest.json is how a user says the
    change was on purpose. Each name the manifest lists must be a file inside `path`.
    """
    from glassformer.base.locks import LOCK_FILE, live_writer

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
            sha256 = hashlib.sha256()
            try:
                if name == WEIGHTS_FILE:
                    data = read_tensors(file, sha256)
                else:
                    data = reading.read_file(file, _bound_of(name))
                    sha256.update(data)
            except (reading.DataError, CheckpointError) as e:
                if not str(e).endswith(("no such file", "not found")):
                    raise CheckpointError(str(e)) from None
                problem = f"{file}, listed in {manifest}, is missing"
                break
            if sha256.hexdigest() != digest:
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


def publish_again(path: Path) -> Path | None:
    """Makes the checkpoint set in run directory `path` whole again when its last writer was killed
    between writing its files and its manifest: the manifest is written anew over the files as they
    are (all of them the run's own, written by that run). Called by the run's next writer, holding
    its lock, before it trains (`--resume`): otherwise a resumed run that never saves a better
    checkpoint would leave a set that `load` refuses.

    Returns:
        The first listed file that differed from the manifest (or was missing), None when the set was whole.
    """
    manifest = path / MANIFEST_FILE
    if not manifest.exists():
        return None
    files = read_json(manifest).get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{manifest} does not list the checkpoint's files")
    differed = None
    for name, digest in files.items():
        file = _listed_file(path, name)
        if not file.is_file() or _file_sha256(file, name) != digest:
            differed = file
            break
    if differed is not None:
        present = [name for name in files if (path / name).is_file()]
        atomic_write_json(manifest, {"files": {name: _sha256((path / name).read_bytes()) for name in present}})
    return differed


def _file_sha256(file: Path, name: str) -> str:
    """The SHA-256 of a checkpoint's file, the weights read a MiB at a time (never whole in memory)."""
    if name != WEIGHTS_FILE:
        return _sha256(reading.read_file(file, _bound_of(name)))
    sha256 = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
    return sha256.hexdigest()


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
        from glassformer.hf.gpt2 import load_hf_gpt2

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
        if files is None:
            tensors = read_tensors(path / WEIGHTS_FILE)
            tokenizer = _load_tokenizer(path / TOKENIZER_FILE)
        else:
            tensors = files.pop(WEIGHTS_FILE)
            tokenizer = _load_tokenizer(path / TOKENIZER_FILE, files.get(TOKENIZER_FILE, b""))
        tensors = renamed(tensors)
        if isinstance(config, GPTConfig):  # the file's tensors become the parameters: one copy of the weights
            model = gpt_from_tensors(config, tensors, str(path / WEIGHTS_FILE))
        else:
            model = build_model(config)
            load_weights(model, tensors, str(path / WEIGHTS_FILE))
        del tensors
        check_tokenizer_fits(tokenizer, config, path)
    else:
        supported = ", ".join(("gpt2", *hf.FAMILIES))
        raise CheckpointError(f"{path / CONFIG_FILE} is neither a glassformer checkpoint nor a supported Hugging "
                              f"Face model: model_type {meta.get('model_type')!r}; supported: {supported}")
    if dtype not in (None, "auto"):
        model = model.to(hf.pick_dtype(torch.float32, dtype, torch.device(device)))
    return model.to(device).eval(), tokenizer


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


# ---------------------------------------------------------------------------------------------
# Hugging Face GPT-2: config and parameter layout

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
    from glassformer.hf.gpt2 import export_gpt2, hf_incompatibilities

    problems = hf_incompatibilities(model.config)
    family_problems = family_incompatibilities(model.config) if problems else []
    if problems and family_problems:
        raise CheckpointError("not GPT-2-compatible: " + "; ".join(problems) + "; nor Llama/Qwen-compatible: "
                              + "; ".join(family_problems))
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
    return export_gpt2(model, out)
