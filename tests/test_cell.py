"""The dot-product lens (glassformer.explain.cell): for every op kind of several architectures, the
parts the lens shows recompute the value the model recorded, checked here with NumPy alone (not
with explain.recompute): the products are the two vectors' products and sum (plus the bias) to the
cell; the softmax's exponential over the sum is the probability; the norm's mean and variance are the
row's, and (x − μ)/σ·γ + β the cell; an elementwise op's inputs, through its function, the cell.

Tolerances: the model computes in float32 (unit roundoff u = 6e-8). A dot product of k terms differs
from the float64 sum by at most about k·u·Σ|products|; with k ≤ 64 here, 1e-5 of Σ|products| bounds
it with room. Other ops do a handful of float32 operations per value: 1e-5 of the value's scale."""

import math

import numpy as np
import pytest
import torch

from glassformer.data.tokenizers import CharTokenizer, WordTokenizer
from glassformer.explain.cell import cell
from glassformer.explain.walkthrough import gpt_walkthrough, seq2seq_walkthrough, walkthrough_data
from glassformer.explore.api import ApiError, Explorer

GPT_VARIANTS = {
    "gpt2": {},
    "llama": dict(norm="rmsnorm", position="rope", activation="swiglu", n_head=4, n_kv_head=2, bias=False),
    "qwen3": dict(norm="rmsnorm", position="rope", activation="swiglu", qk_norm=True, n_kv_head=1, bias=False),
    "post-ln": dict(position="sinusoidal", activation="relu", norm_position="post", n_segments=2, embed_norm=True),
    "gelu": dict(activation="gelu", tie_weights=False),
}


def f(x) -> float:
    """A lens number (null: −∞) as a float."""
    return -math.inf if x is None else float(x)


def arr(xs) -> np.ndarray:
    return np.array([f(x) for x in xs])


