"""What each walkthrough op means, as NumPy in float64, and a check that recomputes a walkthrough.

This is the ops' definition (the README's schema table says the same in words). It shares
no code with the model (torch, glassformer.model.layers): `check` recomputing every step of a
walkthrough from its inputs and matching the values the model recorded is what makes the
walkthrough true.

    data = json.load(open("walkthrough.json"))
    assert check(data) == []
"""

from __future__ import annotations

import math

import numpy as np


def _row_mean(x, params):
    return x.mean(-1, keepdims=True)


def _row_std(x, params):
    """√(var + eps) with the biased variance, as LayerNorm divides by."""
    return np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True) + params["eps"])


def _row_rms(x, params):
    return np.sqrt((x * x).mean(-1, keepdims=True) + params["eps"])


def _layer_norm(x, gamma, beta=None, *, params):
    y = (x - _row_mean(x, params)) / _row_std(x, params) * gamma
    return y if beta is None else y + beta


def _rms_norm(x, gamma, *, params):
    return x / _row_rms(x, params) * gamma


def _softmax(x, params):
    z = x / params.get("temperature", 1.0)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x, params):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _gelu_tanh(x, params):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _rope(x, params):
    """Rotates each pair of channels of x (T, d) by position · θ^(−2i/d)."""
    d = x.shape[-1]
    positions = np.asarray(params["positions"], dtype=np.float64) if "positions" in params else \
        params["offset"] + np.arange(x.shape[-2], dtype=np.float64)
    freq = params["theta"] ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # (d/2,)
    if "scaling" in params:
        freq = _llama3(freq, params["scaling"])
    angle = positions[:, None] * freq  # (T, d/2)
    cos, sin = np.cos(angle), np.sin(angle)
    if params["pairing"] == "half":  # channel i pairs with i + d/2
        a, b = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]  # "interleaved": channel 2i pairs with 2i + 1
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def _llama3(freq, s):
    """Llama 3's frequencies: a wavelength longer than original_max_len / low_freq_factor is slowed
    by factor, one shorter than original_max_len / high_freq_factor kept, those between blended
    linearly in original_max_len / wavelength."""
    wavelength = 2 * np.pi / freq
    ratio = s["original_max_len"] / wavelength
    blend = np.clip((ratio - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"]), 0, 1)
    return (1 - blend) * freq / s["factor"] + blend * freq


def _sinusoidal(params):
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d))."""
    d = params["d_model"]
    pos = np.asarray(params["positions"], dtype=np.float64)[:, None]
    angle = pos / params["base"] ** (np.arange(0, d, 2, dtype=np.float64) / d)
    table = np.zeros((len(params["positions"]), d))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d // 2])
    return table


def _bigram_ids(ids, params):
    """Token ids (T,) -> rows of the pair table: previous x V + id, the first token's previous being V (none)."""
    v, ids = params["vocab_size"], ids.astype(np.int64)
    return np.concatenate([[v], ids[:-1]]) * v + ids


def _slice(x, params):
    index = [slice(None)] * x.ndim
    index[params["axis"]] = slice(params["start"], params["stop"])
    return x[tuple(index)]


# op -> f(*inputs, params) -> values. Leaves (ids, weight, input, constant, table) are not here.
OPS = {
    "embedding": lambda table, ids, params: table[ids.astype(np.int64)],
    "bigram_ids": _bigram_ids,
    "add": lambda *xs, params: sum(xs[1:], xs[0]),
    "mul": lambda a, b, params: a * b,
    "matmul": lambda a, b, params: a @ b,
    "linear": lambda x, w, b=None, *, params: x @ w.T + (0 if b is None else b),
    "transpose": lambda x, params: np.swapaxes(x, -1, -2),
    "scale": lambda x, params: x * params["factor"],
    "mask": lambda x, keep, params: np.where(keep.astype(bool), x, -np.inf),
    "softmax": _softmax,
    "layer_norm": lambda *xs, params: _layer_norm(*xs, params=params),
    "rms_norm": lambda *xs, params: _rms_norm(*xs, params=params),
    "mean": _row_mean,
    "std": _row_std,
    "rms": _row_rms,
    "relu": lambda x, params: np.maximum(x, 0),
    "relu2": lambda x, params: np.maximum(x, 0) ** 2,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda x, params: x / (1 + np.exp(-x)),
    "rope": _rope,
    "concat": lambda *xs, params: np.concatenate(xs, axis=params["axis"]),
    "slice": _slice,
    # Added for the walkthrough: the sinusoidal table (no inputs) and the index of the largest value.
    "sinusoidal": lambda params: _sinusoidal(params),
    "argmax": lambda x, params: np.argmax(x, axis=-1).reshape(-1),
}
LEAVES = ("ids", "weight", "input", "constant", "table")


def decode_values(values):
    """JSON values -> float64 array: null is −∞ (a masked score); "NaN" and "Infinity" stay what they say."""
    def walk(v):
        if isinstance(v, list):
            return [walk(x) for x in v]
        if v is None:
            return -math.inf
        if isinstance(v, str):
            return float(v.replace("Infinity", "inf"))
        return v
    return np.asarray(walk(values), dtype=np.float64)


def close(computed: np.ndarray, shown: np.ndarray, rtol: float = 1e-4) -> bool:
    """Equal infinities in the same places, finite values within rtol of the step's scale.

    The model computes in float32 (relative rounding 6e-8 per operation); summing a few
    thousand products (a matmul of width ≤ 4096) stays far below 1e-4 of the largest value,
    while a wrong op, a missing bias or a swapped order is off by a sizeable fraction of it.
    """
    if computed.shape != shown.shape:
        return False
    inf_a, inf_b = np.isinf(computed), np.isinf(shown)
    if not np.array_equal(inf_a, inf_b) or not np.array_equal(computed[inf_a], shown[inf_b]):
        return False
    finite = ~inf_a
    if not finite.any():
        return True
    scale = max(1.0, float(np.abs(shown[finite]).max()))
    return float(np.abs(computed[finite] - shown[finite]).max()) <= rtol * scale


def check(data: dict, rtol: float = 1e-4) -> list[str]:
    """Recomputes every non-leaf step of walkthrough data (`glassformer explain --json`) from
    its inputs' values; returns one line per step that does not match, or that could not be
    recomputed (an input shown only as a corner). An empty list: every number is what its op says."""
    values: dict[str, np.ndarray | None] = {}
    problems = []
    for step in data["steps"]:
        sid, op = step["id"], step["op"]
        shown = decode_values(step["values"]) if "values" in step else None
        values[sid] = shown
        if op in LEAVES:
            continue
        if op not in OPS:
            problems.append(f"{sid}: unknown op {op!r}")
            continue
        inputs = [values.get(i) for i in step["inputs"]]
        missing = [i for i, v in zip(step["inputs"], inputs) if v is None]
        if missing or shown is None:
            problems.append(f"{sid}: not recomputable, {'inputs ' + ', '.join(missing) if missing else 'values'} "
                            f"shown only in part")
            continue
        computed = np.asarray(OPS[op](*inputs, params=step.get("params", {})), dtype=np.float64)
        if not close(computed, shown, rtol):
            diff = np.abs(np.nan_to_num(computed - shown, posinf=0, neginf=0)).max() \
                if computed.shape == shown.shape else f"shape {computed.shape} vs {shown.shape}"
            problems.append(f"{sid}: {op} of {', '.join(step['inputs'])} differs from the shown values ({diff})")
    return problems
