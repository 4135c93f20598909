"""Tools to ask a GPT why it predicts what it predicts, from outside the model.

    lens = logit_lens(model, ids)                   # (n_layer + 1, T, V): what each layer would predict
    attr = attribute(model, ids, target)            # each head's and feed-forward's direct share of a logit
    logits = ablate(model, ids, heads=[(1, 0)])     # (T, V) with head 0 of layer 1 removed
    result = patch(model, clean_ids, corrupt_ids)   # which sites carry the difference between two inputs

Every function reads one sequence: `ids` is a (T,) or (1, T) tensor (or a list) of token ids, and
per-position results are indexed by position alone (no batch axis). Layers and heads are counted
from 0 here; the printed views (glassformer.explain.render.analysis_view) count them from 1. The model
runs in eval mode (dropout off; its mode is restored afterwards) without gradients; a model with a
segment embedding reads segment 0 at every position.

The residual stream "at layer i" is what block i reads: i = 0 is the embedding (tokens,
positions, segments), i = n_layer the last block's output. Sites are recorded with
`Trace(model, names=...)`, which keeps only what is asked for, and changed with forward hooks
inside a `with`, removed when it ends.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from glassformer.model.layers import LayerNorm
from glassformer.observe.trace import Trace, observe

# ---------------------------------------------------------------------------------------------
# Inputs, sites and runs


def as_ids(model: nn.Module, ids) -> torch.Tensor:
    """ids (T,) or (1, T), a tensor or a list of ints -> a (1, T) long tensor on the model's device."""
    ids = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]  # (T,) -> (1, T)
    if ids.dim() != 2 or ids.size(0) != 1:
        raise ValueError(f"analysis reads one sequence: ids of shape (T,) or (1, T); got {tuple(ids.shape)}")
    if ids.size(1) == 0:
        raise ValueError("ids are empty: there is no position to analyse")
    return ids.to(model.lm_head.weight.device)


def residual_name(layer: int) -> str:
    """The Trace name of the residual stream at `layer`: block `layer`'s input, or the last block's output."""
    return "blocks.0.in" if layer == 0 else f"blocks.{layer - 1}"


def residual_names(model: nn.Module) -> list[str]:
    """The residual stream after the embedding and after each block: n_layer + 1 names."""
    return [residual_name(i) for i in range(len(model.blocks) + 1)]


def head_name(layer: int) -> str:
    """The Trace name of layer `layer`'s heads' outputs softmax(QKᵀ/√d)V, (B, h, T, d), before W_O."""
    return f"blocks.{layer}.self_attn.core.out"


def segments(model: nn.Module, ids: torch.Tensor) -> torch.Tensor | None:
    """Segment 0 at every position of ids where the model has a segment embedding, else None."""
    return torch.zeros_like(ids) if model.seg_emb is not None else None


