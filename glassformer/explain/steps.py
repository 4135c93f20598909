"""The walkthrough as data: Steps read off a Trace of the real model, each saying how it is computed.

Each Step has a stable `id`, an `op` with its `inputs` (ids of earlier steps) and `params`,
and the values the model really computed (recorded by `glassformer.observe.trace.Trace`). Leaves
(`ids`, `weight`, `constant`, `table`) hold token ids, parameters, masks and text. The ops
are defined, in NumPy, by `glassformer.explain.recompute`, which recomputes every step from
its inputs; the test suite checks that it matches for every architecture the config allows.

Which steps a layer has follows what the model computes: RMSNorm shows its RMS and no mean,
SwiGLU its gate, up, silu(gate) and product, RoPE its rotated queries and keys (and no
position table), pre-LN its norm before the sublayer and post-LN after the sum.

Nothing here computes the model's math: values are the recorded intermediates, except for
the embedding rows picked from the table before scaling, a transpose (Kᵀ), the norms' row
statistics (computed by the norm module's own `statistics`), and the final softmax/argmax.
Shapes drop the batch axis: a walkthrough reads one sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from glassformer.explain.recompute import LEAVES
from glassformer.model.gpt import bigram_ids
from glassformer.model.layers import LayerNorm, ReLUSquared, RMSNorm
from glassformer.observe.trace import Trace


@dataclass
class Step:
    id: str  # unique and stable, e.g. "dec.0.self.h1.probs"
    op: str  # how it is computed from its inputs (see recompute.OPS)
    kind: str  # what it is called and how it is explained: a key of narration.NARRATION
    inputs: list[str] = field(default_factory=list)  # ids of the steps it is computed from
    params: dict = field(default_factory=dict)
    values: np.ndarray | None = None  # numbers (ids as integers, a mask as booleans)
    section: str = "input"  # "input" | "encoder" | "decoder" | "output"
    layer: int | None = None
    head: int | None = None
    sublayer: str | None = None  # "embed" | "self" | "cross" | "ffn" | "final" | "head"
    group: int | None = None  # grouped-query attention: the K/V head a step belongs to
    rows: list[str] | None = None  # row labels (tokens)
    cols: list[str] | None = None  # column labels (tokens, or vocabulary words)
    display: str = "values"  # "values" | "probabilities" | "mask": how a renderer colours it
    table: list[list[str]] | None = None  # non-numeric content (op "table")
    header: list[str] | None = None
    fill: dict = field(default_factory=dict)  # values the narration's formula and title mention

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAVES




def array(t: torch.Tensor) -> np.ndarray:
    """A recorded tensor (batch axis already taken off) as a NumPy array of its own dtype kind."""
    t = t.detach().cpu()
    if t.dtype == torch.bool:
        return t.numpy()
    if not t.is_floating_point():
        return t.long().numpy()
    return t.float().numpy()


class Steps:
    """Collects a walkthrough's steps in order, with the labels and placement they share."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.model = trace.model
        self.list: list[Step] = []
        self.ids: set[str] = set()
        self.where: dict = {}  # section, layer, sublayer, rows, head of the steps being added

    def add(self, id: str, op: str, kind: str, values, inputs=(), **kw) -> str:
        if id in self.ids:
            raise ValueError(f"walkthrough step id {id!r} used twice")
        place = {**self.where, **kw}
        group_size = place.pop("group_size", None)  # narrated with a grouped-query K/V step's title
        if place.get("group") is not None:
            place["fill"] = {**place.get("fill", {}), "group_size": group_size}
        if isinstance(values, torch.Tensor):
            values = array(values)
        self.list.append(Step(id, op, kind, list(inputs), values=values, **place))
        self.ids.add(id)
        return id

    def weight(self, id: str, kind: str, name: str, features: tuple[int, int] | None = None, **kw) -> str:
        """A parameter of the model as a leaf: `name` is its state-dict key; `features` (start, stop)
        takes a slice of its first axis (one head's rows of W_Q, in nn.Linear's (out, in) form)."""
        tensor = self.model.get_parameter(name)
        params = {"name": name}
        if features is not None:
            tensor = tensor[features[0]:features[1]]
            params["rows"] = list(features)
        kw.setdefault("rows", None)
        kw.setdefault("head", self.where.get("head"))
        return self.add(id, "weight", kind, tensor, params=params, **kw)


