"""One token's path through a GPT, as data for the explorer's Flow tab.

    data = flow_data(model, ids, position, labels)

One pass of the model over `ids`, recording (`analysis.record`) only what the chosen position's
vector becomes on its way: its token and position embeddings, and at each layer its queries,
keys and values, its query's attention weights over the context (one row per head), the
attention output added to the residual stream, the feed-forward's hidden activation and output,
and the residual stream after each sublayer. The logit lens of each layer is the library's
(`analysis.unembed` of the recorded streams, what `analysis.logit_lens` computes), the
probabilities at the end are `stages`, the next-token sampler's own filters.

Vectors are sent whole (every value, to 5 significant digits) with their L2 norm: the page draws
a 768- or 3072-wide vector as one strip of colour and says the numbers on hover. Nothing here
computes the model's math; it reads what the model computed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from glassformer.explain.generation import stages
from glassformer.explain.walkthrough import json_values
from glassformer.generation.sampling import within_vocabulary
from glassformer.observe import analysis

DIGITS = 5  # significant digits of each value sent (a value's float32 text costs 8x the time: numpy's shortest repr)
LENS_TOP = 3  # tokens each layer's lens lists (the first is drawn, the rest on hover)
OUTPUT_TOP = 10  # the most likely next tokens drawn as bars at the end


def significant(a: np.ndarray, digits: int = DIGITS) -> list:
    """Values rounded to `digits` significant digits, as floats whose JSON text is that short (the
    nearest double to each rounded decimal). Non-finite values (an edit can make them) go whole
    through json_values, as the walkthrough writes them."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        return json_values(a.astype(np.float32))
    out = np.zeros_like(a)
    nonzero = a != 0
    x = a[nonzero]
    keep = digits - 1 - np.floor(np.log10(np.abs(x)))  # decimals kept: negative for |x| >= 10^digits
    scale = 10.0 ** np.abs(keep)
    # an integer divided (or multiplied) by an exact power of ten: the double nearest the decimal
    out[nonzero] = np.where(keep >= 0, np.round(x * scale) / scale, np.round(x / scale) * scale)
    return out.tolist()


def vector(t: torch.Tensor) -> dict:
    """A vector (n,) -> {"values": every value to DIGITS significant digits, "norm": its exact L2 norm}."""
    t = t.detach().float().flatten()
    return {"values": significant(t.cpu().numpy()), "norm": float(t.double().norm())}


def heads(t: torch.Tensor) -> dict:
    """One position's per-head vectors (h, d) -> a vector of h·d values, head after head, and h."""
    return {**vector(t), "heads": int(t.size(0))}


def sites(model: nn.Module) -> dict[str, list[str] | str]:
    """The Trace names the flow reads, by role; each layer's in the order of `model.blocks`."""
    n = len(model.blocks)
    pre = model.blocks[0].pre_norm
    return {
        "core": [f"blocks.{i}.self_attn.core" for i in range(n)],
        "attn_out": [f"blocks.{i}.self_attn.o_proj" for i in range(n)],
        # the stream after attention is added: the feed-forward's norm reads it (pre-LN), or the
        # attention's Add & Norm wrote it (post-LN)
        "resid_mid": [f"blocks.{i}.ffn_norm.in" if pre else f"blocks.{i}.attn_norm" for i in range(n)],
        "mlp_hidden": [f"blocks.{i}.ffn.down.in" for i in range(n)],
        "mlp_out": [f"blocks.{i}.ffn.down" for i in range(n)],
        "resid": analysis.residual_names(model),  # after the embedding and after each block
    }