def forward(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """model(ids) -> logits (B, T, V) for ids (B, T)."""
    return model(ids, segment_ids=segments(model, ids))


def record(model: nn.Module, ids: torch.Tensor, names: Sequence[str]) -> tuple[torch.Tensor, dict]:
    """One pass of ids (1, T) through the model but its unembedding, recording only `names` ->
    (the final hidden states (T, C), which model.lm_head turns into the logits; name -> tensor)."""
    with Trace(model, names=names) as trace:
        hidden = model.hidden(ids, segment_ids=segments(model, ids))[0]
    return hidden, {name: trace[name] for name in names}


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients for the duration; the model's own mode is restored afterwards."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(training)


@contextlib.contextmanager
def hooked(model: nn.Module, forward_hooks: dict | None = None, pre_hooks: dict | None = None):
    """Module path -> hook, registered for the duration (forward hooks may return a replacement
    output, pre-hooks replacement arguments) and always removed; the model counts as observed."""
    modules = dict(model.named_modules())
    handles = []
    try:
        with observe(model):
            for name, hook in (forward_hooks or {}).items():
                handles.append(modules[name].register_forward_hook(hook))
            for name, hook in (pre_hooks or {}).items():
                handles.append(modules[name].register_forward_pre_hook(hook))
            yield model
    finally:
        for handle in handles:
            handle.remove()


def check_layer_head(model: nn.Module, layer: int, head: int | None = None) -> None:
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not 0 <= layer < n_layer:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{n_layer - 1}")
    if head is not None and not 0 <= head < n_head:
        raise ValueError(f"head {head} does not exist: each layer has heads 0..{n_head - 1}")


# ---------------------------------------------------------------------------------------------
# Logit lens


def unembed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A residual stream (..., C) read as the model reads its last one: final norm (pre-LN), then W_U."""
    return model.lm_head(model.final(x))


LENS_ROWS = 256  # (layer, position) rows unembedded per matmul: W_U is read once per chunk, not once per layer


def logit_lens(model: nn.Module, ids, positions: Sequence[int] | None = None) -> torch.Tensor:
    """The logit lens: logits read from the residual stream after the embedding and after each block.

    Each stream goes through the model's final norm (pre-LN models have one; post-LN models'
    blocks end in a norm already, and their streams are read as they are) and the unembedding
    `model.lm_head`. The last entry is the model's own logits (equal up to float rounding: the
    streams of all layers are unembedded together, a few hundred rows per matmul, so that W_U,
    the model's largest matrix, is read once rather than once per layer).

    Args:
        model: a glassformer GPT.
        ids: one sequence of token ids, (T,) or (1, T).
        positions: the positions to read (default all): GPT-2's lens of 512 tokens is 1.3 GB of logits,
            of its last position 2.6 MB.

    Returns:
        (n_layer + 1, T, V) logits (T = len(positions) where given): entry 0 from the embedding,
        entry i from block i's output.
    """
    ids = as_ids(model, ids)
    T = ids.size(1)
    at = list(range(T)) if positions is None else [p + T if p < 0 else p for p in positions]
    if not all(0 <= p < T for p in at):
        raise ValueError(f"positions {list(positions)} are outside the sequence of {T} tokens")
    names = residual_names(model)
    with inference(model):
        _, streams = record(model, ids, names)
        rows = torch.stack([streams[name][0, at] for name in names])  # (n_layer + 1, T', C)
        rows = rows.reshape(-1, rows.size(-1))  # -> ((n_layer + 1) * T', C): one row per (layer, position)
        if rows.size(0) <= LENS_ROWS:  # one chunk: its logits are the output, no copy
            lens = unembed(model, rows)  # (rows, C) -> (rows, V)
        else:
            lens = torch.empty(rows.size(0), model.config.vocab_size, device=ids.device)
            for start in range(0, rows.size(0), LENS_ROWS):  # a chunk at a time: no second copy of the output
                lens[start:start + LENS_ROWS] = unembed(model, rows[start:start + LENS_ROWS])  # (rows, C) -> (rows, V)
    return lens.view(len(names), len(at), -1)  # -> (n_layer + 1, T', V)


def logit_lens_reference(model: nn.Module, ids) -> torch.Tensor:
    """The logit lens read the plain way, one layer at a time at every position: what `logit_lens`
    computes in chunks, kept as its reference (tests compare the two)."""
    ids = as_ids(model, ids)
    with inference(model):
        _, streams = record(model, ids, residual_names(model))
        return torch.stack([unembed(model, stream[0]) for stream in streams.values()])  # (n_layer + 1, T, V)


# ---------------------------------------------------------------------------------------------
# Direct logit attribution


@dataclass
class Attribution:
    """Direct contributions to one logit at the last position, with the final norm's scale frozen."""

    target: int  # the token whose logit is split
    position: int  # the position read (the last)
    logit: float  # the model's logit for `target` there
    heads: torch.Tensor  # (n_layer, n_head): each head's output through its slice of W_O
    ffn: torch.Tensor  # (n_layer,): each feed-forward's output
    remaining: dict[str, float]  # everything else, by name: embeddings, W_O biases, the norm's shift β
    norm: str  # "layernorm" or "rmsnorm": what the frozen scale is
    scale: float  # the frozen σ (LayerNorm) or rms (RMSNorm) of the final residual stream

    def total(self) -> float:
        """The sum of every contribution and remaining term: the logit, up to float rounding."""
        return float(self.heads.sum() + self.ffn.sum()) + sum(self.remaining.values())

    def top(self, k: int = 5) -> list[tuple[int, int | None, float]]:
        """The k components of largest |contribution|, as (layer, head or None for the feed-forward, value)."""
        n_layer, n_head = self.heads.shape
        items = [(i, h, float(self.heads[i, h])) for i in range(n_layer) for h in range(n_head)]
        items += [(i, None, float(self.ffn[i])) for i in range(n_layer)]
        return sorted(items, key=lambda item: -abs(item[2]))[:k]

    def to_dict(self) -> dict:
        return {"target": self.target, "position": self.position, "logit": self.logit,
                "heads": self.heads.tolist(), "ffn": self.ffn.tolist(), "remaining": dict(self.remaining),
                "norm": self.norm, "scale": self.scale, "frozen_scale": True}

    def __repr__(self) -> str:
        scale = "σ" if self.norm == "layernorm" else "rms"
        lines = [f"Attribution(target={self.target}, position={self.position}, logit={self.logit:.4f}, "
                 f"sum={self.total():.4f}; final-norm {scale}={self.scale:.4f} frozen)"]
        for i in range(self.heads.size(0)):
            heads = " ".join(f"{v:+.3f}" for v in self.heads[i].tolist())
            lines.append(f"  block {i + 1}: heads {heads} | ffn {float(self.ffn[i]):+.3f}")
        lines += [f"  {name}: {value:+.3f}" for name, value in self.remaining.items()]
        return "\n".join(lines)