def rec(trace: Trace, name: str, call: int = -1) -> torch.Tensor:
    """A recorded intermediate without its batch axis (call: which call of a module called several times)."""
    return trace.all(name)[call][0] if call != -1 else trace[name][0]


# ---------------------------------------------------------------------------------------------
# Norms


def norm_steps(s: Steps, prefix: str, module: str, x: str, x_values: torch.Tensor) -> str:
    """The norm at module path `module` applied to step `x`: its row statistics, its gains and the result."""
    norm = s.model.get_submodule(module)
    stats = norm.statistics(x_values)
    eps = norm.eps
    if isinstance(norm, RMSNorm):
        s.add(f"{prefix}.rms", "rms", "stats_rms", stats["rms"][:, None], [x], params={"eps": eps}, fill={"eps": eps})
        gamma = s.weight(f"{prefix}.weight", "norm_gain", f"{module}.weight")
        return s.add(prefix, "rms_norm", "rms_norm", rec(s.trace, module), [x, gamma], params={"eps": eps},
                     fill={"eps": eps})
    assert isinstance(norm, LayerNorm)
    s.add(f"{prefix}.mean", "mean", "stats_mean", stats["μ"][:, None], [x])
    s.add(f"{prefix}.std", "std", "stats_std", stats["σ"][:, None], [x], params={"eps": eps}, fill={"eps": eps})
    inputs = [x, s.weight(f"{prefix}.weight", "norm_gain", f"{module}.weight")]
    if norm.bias is not None:
        inputs.append(s.weight(f"{prefix}.bias", "norm_shift", f"{module}.bias"))
    return s.add(prefix, "layer_norm", "layer_norm" if norm.bias is not None else "layer_norm_nobias",
                 rec(s.trace, module), inputs, params={"eps": eps}, fill={"eps": eps})


# ---------------------------------------------------------------------------------------------
# Attention


def linear_step(s: Steps, id: str, kind: str, x: str, module: str, values, features=None,
                weight_kind: str = "weight", **kw) -> str:
    """x Wᵀ + b for the nn.Linear at `module` (or its output `features` (start, stop)), weight and bias as leaves."""
    linear = s.model.get_submodule(module)
    inputs = [x, s.weight(f"{id}.weight", weight_kind, f"{module}.weight", features)]
    if linear.bias is not None:
        inputs.append(s.weight(f"{id}.bias", "bias", f"{module}.bias", features))
    return s.add(id, "linear", kind, values, inputs, **kw)


