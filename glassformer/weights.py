"""Weights on disk: safetensors files and state dicts, read and checked; the names of a checkpoint's files.

Below both the glassformer checkpoint format (glassformer.checkpoint) and the Hugging Face
conversions (glassformer.hf): what they share, so that neither imports the other.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from glassformer.base import reading
from glassformer.base.files import atomic_write
from glassformer.model.config import GPTConfig, ModelConfig
from glassformer.model.gpt import GPT

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
FORMAT = "glassformer"


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


def read_tensors(path: Path, sha256=None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, each read from the file straight into memory of its own.

    No memory map and no second copy: each tensor is allocated once and the file's bytes for it
    are read into it (a file of weights costs its own size in memory, not twice that). Written by
    hand because it measured better: `glassformer.load` of a GPT-2-shaped directory peaked at
    1.03x its weights' bytes with this reader, 3.2x with safetensors.torch.load_file (whose
    memory-mapped pages count until the model is built), bench/load_memory.py, Zen 4, 2026-12-07.
    Files are still written by safetensors (save_file), and tests/test_checkpoint.py reads every
    dtype against safetensors.load_file. The
    layout is checked as safetensors checks it: the header a JSON object of {name: {dtype, shape,
    data_offsets}}, the data of each tensor as long as its dtype and shape say, the tensors
    tiling the data without gaps or overlaps up to the end of the file.

    Args:
        path: the safetensors file.
        sha256: a hashlib object to feed every byte of the file as it is read (the manifest's
            digest of exactly the bytes these tensors hold), or None.

    Returns:
        name -> tensor, in the file's dtypes and shapes.
    """
    try:
        reading.check_regular_file(path)  # open() would wait on a FIFO for a writer
    except reading.DataError as e:
        raise CheckpointError(_not_found(e, path)) from None
    try:
        with open(path, "rb", buffering=0) as f:
            return _read_safetensors(f, os.fstat(f.fileno()).st_size, sha256, path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except OSError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
HEADER_LIMIT = 100 << 20  # safetensors' own bound on the JSON header


def _read_safetensors(f, size: int, sha256, path: Path) -> dict[str, torch.Tensor]:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a readable safetensors file: {why}")

    def read(buffer) -> None:  # fills `buffer` (a writable byte buffer) from the file
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view):
            n = f.readinto(view[done:])
            if not n:
                raise bad("the file ends before its data does")
            done += n
        if sha256 is not None:
            sha256.update(view)

    prefix = bytearray(8)
    read(prefix)
    n = int.from_bytes(prefix, "little")  # the header's length, u64 little-endian
    if n > min(HEADER_LIMIT, size - 8):
        raise bad(f"its header claims {n} bytes")
    header_bytes = bytearray(n)
    read(header_bytes)
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    header.pop("__metadata__", None)
    entries = []
    for name, entry in header.items():
        ok = isinstance(entry, dict) and entry.get("dtype") in SAFETENSORS_DTYPES
        shape, offsets = entry.get("shape") if ok else None, entry.get("data_offsets") if ok else None
        ok = ok and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
        if not ok:
            raise bad(f"tensor {name!r} has no dtype of {', '.join(SAFETENSORS_DTYPES)}, shape and data_offsets")
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
            raise bad(f"tensor {name!r} has {offsets[1] - offsets[0]} bytes for shape {shape} of {entry['dtype']}")
        entries.append((offsets[0], offsets[1], name, dtype, shape))
    entries.sort()
    end = 0
    for begin, stop, name, _, _ in entries:  # the tensors tile the data: no gap, no overlap
        if begin != end:
            raise bad(f"tensor {name!r} starts at byte {begin} of the data, not {end}")
        end = stop
    if 8 + n + end != size:
        raise bad(f"its data is {size - 8 - n} bytes, its tensors {end}")
    tensors = {}
    for begin, stop, name, dtype, shape in entries:
        data = torch.empty(stop - begin, dtype=torch.uint8)  # the tensor's own memory, filled from the file
        read(data.numpy())
        tensors[name] = data.view(dtype).view(shape)  # the same memory read as its dtype and shape
    return tensors


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
        if not all_finite(tensor):
            raise CheckpointError(f"{source}: tensor {name} holds NaN or infinite values")


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN or infinity. One pass of torch.aminmax, which
    makes no temporary of the tensor's size (torch.isfinite makes one, which loading must not
    hold) and is exact: a NaN makes the minimum and maximum NaN, an infinity is one of them."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


class SkipInit(TorchFunctionMode):
    """While open, torch.nn.init's functions leave their tensor as it is. A model built only to be
    handed its weights needs no random values: its parameters, allocated but never written, take
    no memory (the pages of a large allocation are only committed when touched) and no time.
    (Building on the meta device instead makes torch import its compiler, about 80 MB, to
    initialise meta tensors.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]  # the tensor to initialise, untouched
        return func(*args, **(kwargs or {}))


def gpt_from_tensors(config: GPTConfig, tensors: dict[str, torch.Tensor], source: str) -> GPT:
    """A GPT whose parameters are `tensors` themselves, not copies of them, in eval mode.

    The tensors are checked as `load_weights` checks them (every parameter present, none
    unexpected, shapes, floating point, finite); any not in the model's dtype (float32) is
    converted, one at a time. `tensors` is emptied as the model takes them, so that no caller's
    reference keeps a converted tensor's original alive. The model is built with its
    initialisation skipped (SkipInit), then handed the tensors (load_state_dict(assign=True));
    its position tables are computed as GPT.__init__ computes them.
    """
    model = empty_gpt(config)
    expected = dict(model.named_parameters())  # a tied matrix once, as tok_emb.weight
    check_tensors(tensors, {name: tuple(p.shape) for name, p in expected.items()}, source)
    check_values({name: tensors[name] for name in expected}, source)
    for name, p in expected.items():
        if tensors[name].dtype != p.dtype:
            tensors[name] = tensors[name].to(p.dtype)  # the original is dropped here, before the next
    state = {name: tensors.pop(name) for name in expected}
    del expected
    return hand_over(model, state)


def empty_gpt(config: GPTConfig) -> GPT:
    """GPT(config) with its initialisation skipped (SkipInit): parameters allocated, never written."""
    with SkipInit():
        return GPT(config)


def hand_over(model: GPT, tensors: dict[str, torch.Tensor]) -> GPT:
    """`model` with `tensors` (every parameter by name, a tied matrix once, shapes checked) as its
    parameters themselves (load_state_dict(assign=True)), tied again; in eval mode."""
    tied = model.lm_head.weight is model.tok_emb.weight
    if tied:
        tensors = {**tensors, "lm_head.weight": tensors["tok_emb.weight"]}
    model.load_state_dict(tensors, strict=True, assign=True)
    if tied:
        model.lm_head.weight = model.tok_emb.weight  # one Parameter again, as GPT.__init__ ties it
    return model.eval()


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