def attribute(model: nn.Module, ids, target: int) -> Attribution:
    """Each head's and each feed-forward's direct contribution to `target`'s logit at the last position.

    A pre-LN model's final residual stream is a sum: x = embeddings + Σ_layers (attention output
    + feed-forward output), and each attention output is Σ_heads W_O[:, head] · head output + b_O.
    The final norm is linear in x once its per-row scale is frozen at the value the actual x
    gives (σ for LayerNorm, rms for RMSNorm; the standard approximation of direct logit
    attribution): LN(x) = γ ⊙ (x − mean(x)) / σ + β, RMSNorm(x) = γ ⊙ x / rms. So the logit
    u · norm(x) (u = W_U[target]) splits into one term per component c: u · (γ ⊙ (c − mean(c)) / σ)
    (LayerNorm: each component carries its own share of the mean-centring) or u · (γ ⊙ c / rms).
    A head's term is its output through its columns of W_O; a feed-forward's includes its down
    bias. The remaining terms: the token, position, segment and pair (bigram) embeddings, the
    W_O biases of all layers, and u · β. Contributions plus remaining terms sum to the logit
    (float rounding).
    A contribution is direct only: what the component adds to the logit through later layers
    is not in it.

    Args:
        model: a pre-LN glassformer GPT (post-LN models raise ValueError: every block normalises
            the residual sum, so the stream is no sum of components).
        ids: one sequence of token ids, (T,) or (1, T).
        target: the token id whose logit is split.

    Returns:
        An Attribution with per-head (n_layer, n_head) and per-ffn (n_layer,) contributions.
    """
    if model.final_norm is None:
        raise ValueError("attribute needs a pre-LN model: post-LN blocks normalise the residual sum, "
                         "so the final stream does not decompose into per-head terms")
    ids = as_ids(model, ids)
    if not 0 <= int(target) < model.config.vocab_size:
        raise ValueError(f"target {target} is outside the vocabulary of size {model.config.vocab_size}")
    n_layer = model.config.n_layer
    embeddings = {"token_embedding": "tok_emb", "pair_embedding": "bigram_emb", "position_embedding": "pos_emb",
                  "segment_embedding": "seg_emb"}
    embeddings = {key: name for key, name in embeddings.items() if getattr(model, name) is not None}
    if model.embed_norm is not None:  # the stream starts from the normed sum: one term, not its parts
        embeddings = {"normed_embedding": "embed_norm"}
    names = ["final_norm.in", *embeddings.values(), *map(head_name, range(n_layer)),
             *(f"blocks.{i}.ffn.down" for i in range(n_layer))]
    with inference(model):
        hidden, rec = record(model, ids, names)
        logit = float(model.lm_head(hidden[-1])[target])
    p = ids.size(1) - 1
    norm = model.final_norm
    x = rec["final_norm.in"][0, p].double()  # (C,) the final residual stream at the last position
    u = model.lm_head.weight[target].detach().double() * norm.weight.detach().double()  # u ⊙ γ
    centre = isinstance(norm, LayerNorm)
    if centre:
        scale = torch.sqrt(((x - x.mean()) ** 2).mean() + norm.eps)
    else:
        scale = torch.sqrt((x * x).mean() + norm.eps)

    def logit_of(c: torch.Tensor) -> torch.Tensor:
        """A component's term (..., C) -> (...): u ⊙ γ · (c − mean(c)) / σ, or u ⊙ γ · c / rms."""
        c = c.double()
        if centre:
            c = c - c.mean(-1, keepdim=True)
        return c @ u / scale

    heads = torch.zeros(n_layer, model.config.n_head, dtype=torch.float64)
    ffn = torch.zeros(n_layer, dtype=torch.float64)
    remaining: dict[str, float] = {}
    for key, name in embeddings.items():
        row = rec[name][p] if name == "pos_emb" else rec[name][0, p]  # the position table has no batch axis
        remaining[key] = float(logit_of(row))
    o_bias = 0.0
    for i, block in enumerate(model.blocks):
        out = rec[head_name(i)][0, :, p].double()  # (h, d): each head's output at the last position
        w_o = block.self_attn.o_proj.weight.detach().double()  # (C, h*d)
        w_o = w_o.view(w_o.size(0), out.size(0), out.size(1))  # (C, h*d) -> (C, h, d)
        heads[i] = logit_of(torch.einsum("chd,hd->hc", w_o, out))  # each head through its columns of W_O
        ffn[i] = logit_of(rec[f"blocks.{i}.ffn.down"][0, p])
        if block.self_attn.o_proj.bias is not None:
            o_bias += float(logit_of(block.self_attn.o_proj.bias.detach()))
    if model.blocks[0].self_attn.o_proj.bias is not None:
        remaining["o_proj_bias"] = o_bias
    if getattr(norm, "bias", None) is not None:
        remaining["norm_shift"] = float(model.lm_head.weight[target].detach().double() @ norm.bias.detach().double())
    return Attribution(int(target), p, logit, heads.float(), ffn.float(), remaining,
                       "layernorm" if centre else "rmsnorm", float(scale))