def attention_steps(s: Steps, prefix: str, module: str, x: str, context: str, mask: str | None,
                    positions: list[int] | None, key_labels: list[str]) -> str:
    """Per head: Q, K, V (normed per head where qk_norm, rotated where RoPE), Kᵀ, QKᵀ, scaling, mask,
    softmax, ×V; then the heads concatenated and W_O. `x` feeds the queries, `context` the keys
    and values (the same step for self-attention, the encoder's output for cross-attention).

    With grouped-query attention (n_kv_head < n_head) each K/V head's steps (`kv{g}.k`, ...)
    come once, before the first query head of its group, and every query head of the group
    reads them. Returns the output's id."""
    trace, attn = s.trace, s.model.get_submodule(module)
    core = f"{module}.core"
    n_head, n_kv = attn.n_head, attn.n_kv_head
    group = n_head // n_kv
    d = attn.q_proj.out_features // n_head
    queries, keys = rec(trace, f"{module}.q_proj"), rec(trace, f"{module}.k_proj")  # (T, h*d), (T, h_kv*d)
    rope = None if positions is None else {"theta": s.model.config.rope_theta, "pairing": "half",
                                           "positions": positions}
    c = s.model.config
    if rope is not None and c.rope_scaling == "llama3":  # Llama 3's slowed low frequencies
        rope["scaling"] = {"type": "llama3", "factor": c.rope_factor, "low_freq_factor": c.rope_low_freq_factor,
                           "high_freq_factor": c.rope_high_freq_factor,
                           "original_max_len": c.rope_original_max_len}
    s.where["group_size"] = group
    outs, kv_ids = [], {}

    def key_value_steps(h: int) -> None:  # the K/V head that query head h reads
        g = h // group
        grouped = group > 1
        s.where.update(head=None if grouped else h, group=g if grouped else None)
        kv = f"{prefix}.kv{g}" if grouped else f"{prefix}.h{h}"
        rows = (g * d, (g + 1) * d)
        k = linear_step(s, f"{kv}.k", "k", context, f"{module}.k_proj", keys[:, rows[0]:rows[1]], rows, "weight_k",
                        rows=key_labels)
        v = linear_step(s, f"{kv}.v", "v", context, f"{module}.v_proj", rec(trace, f"{core}.v")[h], rows, "weight_v",
                        rows=key_labels)
        if attn.k_norm is not None:
            k = head_norm_step(s, f"{kv}.k_norm", "k_norm", k, f"{module}.k_norm", g, key_labels)
        if rope is not None:
            k = s.add(f"{kv}.k_rot", "rope", "rope_k", rec(trace, f"{core}.k")[h], [k], params=rope,
                      rows=key_labels, fill={"theta": rope["theta"]})
        kv_ids.update(v=v, kT=s.add(f"{kv}.kT", "transpose", "k_transposed",
                                    rec(trace, f"{core}.k")[h].transpose(-2, -1), [k], rows=None, cols=key_labels))

    def query_steps(h: int) -> str:
        s.where.update(head=h, group=None)
        p = f"{prefix}.h{h}"
        q = linear_step(s, f"{p}.q", "q", x, f"{module}.q_proj", queries[:, h * d:(h + 1) * d], (h * d, (h + 1) * d),
                        "weight_q")
        if attn.q_norm is not None:
            q = head_norm_step(s, f"{p}.q_norm", "q_norm", q, f"{module}.q_norm", h, s.where["rows"])
        if rope is not None:  # queries rotated by their positions, as the keys are; values are not
            q = s.add(f"{p}.q_rot", "rope", "rope_q", rec(trace, f"{core}.q")[h], [q], params=rope,
                      fill={"theta": rope["theta"]})
        return q

    for h in range(n_head):
        if group == 1:  # Q, K, V of one head, in the articles' order
            q = query_steps(h)
            key_value_steps(h)
            s.where.update(head=h)
        else:  # a K/V head's steps once, before the first query head of its group
            if h % group == 0:
                key_value_steps(h)
            q = query_steps(h)
        p = f"{prefix}.h{h}"
        scores = s.add(f"{p}.scores", "matmul", "scores", rec(trace, f"{core}.scores")[h], [q, kv_ids["kT"]],
                       cols=key_labels)
        scaled = s.add(f"{p}.scaled", "scale", "scaled", rec(trace, f"{core}.scaled")[h], [scores],
                       params={"factor": 1 / d ** 0.5}, cols=key_labels, fill={"d": d})
        if mask is not None and f"{core}.masked" in trace:  # (one query alone sees every key: no mask applied)
            scaled = s.add(f"{p}.masked", "mask", "masked", rec(trace, f"{core}.masked")[h], [scaled, mask],
                           cols=key_labels)
        probs = s.add(f"{p}.probs", "softmax", "probs", rec(trace, f"{core}.probs")[h], [scaled],
                      cols=key_labels, display="probabilities")
        outs.append(s.add(f"{p}.out", "matmul", "head_out", rec(trace, f"{core}.out")[h], [probs, kv_ids["v"]]))
    s.where["head"] = None
    heads = outs[0]
    if n_head > 1:
        heads = s.add(f"{prefix}.concat", "concat", "concat", rec(trace, f"{module}.o_proj.in"), outs,
                      params={"axis": -1}, fill={"n": n_head})
    return linear_step(s, f"{prefix}.out", "attn_out", heads, f"{module}.o_proj", rec(trace, f"{module}.o_proj"),
                       weight_kind="weight_o")


