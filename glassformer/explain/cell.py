"""The arithmetic behind one cell of a walkthrough step: the numbers it came from, in float64.

The dot-product lens of the explorer: select Q[3, 5] and read the row of X and the column of
W_Qᵀ it multiplies, their elementwise products and their sum plus the bias, as one would on
paper. The same for a softmax (the row, its exponentials after subtracting the max, their sum,
the ratio), the norms (mean, variance or mean square, eps, the normalised row, γ and β) and the
elementwise ops (the inputs at that index and the function).

The parts are read from the step's recorded inputs (every value, also for a step the page shows
only as a corner), and `recomputed` is the cell as `glassformer.explain.recompute.OPS` defines
the op, applied to just the slice of the inputs the cell depends on; `value` is what the model
recorded. They agree to float32 rounding (tests/test_cell.py checks every op kind).

    part = cell(walkthrough, "dec.0.self.h0.q", [3, 5])
    part["products"], part["sum"], part["bias"], part["value"]
"""

from __future__ import annotations

import math

import numpy as np

from glassformer.explain.recompute import LEAVES, OPS, _llama3, _row_mean, _row_rms, _row_std

ELEMENTWISE = ("add", "mul", "scale", "relu", "relu2", "gelu", "gelu_tanh", "silu", "mask")
FUNCTIONS = {  # what an elementwise op computes, as the lens writes it
    "add": "a + b", "mul": "a · b", "scale": "x · factor", "relu": "max(x, 0)", "relu2": "max(x, 0)²",
    "gelu": "x · Φ(x) = ½x(1 + erf(x/√2))", "gelu_tanh": "½x(1 + tanh(√(2/π)(x + 0.044715x³)))",
    "silu": "x · σ(x) = x / (1 + e^−x)", "mask": "x where kept, else −∞",
}


def num(x) -> float | int | bool | str | None:
    """One number as JSON: −∞ as null (a masked score), +∞ and NaN as strings, as the walkthrough writes them."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return None if x < 0 else "Infinity"
    return x


def nums(a: np.ndarray) -> list:
    return [num(x) for x in np.asarray(a).reshape(-1)]


def as_float(a: np.ndarray) -> np.ndarray:
    """A step's values in float64 (booleans and ids kept as they are: a mask, an index)."""
    return a if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)


def check_index(shape: tuple[int, ...], index) -> tuple[int, ...]:
    if not isinstance(index, (list, tuple)) or len(index) != len(shape) or \
            not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise ValueError(f"the index must be {len(shape)} integers (shape {list(shape)})")
    if not all(0 <= i < n for i, n in zip(index, shape)):
        raise ValueError(f"index {list(index)} is outside the step (shape {list(shape)})")
    return tuple(index)


def operand(step, index) -> dict:
    """An input at one index: its id and the value there."""
    return {"id": step.id, "index": list(index), "value": num(step.values[tuple(index)])}


def cell(walkthrough, step_id: str, index) -> dict:
    """The numbers cell `index` of step `step_id` came from.

    Args:
        walkthrough: a `Walkthrough` (its steps hold every value, none truncated).
        step_id: the step's id.
        index: one integer per axis of the step's values.

    Returns:
        {"id", "op", "index", "shape", "value" (recorded), "recomputed" (float64 from the parts),
        "kind" ("dot", "softmax", "norm", "stat", "elementwise", "rope", "lookup", "leaf", ...)}
        plus the parts of that kind (see each `_part` function). ValueError for an unknown step
        or a bad index.
    """
    try:
        step = walkthrough.step(step_id)
    except KeyError:
        raise ValueError(f"no step {step_id!r} in this walkthrough") from None
    if step.values is None:
        raise ValueError(f"step {step_id} is a table; it has no cells")
    at = check_index(step.values.shape, index)
    inputs = [walkthrough.step(i) for i in step.inputs]
    out = {"id": step.id, "op": step.op, "index": list(at), "shape": list(step.values.shape),
           "value": num(step.values[at]), "rows": label(step.rows, at, 0), "cols": label(step.cols, at, 1)}
    if step.op in LEAVES:
        out.update(kind="leaf", recomputed=out["value"])
        if step.op == "weight":  # where the cell sits in the model's parameter
            offset = step.params.get("rows", [0])[0]
            out.update(name=step.params["name"], param_index=[offset + at[0], *at[1:]])
        return out
    part = PARTS.get(step.op)
    if part is None:
        raise ValueError(f"the lens does not know the op {step.op!r}")
    params = step.params or {}
    out.update(part(step, inputs, at, params))
    out["recomputed"] = num(out["recomputed"])
    return out


