"""Token embeddings and the ways positions enter a Transformer: a learned table (GPT-2), the
fixed sinusoidal table (the 2017 paper), or rotations of queries and keys (RoPE, with Llama 3's
scaling); shared by GPT and Seq2Seq through `make_positions` and `add_positions`.

Shapes: B batch, T sequence length, C model width, h heads, d per-head width.
"""

from __future__ import annotations

import math
import typing

import torch
import torch.nn as nn


class TokenEmbedding(nn.Embedding):
    """ids (B, T) -> vectors (B, T, C); optionally scaled by sqrt(C) as in the 2017 paper."""

    def __init__(self, vocab_size: int, d_model: int, scale: bool = False):
        super().__init__(vocab_size, d_model)
        self.scale = math.sqrt(d_model) if scale else 1.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = super().forward(ids)
        return x * self.scale if self.scale != 1.0 else x


class LearnedPositionalEmbedding(nn.Embedding):
    """positions (T,) -> (T, C): one trained vector per position (GPT-2)."""


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); (max_len, d)."""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),)
    angle = pos / 10000 ** (two_i / d_model)  # (L, ceil(d/2))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """positions (T,) -> (T, C): the fixed sinusoidal table of the 2017 paper; no parameters."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


class Llama3Scaling(typing.NamedTuple):
    """Llama 3.1's RoPE scaling: the frequencies a context of `original_max_len` never saw turn
    more than once are slowed by `factor`, fast ones are kept, those between are blended."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_len: int


def llama3_inv_freq(inv_freq: torch.Tensor, s: Llama3Scaling) -> torch.Tensor:
    """RoPE's frequencies (d/2,) -> the same with Llama 3's scaling applied."""
    wavelen = 2 * math.pi / inv_freq  # positions per turn of each channel pair
    low_wavelen = s.original_max_len / s.low_freq_factor  # longer waves than this: slowed by `factor`
    high_wavelen = s.original_max_len / s.high_freq_factor  # shorter waves than this: kept
    smooth = (s.original_max_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq  # between: a linear blend of both
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    return torch.where((wavelen >= high_wavelen) & (wavelen <= low_wavelen), blended, scaled)


class RotaryEmbedding(nn.Module):
    """positions (T,) -> (cos, sin), each (T, d/2), for rotating queries and keys (RoPE).

    Each pair of channels (i, i + d/2) of a head is rotated by the angle pos * theta^(-2i/d),
    so that q·k depends only on the distance between the two positions. `scaling` (Llama 3)
    stretches the slow frequencies for contexts longer than the model was first trained on.
    """

    def __init__(self, d_head: int, max_len: int, theta: float = 10000.0, scaling: Llama3Scaling | None = None):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # (d/2,)
        if scaling is not None:
            inv_freq = llama3_inv_freq(inv_freq, scaling)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (L, d/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions], self.sin[positions]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates (B, h, T, d) by angles given as cos, sin of shape (T, d/2) ("rotate half" layout):
    each channel pair (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos)."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def make_positions(config, d_model: int) -> tuple[nn.Module | None, RotaryEmbedding | None]:
    """A model's position modules, by config.position: (the table added to token embeddings,
    RoPE's rotation of queries and keys); either is None where positions do not enter that way."""
    table = None
    if config.position == "learned":
        table = LearnedPositionalEmbedding(config.block_size, d_model)
    elif config.position == "sinusoidal":
        table = SinusoidalPositionalEncoding(config.block_size, d_model)
    rotary = None
    if config.position == "rope":
        scaling = None
        if config.rope_scaling == "llama3":
            scaling = Llama3Scaling(config.rope_factor, config.rope_low_freq_factor, config.rope_high_freq_factor,
                                    config.rope_original_max_len)
        rotary = RotaryEmbedding(config.head_dim, config.block_size, config.rope_theta, scaling)
    return table, rotary


def add_positions(x: torch.Tensor, past: int, table: nn.Module | None, rotary: RotaryEmbedding | None):
    """Token embeddings (B, T, C) at positions past.. -> (x plus the table's rows (T, C) where the
    model adds a table, RoPE's (cos, sin) for those positions or None)."""
    positions = torch.arange(past, past + x.size(1), device=x.device)  # (T,)
    if table is not None:
        x = x + table(positions)  # (T, C) broadcast over the batch
    return x, rotary(positions) if rotary is not None else None