def head_norm_step(s: Steps, id: str, kind: str, x: str, module: str, head: int, rows) -> str:
    """Qwen3's RMSNorm over one head's q or k channels (one γ shared by the heads)."""
    norm = s.model.get_submodule(module)
    gamma = s.weight(f"{id}.weight", "head_norm_gain", f"{module}.weight")
    return s.add(id, "rms_norm", kind, rec(s.trace, module)[head], [x, gamma], params={"eps": norm.eps},
                 rows=rows, fill={"eps": norm.eps})


# ---------------------------------------------------------------------------------------------
# Feed-forward, residual connections, blocks

def activation_op(module: nn.Module) -> str:
    """The op an activation module computes (checked against the module, not assumed from the config)."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, ReLUSquared):
        return "relu2"
    if isinstance(module, nn.SiLU):
        return "silu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    raise ValueError(f"the walkthrough does not know the activation {type(module).__name__}")


def ffn_steps(s: Steps, prefix: str, module: str, x: str) -> str:
    """up (and gate), the activation, (their product,) down. Returns the output's id."""
    trace, ffn = s.trace, s.model.get_submodule(module)
    act = activation_op(ffn.act)
    up = linear_step(s, f"{prefix}.up", "ffn_up", x, f"{module}.up", rec(trace, f"{module}.up"),
                     weight_kind="weight_up")
    if ffn.gate is not None:  # SwiGLU: down(silu(gate(x)) * up(x))
        gate = linear_step(s, f"{prefix}.gate", "ffn_gate", x, f"{module}.gate", rec(trace, f"{module}.gate"),
                           weight_kind="weight_gate")
        activated = s.add(f"{prefix}.act", act, f"act_{act}", rec(trace, f"{module}.act"), [gate])
        hidden = s.add(f"{prefix}.hidden", "mul", "ffn_gated", rec(trace, f"{module}.down.in"), [activated, up])
    else:
        hidden = s.add(f"{prefix}.act", act, f"act_{act}", rec(trace, f"{module}.act"), [up])
    return linear_step(s, f"{prefix}.down", "ffn_down_gated" if ffn.gate is not None else "ffn_down", hidden,
                       f"{module}.down", rec(trace, f"{module}.down"), weight_kind="weight_down")


def residual_steps(s: Steps, prefix: str, block: str, norm: str, total: str, x: str, sublayer) -> str:
    """One sublayer inside its residual connection, in the model's order: pre-LN x + f(norm(x)),
    post-LN norm(x + f(x)). `norm` is the sublayer's norm module; `total` the record holding the
    pre-LN sum (the next norm's input, or the block's output); `sublayer(input_id)` adds the
    sublayer's steps and returns its output id."""
    if s.model.get_submodule(block).pre_norm:
        normed = norm_steps(s, f"{prefix}.norm", norm, x, rec(s.trace, f"{norm}.in"))
        out = sublayer(normed)
        return s.add(f"{prefix}.residual", "add", "residual_pre", rec(s.trace, total), [x, out])
    out = sublayer(x)
    summed = s.add(f"{prefix}.residual", "add", "residual_post", rec(s.trace, f"{norm}.in"), [x, out])
    return norm_steps(s, f"{prefix}.norm", norm, summed, rec(s.trace, f"{norm}.in"))