# ---------------------------------------------------------------------------------------------
# Ablation


ABLATIONS = ("zero", "mean")


def ablate(model: nn.Module, ids, heads: Sequence[tuple[int, int]] = (), mode: str = "zero") -> torch.Tensor:
    """The model's logits with some heads' outputs removed.

    A head's output is softmax(QKᵀ/√d)V of that head, (T, d), before W_O; "zero" replaces it by
    zeros, "mean" by its mean over the sequence's positions (the same row at every position;
    this mixes later positions into earlier ones, as mean-ablation over one sequence does).
    Forward hooks on the attention cores (their Taps' "out") do it, for this call only.

    Args:
        model: a glassformer GPT.
        ids: one sequence of token ids, (T,) or (1, T).
        heads: (layer, head) pairs, counted from 0; none gives model(ids) itself.
        mode: "zero" or "mean".

    Returns:
        (T, V) logits.
    """
    if mode not in ABLATIONS:
        raise ValueError(f"mode must be one of {', '.join(ABLATIONS)}; got {mode!r}")
    ids = as_ids(model, ids)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        check_layer_head(model, layer, head)
        by_layer.setdefault(layer, []).append(head)

    def remove(removed: list[int]):
        def hook(module, args, output):  # on the core's Tap: args = (step name, tensor)
            if args[0] != "out":
                return None
            out = output.clone()  # (B, h, T, d)
            for h in removed:
                out[:, h] = 0.0 if mode == "zero" else out[:, h].mean(dim=1, keepdim=True)  # (B, T, d)
            return out

        return hook

    hooks = {f"blocks.{layer}.self_attn.core": remove(hs) for layer, hs in by_layer.items()}
    with inference(model), hooked(model, hooks):
        return forward(model, ids)[0]