def label(labels, at, axis):
    """The row (axis 0) or column (axis 1) label of a 2-D cell, where the step has one."""
    if labels is None or len(at) != 2 or len(labels) <= at[axis]:
        return None
    return labels[at[axis]]


# ---------------------------------------------------------------------------------------------
# The parts of each op


def _dot(step, inputs, at, params):
    """linear: x[r] · W[c] + b[c]; matmul: a[r] · b[:, c]. The two vectors, their products, the sum."""
    r, c = at
    x = as_float(inputs[0].values)
    if step.op == "linear":
        w = as_float(inputs[1].values)
        left, right = x[r], w[c]
        bias = as_float(inputs[2].values)[c] if len(inputs) > 2 else None
        recomputed = OPS["linear"](x[r:r + 1], w[c:c + 1], None if bias is None else np.array([bias]), params=params)
        right_at = {"id": inputs[1].id, "row": c, "transposed": True}
    else:
        b = as_float(inputs[1].values)
        left, right, bias = x[r], b[:, c], None
        recomputed = OPS["matmul"](x[r:r + 1], b[:, c:c + 1], params=params)
        right_at = {"id": inputs[1].id, "col": c, "transposed": False}
    products = left * right
    weight = inputs[1]
    if weight.op == "weight":  # the row of the model's parameter the column is
        right_at.update(name=weight.params["name"], param_row=weight.params.get("rows", [0])[0] + c)
    return {"kind": "dot", "left": {"id": inputs[0].id, "row": r, "values": nums(left)}, "right": {**right_at,
            "values": nums(right)}, "products": nums(products), "sum": num(products.sum()),
            "bias": None if bias is None else {"id": inputs[2].id, "index": [c], "value": num(bias)},
            "k_labels": inputs[0].cols if inputs[0].cols is not None and len(inputs[0].cols) == len(left) else None,
            "recomputed": float(recomputed.reshape(-1)[0])}


def _softmax(step, inputs, at, params):
    """The row's inputs, their exponentials after subtracting the max, their sum and the ratio."""
    r, c = at
    x = as_float(inputs[0].values)[r]
    temperature = params.get("temperature", 1.0)
    z = x / temperature
    top = z.max()
    exps = np.exp(z - top)
    total = exps.sum()
    return {"kind": "softmax", "input": {"id": inputs[0].id, "row": r, "values": nums(x)},
            "temperature": temperature, "max": num(top), "shifted": nums(z - top), "exps": nums(exps),
            "sum": num(total), "exp": num(exps[c]), "k_labels": step.cols if step.cols and len(step.cols) == len(x)
            else None, "recomputed": float(OPS["softmax"](x[None], params)[0, c])}


def _norm(step, inputs, at, params):
    """LayerNorm: mean, variance, eps, (x − μ)/σ, γ, β; RMSNorm: mean square, eps, x/RMS, γ."""
    r, c = at
    x = as_float(inputs[0].values)[r:r + 1]  # (1, d)
    gamma = as_float(inputs[1].values)
    beta = as_float(inputs[2].values) if len(inputs) > 2 else None
    eps = params["eps"]
    out = {"kind": "norm", "norm": step.op, "input": {"id": inputs[0].id, "row": r, "values": nums(x[0])},
           "eps": eps, "gamma": {"id": inputs[1].id, "values": nums(gamma)},
           "beta": None if beta is None else {"id": inputs[2].id, "values": nums(beta)}}
    if step.op == "layer_norm":
        mean, std = _row_mean(x, params), _row_std(x, params)
        normed = (x - mean) / std
        out.update(mean=num(mean[0, 0]), variance=num(std[0, 0] ** 2 - eps), std=num(std[0, 0]))
    else:
        rms = _row_rms(x, params)
        normed = x / rms
        out.update(mean_square=num(rms[0, 0] ** 2 - eps), rms=num(rms[0, 0]))
    out["normed"] = nums(normed[0])
    out["recomputed"] = float(OPS[step.op](*([x, gamma] + ([] if beta is None else [beta])), params=params)[0, c])
    return out


def _stat(step, inputs, at, params):
    """A norm's row statistic (mean, std or rms), from the row it summarises."""
    r = at[0]
    x = as_float(inputs[0].values)[r:r + 1]
    return {"kind": "stat", "stat": step.op, "input": {"id": inputs[0].id, "row": r, "values": nums(x[0])},
            "eps": params.get("eps"), "mean": num(_row_mean(x, params)[0, 0]),
            "recomputed": float(OPS[step.op](x, params)[0, 0])}