def block_steps(s: Steps, prefix: str, module: str, x: str, mask: str | None, positions: list[int] | None,
                memory: str | None = None, memory_labels: list[str] | None = None) -> str:
    """Every step of the Block at `module`, whose input is step `x`. Returns the block output's id."""
    block = s.model.get_submodule(module)
    labels = s.where["rows"]
    cross = block.cross_attn is not None
    s.where["sublayer"] = "self"
    after_self = f"{module}.cross_norm.in" if cross else f"{module}.ffn_norm.in"  # pre-LN: x + attention
    x = residual_steps(s, f"{prefix}.self", module, f"{module}.attn_norm", after_self, x, lambda i: attention_steps(
        s, f"{prefix}.self", f"{module}.self_attn", i, i, mask, positions, labels))
    if cross:
        s.where["sublayer"] = "cross"
        x = residual_steps(s, f"{prefix}.cross", module, f"{module}.cross_norm", f"{module}.ffn_norm.in", x,
                           lambda i: attention_steps(s, f"{prefix}.cross", f"{module}.cross_attn", i, memory, None,
                                                     None, memory_labels))
    s.where["sublayer"] = "ffn"
    return residual_steps(s, f"{prefix}.ffn", module, f"{module}.ffn_norm", module, x, lambda i: ffn_steps(
        s, f"{prefix}.ffn", f"{module}.ffn", i))


# ---------------------------------------------------------------------------------------------
# Input and output


def embedding_steps(s: Steps, prefix: str, ids: list[int], table: str, call: int, vocab: list[str],
                    position_call: int = 0, segments: list[int] | None = None) -> str:
    """ids -> rows of the embedding table (scaled by √C where the model does), plus the position
    table's rows or the sinusoid where the model adds one, plus the segment embedding. Returns the sum's id.

    `table` is the embedding module's path; `call` which of its recorded calls (a shared table
    is called by the encoder, then by the decoder); `position_call` the same for the position
    table, which the encoder and decoder always share."""
    trace, model = s.trace, s.model
    s.where.update(sublayer="embed", head=None)
    ids_id = s.add(f"{prefix}ids", "ids", "tokens", torch.tensor(ids), cols=s.where["rows"], rows=None,
                   table=[s.where["rows"], [str(i) for i in ids]])
    emb = model.get_submodule(table)
    table_id = s.weight(f"{prefix}embed.table", "embedding_table", f"{table}.weight",
                        rows=vocab if len(vocab) == emb.num_embeddings else None)
    rows = emb.weight[torch.tensor(ids)]  # (T, C): what nn.Embedding looks up
    x = s.add(f"{prefix}embed.tokens", "embedding", "embedding", rows, [table_id, ids_id])
    if emb.scale != 1.0:
        x = s.add(f"{prefix}embed.scaled", "scale", "embedding_scaled", rec(trace, table, call), [x],
                  params={"factor": emb.scale}, fill={"factor": emb.scale})
    parts = [x]
    pair_table = getattr(model, "bigram_emb", None) if prefix == "" else None  # GPT's option
    if pair_table is not None:  # each (previous token, token) pair's row, added
        vocab_size = model.config.vocab_size
        tokens = s.where["rows"]
        joint = "" if all(len(t) <= 1 for t in tokens) else "|"  # "Ya" for characters; "the|cat" for words
        pairs = [("∅" if i == 0 else tokens[i - 1]) + joint + token for i, token in enumerate(tokens)]  # ∅: none before
        pair_ids = s.add(f"{prefix}embed.pairs.ids", "bigram_ids", "pair_ids",
                         bigram_ids(torch.tensor([ids]), vocab_size)[0], [ids_id], params={"vocab_size": vocab_size},
                         rows=None, cols=pairs)
        table_id = s.weight(f"{prefix}embed.pairs.table", "pair_table", "bigram_emb.weight")
        parts.append(s.add(f"{prefix}embed.pairs", "embedding", "pairs", rec(trace, "bigram_emb"),
                           [table_id, pair_ids]))
    positions = list(range(len(ids)))
    kind = model.config.position
    if kind == "learned":
        pos_ids = s.add(f"{prefix}embed.positions.ids", "ids", "position_ids", torch.tensor(positions),
                        rows=None)
        pos_table = s.weight(f"{prefix}embed.positions.table", "position_table", "pos_emb.weight")
        parts.append(s.add(f"{prefix}embed.positions", "embedding", "positions_learned",
                           trace.all("pos_emb")[position_call], [pos_table, pos_ids]))
    elif kind == "sinusoidal":
        parts.append(s.add(f"{prefix}embed.positions", "sinusoidal", "positions_sinusoidal",
                           trace.all("pos_emb")[position_call], params={"positions": positions,
                                                               "d_model": rows.size(-1), "base": 10000.0}))
    if segments is not None:
        seg_ids = s.add(f"{prefix}embed.segments.ids", "ids", "segment_ids", torch.tensor(segments), rows=None)
        seg_table = s.weight(f"{prefix}embed.segments.table", "segment_table", "seg_emb.weight")
        parts.append(s.add(f"{prefix}embed.segments", "embedding", "segments", rec(trace, "seg_emb"),
                           [seg_table, seg_ids]))
    embed_norm = "embed_norm" if prefix == "" and s.model.embed_norm is not None else None  # GPT's option
    if len(parts) > 1:
        x = embedding_sum_step(s, prefix, parts, rec(trace, "embed_norm.in") if embed_norm else None)
    if embed_norm:  # the embeddings normed before the first layer
        x = norm_steps(s, f"{prefix}embed.norm", embed_norm, x, rec(trace, "embed_norm.in"))
    return x