# ---------------------------------------------------------------------------------------------
# Activation patching


@dataclass(frozen=True)
class Site:
    """Where a patch goes: the residual stream at `layer` (0 = embedding, i = block i's output:
    0..n_layer), or head `head` of layer `layer` (0..n_layer-1); at `position`, or all (None)."""

    kind: str  # "resid" or "head"
    layer: int
    head: int | None = None
    position: int | None = None


def site_record(site: Site) -> str:
    return residual_name(site.layer) if site.kind == "resid" else head_name(site.layer)


def check_site(model: nn.Module, site: Site, length: int) -> None:
    if site.kind == "resid":
        if not 0 <= site.layer <= model.config.n_layer:
            raise ValueError(f"residual layer {site.layer} does not exist: 0..{model.config.n_layer}")
    elif site.kind == "head":
        check_layer_head(model, site.layer, site.head)
    else:
        raise ValueError(f"site kind must be resid or head; got {site.kind!r}")
    if site.position is not None and not 0 <= site.position < length:
        raise ValueError(f"position {site.position} is outside the sequence of {length} tokens")


def patch_hooks(sites: Sequence[Site], clean: torch.Tensor) -> tuple[dict, dict]:
    """Hooks that give row r of a batch site r's value from the clean run `clean` (1, ...); all
    sites share one module -> (forward hooks, pre-hooks) by module path."""
    site = sites[0]

    def patched(value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        for row, s in enumerate(sites):
            at = slice(None) if s.position is None else s.position
            if s.kind == "resid":
                value[row, at] = clean[0, at]  # (B, T, C)
            else:
                value[row, s.head, at] = clean[0, s.head, at]  # (B, h, T, d)
        return value

    if site.kind == "head":
        def core_hook(module, args, output):  # on the core's Tap: args = (step name, tensor)
            return patched(output) if args[0] == "out" else None

        return {f"blocks.{site.layer}.self_attn.core": core_hook}, {}
    if site.layer == 0:
        def embedding_hook(module, args):
            return (patched(args[0]), *args[1:])

        return {}, {"blocks.0": embedding_hook}

    def block_hook(module, args, output):
        return patched(output)

    return {f"blocks.{site.layer - 1}": block_hook}, {}


def patched_runs_reference(model: nn.Module, corrupt_ids: torch.Tensor, sites: Sequence[Site], clean: dict,
                           read: Callable[[torch.Tensor], object], batch_size: int = 8) -> list:
    """read(logits (T, V)) of the corrupt run with each site in turn given the clean run's value, in
    the order of `sites`: each patched run the whole model's, its site changed by a hook. The plain
    way, kept as the reference of `patched_runs`. Sites at one module run as rows of one batch,
    `batch_size` at a time."""
    by_module: dict[str, list[Site]] = {}
    for site in sites:
        by_module.setdefault(site_record(site), []).append(site)
    results: dict[Site, object] = {}
    for name, group in by_module.items():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            forward_hooks, pre_hooks = patch_hooks(chunk, clean[name])
            rows = corrupt_ids.expand(len(chunk), -1)  # (rows, T): one patched run per row
            with hooked(model, forward_hooks, pre_hooks):
                hidden = model.hidden(rows, segment_ids=segments(model, rows))
            for site, h in zip(chunk, hidden):
                results[site] = read(model.lm_head(h))  # GPT.forward's last step, one row: (T, C) -> (T, V)
    return [results[site] for site in sites]


def patched_runs(model: nn.Module, corrupt_ids: torch.Tensor, sites: Sequence[Site], clean: dict,
                 read: Callable[[torch.Tensor], object], batch_size: int = 8, last_only: bool = False) -> list:
    """read(logits) of the corrupt run with each site in turn given the clean run's value, in the
    order of `sites`; the logits are (T, V), or (1, V) at the last position alone where `last_only`.

    A patch at layer L changes nothing before block L, so each patched run starts from the corrupt
    run's residual stream at L (recorded once) and runs blocks L.. only: the blocks before L would
    compute the corrupt run's values again. The same blocks, called in the order GPT.hidden calls
    them, so the results equal `patched_runs_reference`'s (whole runs with hooks) up to float
    rounding. Sites at one module run as rows of one batch, `batch_size` at a time; each row's
    logits are formed and read one row at a time (a row of GPT-2 on 512 tokens is 100 MB).
    """
    corrupt_segments = segments(model, corrupt_ids)
    _, streams = record(model, corrupt_ids, residual_names(model))  # the corrupt run, before each block
    _, rotary = model.embed(corrupt_ids, segment_ids=corrupt_segments)  # RoPE's (cos, sin): positions only
    by_module: dict[str, list[Site]] = {}
    for site in sites:
        by_module.setdefault(site_record(site), []).append(site)
    results: dict[Site, object] = {}
    for name, group in by_module.items():
        layer = group[0].layer  # the first block the patch changes: block `layer` reads, or holds, the site
        start_stream = streams[residual_name(layer)]  # (1, T, C)
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            if chunk[0].kind == "resid":  # the stream block `layer` reads, patched: (rows, T, C)
                x, forward_hooks = patched_stream(chunk, start_stream, clean[name]), {}
            else:  # the corrupt stream, patched inside block `layer` by a hook on its attention core
                x, forward_hooks = start_stream.expand(len(chunk), -1, -1), patch_hooks(chunk, clean[name])[0]
            with hooked(model, forward_hooks):
                for block in model.blocks[layer:]:
                    x = block(x, is_causal=True, cache=None, rotary=rotary)  # as GPT.hidden calls it
                hidden = model.final(x[:, -1:] if last_only else x)  # (rows, T or 1, C)
            for site, h in zip(chunk, hidden):
                results[site] = read(model.lm_head(h))  # GPT.forward's last step, one row: (T, C) -> (T, V)
    return [results[site] for site in sites]


def patched_stream(sites: Sequence[Site], stream: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The residual stream (1, T, C) repeated for each residual-stream site, row r with site r's
    position (or all) given the clean run's value -> (len(sites), T, C)."""
    x = stream.repeat(len(sites), 1, 1)  # (1, T, C) -> (rows, T, C)
    for row, site in enumerate(sites):
        at = slice(None) if site.position is None else site.position
        x[row, at] = clean[0, at]
    return x


def patched_logits(model: nn.Module, clean_ids, corrupt_ids, site: Site) -> torch.Tensor:
    """The corrupt input's logits (T, V) with one site's activation replaced by the clean input's."""
    clean_ids, corrupt_ids = same_length(model, clean_ids, corrupt_ids)
    check_site(model, site, clean_ids.size(1))
    with inference(model):
        _, clean = record(model, clean_ids, [site_record(site)])
        return patched_runs_reference(model, corrupt_ids, [site], clean, read=torch.Tensor.clone)[0]


def same_length(model: nn.Module, clean_ids, corrupt_ids) -> tuple[torch.Tensor, torch.Tensor]:
    clean_ids, corrupt_ids = as_ids(model, clean_ids), as_ids(model, corrupt_ids)
    if clean_ids.size(1) != corrupt_ids.size(1):
        raise ValueError(f"clean and corrupt inputs must have the same length; got {clean_ids.size(1)} "
                         f"and {corrupt_ids.size(1)} tokens")
    return clean_ids, corrupt_ids


METRICS = ("logit_diff", "logprob")


@dataclass
class Patching:
    """Activation patching results: the metric at each site, normalised so that the clean run
    scores 1 and the corrupt run 0 (NaN where a site was not run)."""

    metric: str  # "logit_diff", "logprob" or "custom"
    target: int | None  # the token the metric reads (None for a custom metric)
    foil: int | None  # logit_diff's other token
    clean: float  # the metric's raw value on the clean run
    corrupt: float  # and on the corrupt run
    resid: torch.Tensor  # (n_layer + 1, T): the residual stream at layer × position
    heads: torch.Tensor  # (n_layer, n_head): each head's output at all positions
    head_positions: torch.Tensor | None  # (n_layer, n_head, T): at each position, where asked for
    clean_ids: list[int]
    corrupt_ids: list[int]
    layer_labels: list[str] = field(default_factory=list)  # resid rows: "embed", "block 1", ...
    position_labels: list[str] = field(default_factory=list)  # columns: positions, or tokens (the view's)

    def to_dict(self) -> dict:
        def grid(t):  # (..., T) -> rows of floats, NaN (not run) as None
            return [[None if v != v else v for v in row] for row in t.reshape(-1, t.size(-1)).tolist()]

        data = {"metric": self.metric, "target": self.target, "foil": self.foil, "clean": self.clean,
                "corrupt": self.corrupt, "normalised": "clean = 1, corrupt = 0", "clean_ids": self.clean_ids,
                "corrupt_ids": self.corrupt_ids, "layer_labels": self.layer_labels,
                "position_labels": self.position_labels, "resid": grid(self.resid), "heads": grid(self.heads)}
        if self.head_positions is not None:
            n_layer, n_head, _ = self.head_positions.shape
            rows = grid(self.head_positions)
            data["head_positions"] = [rows[i * n_head:(i + 1) * n_head] for i in range(n_layer)]
        return data

    def __repr__(self) -> str:
        lines = [f"Patching(metric={self.metric}, target={self.target}, foil={self.foil}, clean={self.clean:.4f}, "
                 f"corrupt={self.corrupt:.4f}; 1 = clean, 0 = corrupt)"]
        lines.append("  residual stream (after the embedding or block × position):")
        for label, row in zip(self.layer_labels, self.resid.tolist()):
            lines.append(f"    {label:>8}: " + " ".join(f"{v:+.2f}" for v in row))
        lines.append("  heads (block × head, all positions):")
        for i, row in enumerate(self.heads.tolist()):
            lines.append(f"    {f'block {i + 1}':>8}: " + " ".join(f"{v:+.2f}" for v in row))
        return "\n".join(lines)


def patch(model: nn.Module, clean_ids, corrupt_ids, target: int | None = None,
          metric: str | Callable[[torch.Tensor], float] = "logit_diff", foil: int | None = None,
          positions: Sequence[int] | None = None, head_positions: bool = False, heads: bool = True,
          batch_size: int = 8) -> Patching:
    """Activation patching: run the corrupt input with one site's activation taken from the clean run.

    Sites: the residual stream after the embedding and after each block, at each position; each
    head's output (before W_O) at all positions, and with `head_positions` at each position too.
    The metric reads the logits at the last position:
      "logit_diff" (default): logit[target] − logit[foil]; target defaults to the clean run's top
          token, foil to the corrupt run's top token (its second where that is the target);
      "logprob": log p(target);
      a function: (T, V) logits -> float.
    Each site's value is normalised as (m − m_corrupt) / (m_clean − m_corrupt): 1 where the site
    restores the clean behaviour, 0 where it changes nothing.

    Args:
        model: a glassformer GPT.
        clean_ids, corrupt_ids: two sequences of the same length, (T,) or (1, T).
        target, foil: token ids for the metric (see above).
        metric: "logit_diff", "logprob" or a function of the logits.
        positions: the positions whose residual stream is patched (default all; others NaN).
        head_positions: also patch each head at each position (n_layer × n_head × T runs).
        heads: patch the heads at all (False leaves the head grid NaN).
        batch_size: patched runs per forward pass.

    Returns:
        A Patching with the grids resid (n_layer + 1, T), heads (n_layer, n_head) and head_positions.
    """
    clean_ids, corrupt_ids = same_length(model, clean_ids, corrupt_ids)
    T, n_layer, n_head = clean_ids.size(1), model.config.n_layer, model.config.n_head
    positions = range(T) if positions is None else list(positions)
    for position in positions:
        check_site(model, Site("resid", 0, position=position), T)
    names = residual_names(model) + [head_name(i) for i in range(n_layer)]
    with inference(model):
        hidden, clean = record(model, clean_ids, names)
        clean_logits = model.lm_head(hidden)  # (T, V)
        corrupt_logits = forward(model, corrupt_ids)[0]
        score, target, foil, name = metric_function(clean_logits, corrupt_logits, metric, target, foil)
        last_only = not callable(metric)  # the built-in metrics read the last position's logits alone
        m_clean, m_corrupt = score(clean_logits), score(corrupt_logits)
        if m_clean == m_corrupt:
            raise ValueError(f"the metric is {m_clean:.4g} on both the clean and the corrupt input: "
                             "nothing to restore; choose inputs or a target that differ")
        sites = [Site("resid", layer, position=p) for layer in range(n_layer + 1) for p in positions]
        if heads:
            sites += [Site("head", layer, h) for layer in range(n_layer) for h in range(n_head)]
        if head_positions:
            sites += [Site("head", layer, h, p) for layer in range(n_layer) for h in range(n_head) for p in range(T)]
        scores = patched_runs(model, corrupt_ids, sites, clean, score, batch_size, last_only)
        values = {site: (value - m_corrupt) / (m_clean - m_corrupt) for site, value in zip(sites, scores)}
    resid = torch.full((n_layer + 1, T), float("nan"))
    head_grid = torch.full((n_layer, n_head), float("nan"))
    per_position = torch.full((n_layer, n_head, T), float("nan")) if head_positions else None
    for site, value in values.items():
        if site.kind == "resid":
            resid[site.layer, site.position] = value
        elif site.position is None:
            head_grid[site.layer, site.head] = value
        else:
            per_position[site.layer, site.head, site.position] = value
    return Patching(name, target, foil, m_clean, m_corrupt, resid, head_grid, per_position,
                    clean_ids[0].tolist(), corrupt_ids[0].tolist(),
                    ["embed"] + [f"block {i + 1}" for i in range(n_layer)], [str(p) for p in range(T)])


def metric_function(clean_logits: torch.Tensor, corrupt_logits: torch.Tensor, metric, target, foil):
    """(logits (T, V) -> float, target, foil, the metric's name) for patch's `metric` argument."""
    if callable(metric):
        return (lambda logits: float(metric(logits))), target, foil, "custom"
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)} or a function of the logits; got {metric!r}")
    if target is None:
        target = int(clean_logits[-1].argmax())
    if metric == "logprob":
        return (lambda logits: float(torch.log_softmax(logits[-1].double(), -1)[target])), target, None, metric
    if foil is None:
        best = corrupt_logits[-1].topk(2).indices.tolist()
        foil = best[0] if best[0] != target else best[1]
    return (lambda logits: float(logits[-1, target] - logits[-1, foil])), target, foil, metric


__all__ = ["Attribution", "Patching", "Site", "ablate", "attribute", "logit_lens", "patch", "patched_logits"]