def flow_data(model: nn.Module, ids: list[int], position: int, labels: list[str], vocab_limit: int | None = None,
              temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
              output_only: bool = False) -> dict:
    """The path of position `position` of `ids` through a GPT (see the module docstring).

    Args:
        model: a glassformer GPT, in eval mode.
        ids: the token ids read (the context), T of them.
        position: the position followed, 0..T-1.
        labels: token labels by id, for the lens and the probabilities.
        vocab_limit: ids from it up are padding, never listed (the explorer's).
        temperature, top_k, top_p: the sampler's settings the final probabilities go through.
        output_only: the final probabilities alone (one forward pass, nothing recorded): what a
            moved sampling slider needs.

    Returns:
        {"position", "output"} and, unless output_only, {"embedding", "layers", "final"}: each
        vector as {"values", "norm"}; each layer's attention as one row of weights per head over
        positions 0..position.
    """
    T = len(ids)
    if not 0 <= position < T:
        raise ValueError(f"position {position} is outside the text's {T} tokens")
    x = analysis.as_ids(model, ids)
    out: dict = {"position": position}
    if output_only:
        with analysis.inference(model):
            hidden, _ = analysis.record(model, x, [])  # (T, C); the unembedding of one row only
            logits = model.lm_head(hidden[position])  # (V,)
        out["output"] = stages(logits, temperature, top_k, top_p, labels, OUTPUT_TOP, vocab_limit)[0]
        return out
    where = sites(model)
    cores = [f"{core}.{step}" for core in where["core"] for step in ("q", "k", "v", "probs")]
    embeddings = ["tok_emb"] + (["pos_emb"] if model.pos_emb is not None else [])
    final = ["final_norm"] if model.final_norm is not None else []
    names = [*embeddings, *cores, *where["attn_out"], *where["resid_mid"], *where["mlp_hidden"], *where["mlp_out"],
             *where["resid"], *final]
    names = list(dict.fromkeys(names))  # post-LN: a block's output is its last norm's, named once each
    with analysis.inference(model):
        hidden, rec = analysis.record(model, x, names)
        streams = torch.stack([rec[name][0, position] for name in where["resid"]])  # (n_layer + 1, C)
        lens = within_vocabulary(analysis.unembed(model, streams), vocab_limit)  # (n_layer + 1, V)
        logits = model.lm_head(hidden[position])  # (V,): the model's own, = lens[-1]
    lens_probs = torch.softmax(lens.float(), dim=-1)
    best = lens_probs.topk(min(LENS_TOP, lens_probs.size(-1)), dim=-1)
    lens_rows = [[{"id": int(i), "token": labels[i], "p": round(float(q), 6)} for i, q in zip(row_ids, row_p)]
                 for row_ids, row_p in zip(best.indices.tolist(), best.values.tolist())]
    pos_row = None
    if model.pos_emb is not None:
        table = rec["pos_emb"]  # (T, C): the position table has no batch axis
        pos_row = table[position] if table.dim() == 2 else table[0, position]
    out["embedding"] = {"token": vector(rec["tok_emb"][0, position]),
                        "position": None if pos_row is None else vector(pos_row),
                        "sum": vector(streams[0]), "lens": lens_rows[0]}
    out["layers"] = []
    for i, core in enumerate(where["core"]):
        out["layers"].append({
            "q": heads(rec[f"{core}.q"][0, :, position]),  # (h, d): each head's query
            "k": heads(rec[f"{core}.k"][0, :, position]),  # (h_kv, d)
            "v": heads(rec[f"{core}.v"][0, :, position]),
            # (h, position + 1): the query's weights over the context (later keys are masked to 0)
            "attention": [[round(v, 5) for v in row] for row in rec[f"{core}.probs"][0, :, position,
                                                                                 :position + 1].tolist()],
            "attn_out": vector(rec[where["attn_out"][i]][0, position]),
            "resid_mid": {"norm": float(rec[where["resid_mid"][i]][0, position].double().norm())},
            "mlp_hidden": vector(rec[where["mlp_hidden"][i]][0, position]),
            "mlp_out": vector(rec[where["mlp_out"][i]][0, position]),
            "resid": vector(streams[i + 1]),
            "lens": lens_rows[i + 1],
        })
    out["final"] = vector(rec["final_norm"][0, position]) if final else None
    out["output"] = stages(logits, temperature, top_k, top_p, labels, OUTPUT_TOP, vocab_limit)[0]
    return out


__all__ = ["flow_data"]