def embedding_sum_step(s: Steps, prefix: str, parts: list[str], values=None) -> str:
    """The embedding terms' sum; its values are the first block's input unless given (a norm follows)."""
    terms = {"embedding": "X", "embedding_scaled": "X·√d_model", "pairs": "B[pair]", "positions_learned": "P[pos]",
             "positions_sinusoidal": "PE", "segments": "S[segment]"}
    wanted = set(parts)
    steps = {step.id: step for step in reversed(s.list) if step.id in wanted}  # the embedding steps just added
    fill = {"terms": " + ".join(terms[steps[part].kind] for part in parts)}
    first_block = "blocks.0" if prefix == "" else ("encoder.0" if prefix == "enc." else "decoder.0")
    if values is None:
        values = rec(s.trace, f"{first_block}.in")
    return s.add(f"{prefix}embed.sum", "add", "embedding_sum", values, parts, fill=fill)


def causal_mask_step(s: Steps, id: str, t: int) -> str:
    """The causal mask as a leaf: True where query i may see key j (j ≤ i)."""
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    return s.add(id, "constant", "causal_mask", mask, params={"what": "causal"}, cols=s.where["rows"],
                 display="mask")


def output_steps(s: Steps, x: str, weight: str, vocab: list[str], tied: bool) -> None:
    """The logits at every position, and at the last one the probabilities and the pick."""
    trace = s.trace
    s.where.update(section="output", layer=None, sublayer="head", head=None)
    cols = vocab if len(vocab) == trace["lm_head"].size(-1) else None
    logits = s.add("logits", "linear", "logits_tied" if tied else "logits", rec(trace, "lm_head"), [x, weight],
                   cols=cols)
    last = rec(trace, "lm_head")[-1:]  # (1, V)
    t = rec(trace, "lm_head").size(0)
    labels = s.where["rows"][-1:]
    nxt = s.add("next.logits", "slice", "next_logits", last, [logits], params={"axis": 0, "start": t - 1, "stop": t},
                rows=labels, cols=cols)
    probs = torch.softmax(last.double(), dim=-1)
    p = s.add("next.probs", "softmax", "next_probs", probs, [nxt], rows=labels, cols=cols, display="probabilities")
    best = int(probs[0].argmax())
    top = probs[0].topk(min(5, probs.size(-1)))
    s.add("next.token", "argmax", "prediction", torch.tensor([best]), [p], rows=None,
          cols=[vocab[best] if best < len(vocab) else str(best)],
          table=[[vocab[i] if i < len(vocab) else str(i), f"{q:.4f}"] for q, i in zip(top.values.tolist(),
                                                                                     top.indices.tolist())],
          header=["token", "p"])