def cells(step):
    """The cells checked: the last, the one in the middle, and the first row's last (a masked score)."""
    shape = step.values.shape
    picks = {tuple(n - 1 for n in shape), tuple(n // 2 for n in shape)}
    if len(shape) == 2:
        picks.add((0, shape[1] - 1))
    return sorted(picks)


def check_cell(w, step, at) -> None:
    part = cell(w, step.id, list(at))
    value = f(part["value"])
    assert value == pytest.approx(float(step.values[at])) or value == float(step.values[at])
    inputs = [w.step(i).values.astype(np.float64) if w.step(i).values.dtype.kind == "f" else w.step(i).values
              for i in step.inputs]
    kind = part["kind"]
    if kind == "leaf":
        if step.op == "weight":  # the cell is the model's parameter at param_index
            assert part["param_index"][0] - at[0] == step.params.get("rows", [0])[0]
        return
    if kind == "dot":
        r, c = at
        left = inputs[0][r]
        right = inputs[1][c] if step.op == "linear" else inputs[1][:, c]
        assert np.array_equal(arr(part["left"]["values"]), left)
        assert np.array_equal(arr(part["right"]["values"]), right)
        products = arr(part["products"])
        assert np.array_equal(products, left * right)
        bias = inputs[2][c] if step.op == "linear" and len(inputs) > 2 else 0.0
        assert (part["bias"] is None) == (step.op == "matmul" or len(inputs) == 2)
        if part["bias"] is not None:
            assert f(part["bias"]["value"]) == bias
        total = products.sum() + bias
        assert f(part["sum"]) == pytest.approx(products.sum(), rel=1e-12, abs=1e-12)
        assert abs(total - value) <= 1e-5 * (np.abs(products).sum() + abs(bias)) + 1e-7, (step.id, at)
    elif kind == "softmax":
        r, c = at
        x = inputs[0][r] / part["temperature"]
        assert np.array_equal(arr(part["input"]["values"]), inputs[0][r])
        exps = np.exp(x - x.max())
        assert np.allclose(arr(part["exps"]), exps, rtol=1e-12, atol=0)
        assert f(part["sum"]) == pytest.approx(exps.sum(), rel=1e-12)
        assert abs(f(part["exp"]) / f(part["sum"]) - value) <= 1e-5 * max(value, 1e-3), (step.id, at)
    elif kind == "norm":
        r, c = at
        x = inputs[0][r]
        gamma = inputs[1]
        beta = inputs[2] if len(inputs) > 2 else np.zeros_like(gamma)
        eps = step.params["eps"]
        if step.op == "layer_norm":
            assert f(part["mean"]) == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
            assert f(part["variance"]) == pytest.approx(x.var(), rel=1e-9, abs=1e-12)
            normed = (x - x.mean()) / np.sqrt(x.var() + eps)
        else:
            assert f(part["mean_square"]) == pytest.approx((x * x).mean(), rel=1e-9, abs=1e-12)
            normed = x / np.sqrt((x * x).mean() + eps)
        assert np.allclose(arr(part["normed"]), normed, rtol=1e-9, atol=1e-12)
        assert np.array_equal(arr(part["gamma"]["values"]), gamma)
        expected = normed[c] * gamma[c] + beta[c]
        assert abs(expected - value) <= 1e-5 * (abs(normed[c] * gamma[c]) + abs(beta[c]) + 1), (step.id, at)
    elif kind == "stat":
        x = inputs[0][at[0]]
        eps = step.params.get("eps", 0)
        expected = {"mean": x.mean(), "std": math.sqrt(x.var() + eps), "rms": math.sqrt((x * x).mean() + eps)}[step.op]
        assert abs(expected - value) <= 1e-5 * max(1, abs(value)), (step.id, at)
    elif kind == "elementwise":
        xs = [f(o["value"]) if not isinstance(o["value"], bool) else o["value"] for o in part["operands"]]
        for o, a in zip(part["operands"], inputs):
            assert o["value"] == (bool(a[tuple(o["index"])]) if a.dtype == np.bool_ else float(a[tuple(o["index"])]))
        x = xs[0]
        expected = {"add": lambda: sum(xs), "mul": lambda: xs[0] * xs[1], "scale": lambda: x * part["factor"],
                    "relu": lambda: max(x, 0.0), "relu2": lambda: max(x, 0.0) ** 2,
                    "gelu": lambda: 0.5 * x * (1 + math.erf(x / math.sqrt(2))),
                    "gelu_tanh": lambda: 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
                    "silu": lambda: x / (1 + math.exp(-x)), "mask": lambda: x if xs[1] else -math.inf}[step.op]()
        if math.isinf(expected):
            assert value == expected
        else:
            assert abs(expected - value) <= 1e-5 * max(1, abs(value)), (step.id, at, step.op)
    elif kind == "rope":
        a, b = (f(o["value"]) for o in part["operands"])
        d = step.values.shape[-1]
        i = at[1] % (d // 2)  # the "half" pairing: channel i with i + d/2
        angle = part["position"] * step.params["theta"] ** (-2 * i / d)
        assert part["angle"] == pytest.approx(angle, rel=1e-12)
        first = at[1] < d // 2  # the cell is the pair's first channel (a·cos − b·sin) or its second (a·sin + b·cos)
        expected = a * math.cos(angle) - b * math.sin(angle) if first else a * math.sin(angle) + b * math.cos(angle)
        assert abs(expected - value) <= 1e-5 * max(1, abs(a) + abs(b)), (step.id, at)
    elif kind == "moved":
        (o,) = part["operands"]
        if step.op == "transpose":
            assert o["index"] == [at[1], at[0]]
        assert f(o["value"]) == value
    elif kind == "lookup":
        table = inputs[0]
        token = int(inputs[1][at[0]])
        assert part["token_id"] == token and table[(token, *at[1:])] == value
    elif kind == "sinusoidal":
        r, c = at
        angle = step.params["positions"][r] / step.params["base"] ** (2 * (c // 2) / step.params["d_model"])
        assert abs((math.sin if c % 2 == 0 else math.cos)(angle) - value) <= 1e-6
    elif kind == "argmax":
        assert int(np.argmax(inputs[0].reshape(-1, inputs[0].shape[-1])[at[0]])) == value
    elif kind == "pair":
        assert part["previous"] * part["vocab_size"] + part["token_id"] == value
    else:
        raise AssertionError(f"unchecked kind {kind}")
    assert f(part["recomputed"]) == pytest.approx(value, rel=1e-4, abs=1e-6) or f(part["recomputed"]) == value


def check_walkthrough(w) -> set[str]:
    ops = set()
    for step in w.steps:
        if step.values is None:
            continue
        ops.add(step.op)
        for at in cells(step):
            check_cell(w, step, at)
    return ops


@pytest.mark.parametrize("name", GPT_VARIANTS)
def test_every_gpt_cell_recomputes_from_its_parts(name, tiny_gpt):
    tok = CharTokenizer.train("the quick brown fox jumps over the lazy dog")
    model = tiny_gpt(vocab_size=tok.vocab_size, **GPT_VARIANTS[name])
    ops = check_walkthrough(gpt_walkthrough(model, tok, "the lazy dog"))
    assert {"linear", "matmul", "softmax", "add", "scale", "mask", "concat", "embedding"} <= ops
    assert ops & {"layer_norm", "rms_norm"} and ops & {"relu", "gelu", "gelu_tanh", "silu"}
    if GPT_VARIANTS[name].get("position") == "rope":
        assert "rope" in ops


def test_every_seq2seq_cell_recomputes_from_its_parts(tiny_seq2seq):
    tok = WordTokenizer.train("ich bin hier und du bist da\ni am here and you are there")
    v = tok.vocab_size
    model = tiny_seq2seq(src_vocab_size=v, tgt_vocab_size=v, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
                         position="sinusoidal", scale_embeddings=True)
    ops = check_walkthrough(seq2seq_walkthrough(model, tok, tok, "ich bin hier"))
    assert {"sinusoidal", "linear", "matmul", "softmax", "layer_norm", "mask"} <= ops


def test_a_weight_cell_names_its_parameter(tiny_gpt):
    tok = CharTokenizer.train("abc ")
    model = tiny_gpt(vocab_size=tok.vocab_size)
    w = gpt_walkthrough(model, tok, "abc")
    part = cell(w, "dec.0.self.h1.q.weight", [2, 5])  # head 1's rows of W_Q start at d_head = 16
    assert part["name"] == "blocks.0.self_attn.q_proj.weight" and part["param_index"] == [18, 5]
    assert f(part["value"]) == float(model.get_parameter(part["name"]).detach()[18, 5])
    with pytest.raises(ValueError, match="outside"):
        cell(w, "dec.0.self.h1.q", [99, 0])
    with pytest.raises(ValueError, match="no step"):
        cell(w, "nope", [0, 0])


def test_the_endpoint_answers_for_a_truncated_step_with_the_edit(checkpoint):
    """/api/cell reads every value, also of a step the page has only a corner of, with the request's edit."""
    from glassformer.explain.walkthrough import load_subject

    explorer = Explorer(load_subject(checkpoint), "tiny")
    text = "ROMEO: wherefore"  # 16 tokens, the block size
    edit = {"name": "blocks.0.self_attn.q_proj.weight", "index": [20, 3], "value": 2.5}
    data = walkthrough_data(explorer.subject.walkthrough(text), 64)
    assert next(s for s in data["steps"] if s["id"] == "dec.0.self.h1.q").get("truncated")
    # Row 15: outside the 8 × 8 corner the page has.
    answer = explorer.call("cell", {"text": text, "edits": [edit], "id": "dec.0.self.h1.q", "index": [15, 4]})
    assert answer["right"]["values"][3] == 2.5  # W_Q row 16 + 4 = 20 holds the edit at column 3
    assert answer["right"]["name"] == edit["name"] and answer["right"]["param_row"] == 20
    products = arr(answer["products"])
    assert abs(products.sum() + answer["bias"]["value"] - answer["value"]) <= 1e-5 * (np.abs(products).sum() + 1)
    with torch.no_grad():
        assert float(explorer.params[edit["name"]][20, 3]) != 2.5  # put back after the call
    for body, match in (({"id": "dec.0.self.h1.q", "index": [0]}, "index"),
                        ({"id": "dec.0.self.h1.q", "index": [0, 99]}, "outside"),
                        ({"id": 3, "index": [0, 0]}, "id must"), ({"id": "x", "index": [0, 0]}, "no step")):
        with pytest.raises(ApiError, match=match) as e:
            explorer.call("cell", {"text": text, **body})
        assert e.value.status == 422