def _elementwise(step, inputs, at, params):
    """The inputs at the same index (a broadcast input at its own) and the function."""
    ops = []
    for s in inputs:
        shape = s.values.shape
        where = tuple(0 if n == 1 else i for i, n in zip(at[len(at) - len(shape):], shape))
        ops.append(operand(s, where))
    args = [np.asarray(as_float(s.values)[tuple(o["index"])]).reshape(1, 1) for s, o in zip(inputs, ops)]
    recomputed = OPS[step.op](*args, params=params)
    return {"kind": "elementwise", "function": FUNCTIONS[step.op], "operands": ops,
            "factor": params.get("factor"), "recomputed": float(np.asarray(recomputed).reshape(-1)[0])}


def _moved(step, inputs, at, params):
    """transpose, slice, concat: the same number, read from another place."""
    if step.op == "transpose":
        source, where = inputs[0], (*at[:-2], at[-1], at[-2])
    elif step.op == "slice":
        where = list(at)
        where[params["axis"]] += params["start"]
        source = inputs[0]
    else:  # concat along params["axis"]: the input the index falls in
        axis = params["axis"] % len(at)
        offset, where, source = at[axis], None, None
        for s in inputs:
            n = s.values.shape[axis]
            if offset < n:
                where, source = list(at), s
                where[axis] = offset
                break
            offset -= n
    found = operand(source, where)
    return {"kind": "moved", "operands": [found], "recomputed": found["value"]}


def _embedding(step, inputs, at, params):
    """Row ids[r] of the table, column c."""
    table, ids = inputs
    r = at[0]
    token = int(ids.values[r])
    return {"kind": "lookup", "operands": [operand(ids, [r]), operand(table, [token, *at[1:]])],
            "token_id": token, "recomputed": float(as_float(table.values)[(token, *at[1:])])}


def _bigram_ids(step, inputs, at, params):
    """previous id × V + id, the first token's previous being V (none)."""
    ids = inputs[0].values
    r, v = at[0], params["vocab_size"]
    previous = int(ids[r - 1]) if r > 0 else v
    return {"kind": "pair", "previous": previous, "token_id": int(ids[r]), "vocab_size": v,
            "operands": [operand(inputs[0], [r])], "recomputed": int(OPS["bigram_ids"](ids, params)[r])}


def _rope(step, inputs, at, params):
    """Channel c and the channel it is paired with, rotated by position · θ_i."""
    r, c = at
    x = as_float(inputs[0].values)
    d = x.shape[-1]
    position = float(params["positions"][r]) if "positions" in params else params["offset"] + r
    one = {k: v for k, v in params.items() if k not in ("positions", "offset")}
    one["positions"] = [position]
    if params["pairing"] == "half":
        i, partner, first = c % (d // 2), (c + d // 2) % d, c < d // 2
    else:
        i, partner, first = c // 2, c ^ 1, c % 2 == 0
    freq = params["theta"] ** (-2 * i / d)
    if "scaling" in params:
        freq = float(_llama3(np.array([freq]), params["scaling"])[0])
    angle = position * freq
    return {"kind": "rope", "position": position, "pair_index": i, "frequency": freq, "angle": angle,
            "cos": math.cos(angle), "sin": math.sin(angle), "first": first,
            # a: the pair's first channel, b: its second; the cell is the first or the second of the rotated pair
            "operands": [operand(inputs[0], [r, c if first else partner]),
                         operand(inputs[0], [r, partner if first else c])],
            "function": "a·cos − b·sin" if first else "a·sin + b·cos",
            "recomputed": float(OPS["rope"](x[r:r + 1], one)[0, c])}


def _sinusoidal(step, inputs, at, params):
    """sin or cos of position / base^(2i/d)."""
    r, c = at
    position, d, base = params["positions"][r], params["d_model"], params["base"]
    angle = position / base ** (2 * (c // 2) / d)
    return {"kind": "sinusoidal", "position": position, "pair_index": c // 2, "angle": angle,
            "function": "sin" if c % 2 == 0 else "cos", "recomputed": float(OPS["sinusoidal"](params)[r, c])}


def _argmax(step, inputs, at, params):
    """The index of the row's largest value."""
    x = as_float(inputs[0].values)
    row = x.reshape(-1, x.shape[-1])[at[0]]
    best = int(OPS["argmax"](row[None], params)[0])
    return {"kind": "argmax", "input": {"id": inputs[0].id, "row": at[0], "values": nums(row)}, "max": num(row[best]),
            "recomputed": best}


PARTS = {"linear": _dot, "matmul": _dot, "softmax": _softmax, "layer_norm": _norm, "rms_norm": _norm,
         "mean": _stat, "std": _stat, "rms": _stat, "transpose": _moved, "slice": _moved, "concat": _moved,
         "embedding": _embedding, "bigram_ids": _bigram_ids, "rope": _rope, "sinusoidal": _sinusoidal,
         "argmax": _argmax, **{op: _elementwise for op in ELEMENTWISE}}
