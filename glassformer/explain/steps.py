"""The walkthrough as data: a list of Steps read off a Trace of the real model.

A Step holds numbers and labels only; the renderers (terminal, HTML) add the narration
in the chosen language. Nothing here recomputes the model: every matrix is a recorded
intermediate, except display statistics (a LayerNorm's row means and deviations, the
softmax of the final logits) and the mask drawn as 0 / −∞.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..trace import Trace


@dataclass
class Step:
    kind: str  # key of glassformer.explain.narration.NARRATION
    section: str  # "input" | "encoder" | "decoder" | "output"
    matrix: np.ndarray | None = None  # 2-D values to show
    rows: list[str] | None = None  # row labels (usually tokens)
    cols: list[str] | None = None  # column labels
    layer: int | None = None
    head: int | None = None
    heatmap: bool = False  # attention probabilities: drawn as a heatmap
    sublayer: str | None = None  # within a layer: "self" | "cross" (attention) | "ffn"
    table: list[list[str]] | None = None  # non-numeric content (corpus, vocabulary, decoding)
    header: list[str] | None = None
    extra: dict = field(default_factory=dict)  # e.g. {"predicted": "you", "p": 0.41}

    @property
    def key(self) -> str:
        """A stable identifier, e.g. "encoder-l1-h1-probs"."""
        parts = [self.section]
        if self.layer is not None:
            parts.append(f"l{self.layer + 1}")
        if self.head is not None:
            parts.append(f"h{self.head + 1}")
        return "-".join(parts + [self.kind])


def matrix(t: torch.Tensor) -> np.ndarray:
    """A recorded tensor as a 2-D float array (a 1-D one becomes one row)."""
    a = t.detach().float().cpu().numpy()
    return a[None, :] if a.ndim == 1 else a


def norm_statistics(norm, x: torch.Tensor) -> tuple[np.ndarray, list[str]]:
    """(T, C) -> (T, n) the statistics the norm module computes per row (LayerNorm: μ and σ), and their names."""
    stats = norm.statistics(x)
    return matrix(torch.stack(list(stats.values()), dim=-1)), list(stats)


def mask_matrix(masked: torch.Tensor) -> np.ndarray:
    """Scores after masking -> the mask itself: 0 where allowed, −∞ where not."""
    return np.where(np.isneginf(matrix(masked)), -np.inf, 0.0)


def head_weights(attn, h: int) -> dict[str, np.ndarray]:
    """Head h's W_Q, W_K, W_V as (d_model, d_k) matrices: X W_Q gives that head's queries."""
    d = attn.q_proj.out_features // attn.n_head
    rows = slice(h * d, (h + 1) * d)  # this head's output rows of each nn.Linear (out, in) weight
    return {kind: matrix(proj.weight[rows].t()) for kind, proj in
            (("weights_q", attn.q_proj), ("weights_k", attn.k_proj), ("weights_v", attn.v_proj))}


def attention_steps(trace: Trace, attn, prefix: str, section: str, layer: int, q_labels, k_labels,
                    cross: bool = False, show_weights: bool = False) -> list[Step]:
    """(W_Q, W_K, W_V,) Q, K, V, QKᵀ, scaling, mask, softmax, ×V per head, then concatenation and W_O."""
    core = f"{prefix}.core"
    sub = "cross" if cross else "self"
    steps = []
    n_head = trace[f"{core}.q"].size(1)
    for h in range(n_head):
        def s(kind, key, rows, cols, **kw):
            return Step(kind, section, matrix(trace[key][0, h]), rows, cols, layer, h, sublayer=sub, **kw)

        if show_weights:
            for kind, w in head_weights(attn, h).items():
                steps.append(Step(kind, section, w, None, None, layer, h, sublayer=sub))

        steps.append(s("cross_q" if cross else "q", f"{core}.q", q_labels, None))
        steps.append(s("cross_kv" if cross else "k", f"{core}.k", k_labels, None))
        steps.append(s("v", f"{core}.v", k_labels, None))
        steps.append(s("scores", f"{core}.scores", q_labels, k_labels))
        steps.append(s("scaled", f"{core}.scaled", q_labels, k_labels))
        if f"{core}.masked" in trace:
            steps.append(Step("mask", section, mask_matrix(trace[f"{core}.masked"][0, h]), q_labels, k_labels,
                              layer, h, sublayer=sub))
        steps.append(s("probs", f"{core}.probs", q_labels, k_labels, heatmap=True))
        steps.append(s("head_out", f"{core}.out", q_labels, None))
    if n_head > 1:
        steps.append(Step("concat", section, matrix(trace[f"{prefix}.o_proj.in"][0]), q_labels, None, layer,
                          sublayer=sub))
    steps.append(Step("attn_out", section, matrix(trace[f"{prefix}.o_proj"][0]), q_labels, None, layer, sublayer=sub))
    return steps


def residual_steps(trace: Trace, prefix: str, section: str, layer: int, labels,
                   pre_norm: bool, sub: str) -> tuple[list[Step], list[Step]]:
    """(steps before the sublayer, steps after it) of the residual connection around sublayer `sub`."""
    stats, names = norm_statistics(trace.model.get_submodule(f"{prefix}.norm"), trace[f"{prefix}.norm.in"][0])
    norm = [Step("ln_stats", section, stats, labels, names, layer, sublayer=sub),
            Step("ln_out", section, matrix(trace[f"{prefix}.norm"][0]), labels, None, layer, sublayer=sub)]
    if pre_norm:  # x + Sublayer(LN(x)): the norm comes first, the sum is the residual's output
        return norm, [Step("residual", section, matrix(trace[prefix][0]), labels, None, layer, sublayer=sub)]
    # LN(x + Sublayer(x)): "Add & Norm", the sum is what the norm receives
    return [], [Step("residual", section, matrix(trace[f"{prefix}.norm.in"][0]), labels, None, layer,
                     sublayer=sub), *norm]


def block_steps(trace: Trace, model, prefix: str, section: str, layer: int, labels, memory_labels,
                show_weights: bool = False) -> list[Step]:
    """Every step of one Transformer layer (the Block at module path `prefix`)."""
    config, block = model.config, model.get_submodule(prefix)
    pre = config.norm_position == "pre"
    steps = []
    before, after = residual_steps(trace, f"{prefix}.attn_res", section, layer, labels, pre, "self")
    steps += before + attention_steps(trace, block.self_attn, f"{prefix}.self_attn", section, layer, labels, labels,
                                      show_weights=show_weights) + after
    if block.cross_attn is not None:
        before, after = residual_steps(trace, f"{prefix}.cross_res", section, layer, labels, pre, "cross")
        steps += before + attention_steps(trace, block.cross_attn, f"{prefix}.cross_attn", section, layer, labels,
                                          memory_labels, cross=True, show_weights=show_weights) + after
    before, after = residual_steps(trace, f"{prefix}.ffn_res", section, layer, labels, pre, "ffn")
    steps += before
    for kind, name in (("ffn_hidden", "up"), ("ffn_act", "act"), ("ffn_out", "down")):
        steps.append(Step(kind, section, matrix(trace[f"{prefix}.ffn.{name}"][0]), labels, None, layer,
                          sublayer="ffn"))
    return steps + after


def input_steps(trace: Trace, section: str, emb: str, call: int, first_block: str, labels) -> list[Step]:
    """Embedding, positional encoding (when the model adds one) and their sum.

    `call` picks the recorded call: the encoder's is 0, the decoder's 1 (they share the
    position table, and with a shared vocabulary the embedding too).
    """
    embeddings = trace.all(emb)
    steps = [Step("embedding", section, matrix(embeddings[min(call, len(embeddings) - 1)][0]), labels)]
    positions = trace.all("pos_emb")
    if positions:
        learned = "pos_emb.weight" in trace.model.state_dict()  # a trained table, not the sinusoid
        steps.append(Step("positional_learned" if learned else "positional", section, matrix(positions[call]), labels))
    steps.append(Step("emb_sum", section, matrix(trace[f"{first_block}.in"][0]), labels))
    return steps


def output_steps(trace: Trace, labels, vocab: list[str], top: int = 5) -> list[Step]:
    """Logits, probabilities and the predicted next word at the last position."""
    logits = trace["lm_head"][0]  # (T, V)
    probs = torch.softmax(logits.float(), dim=-1)
    cols = vocab if len(vocab) == logits.size(-1) else None
    best = probs[-1].topk(min(top, probs.size(-1)))
    table = [[vocab[i] if i < len(vocab) else str(i), f"{p:.4f}"] for p, i in zip(best.values.tolist(),
                                                                                  best.indices.tolist())]
    return [
        Step("logits", "output", matrix(logits), labels, cols),
        Step("softmax_out", "output", matrix(probs), labels, cols, heatmap=True),
        Step("prediction", "output", table=table, header=["token", "p"],
             extra={"predicted": table[0][0], "p": float(best.values[0])}),
    ]
