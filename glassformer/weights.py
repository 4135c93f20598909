"""Weights on disk: safetensors files and state dicts, read and checked; the names of a checkpoint's files.

Below both the glassformer checkpoint format (glassformer.checkpoint) and the Hugging Face
conversions (glassformer.hf): what they share, so that neither imports the other.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from glassformer.base import reading
from glassformer.base.files import atomic_write
from glassformer.model.config import GPTConfig, ModelConfig

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


