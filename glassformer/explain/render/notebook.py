"""Inline displays for Jupyter: walkthroughs, traces, attention, the logit lens and patching.

Each object shows as self-contained HTML (inline styles and SVG, no script from the network,
every user string escaped) beside its plain-text `repr`. The observers' own results (Trace,
Attribution, Patching) and walkthroughs know nothing of HTML: `register` tells IPython how to
draw them, and `import glassformer` calls it when it runs inside IPython or Jupyter.

    from glassformer.explain.render.notebook import attention, lens
    attention(model, tok, "ROMEO:")          # heatmaps per layer and head
    lens(model, tok, "ROMEO:")               # the top token each layer predicts at each position
    walkthrough                              # the whole HTML walkthrough, in a frame
    patch_text(model, tok, clean, corrupt)   # (explain.analysis_view) the patching grids

The HTML is drawn from data the model produced; nothing here computes the model's math.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from glassformer.observe import analysis
from glassformer.observe.trace import Trace


def colour(value: float, scale: float = 1.0, signed: bool = False) -> str:
    """A background for a value: white to blue for 0..scale; signed: blue below 0, red above."""
    if value != value:  # NaN: not computed
        return "#eeeeee"
    t = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    low = round(255 - 190 * t)
    if signed and value > 0:
        return f"rgb(255,{low},{low})"
    return f"rgb({low},{low},255)"


def cell(text: str, background: str, title: str = "") -> str:
    return (f'<td style="background:{background};padding:2px 5px;text-align:right;font:12px monospace" '
            f'title="{html.escape(title)}">{html.escape(text)}</td>')


def grid_html(values, rows: list[str], cols: list[str], signed: bool = False, scale: float | None = None,
              caption: str = "") -> str:
    """A coloured table of numbers with escaped row and column labels."""
    values = [[float(v) for v in row] for row in values]
    finite = [abs(v) for row in values for v in row if v == v]
    scale = scale or (max(finite) if finite else 1.0) or 1.0
    head = "".join(f'<th style="font:11px monospace;padding:2px 4px">{html.escape(c)}</th>' for c in cols)
    body = "".join(
        f'<tr><th style="font:11px monospace;text-align:right;padding:2px 4px">{html.escape(r)}</th>'
        + "".join(cell("·" if v != v else f"{v:.2f}", colour(v, scale, signed), f"{r} / {c}: {v:.4f}")
                  for v, c in zip(row, cols)) + "</tr>"
        for r, row in zip(rows, values))
    title = f'<caption style="font:bold 12px sans-serif;text-align:left">{html.escape(caption)}</caption>'
    return f'<table style="border-collapse:collapse;margin:4px 0">{title}<tr><th></th>{head}</tr>{body}</table>'


def labels(tokenizer, ids) -> list[str]:
    from glassformer.explain.labels import token_labels

    return token_labels(tokenizer, [int(i) for i in ids])


# ---------------------------------------------------------------------------------------------
# Attention


@dataclass
class AttentionView:
    """Every layer's and head's attention probabilities for one text: probs (n_layer, h, T, T)."""

    probs: torch.Tensor
    tokens: list[str]

    def __repr__(self) -> str:
        n_layer, n_head, T, _ = self.probs.shape
        return f"AttentionView({n_layer} layers × {n_head} heads over {T} tokens: {''.join(self.tokens)!r})"

    def _repr_html_(self) -> str:
        n_layer, n_head = self.probs.shape[:2]
        parts = []
        for layer in range(n_layer):
            tables = "".join(f'<div style="display:inline-block;vertical-align:top;margin-right:12px">'
                             f'{grid_html(self.probs[layer, head].tolist(), self.tokens, self.tokens, scale=1.0, caption=f"layer {layer + 1}, head {head + 1}")}</div>'  # noqa: E501
                             for head in range(n_head))
            parts.append(f"<div>{tables}</div>")
        return "<div><b>attention</b> (rows: queries, columns: keys)" + "".join(parts) + "</div>"


def attention(model, tokenizer, text: str) -> AttentionView:
    """The attention probabilities of a GPT reading `text`, recorded by a Trace of just those."""
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    names = [f"blocks.{i}.self_attn.core.probs" for i in range(model.config.n_layer)]
    with torch.no_grad(), Trace(model, names=names) as trace:
        model(torch.tensor([ids]), segment_ids=torch.zeros(1, len(ids), dtype=torch.long)
              if model.seg_emb is not None else None)
    return AttentionView(torch.stack([trace[name][0] for name in names]), labels(tokenizer, ids))


# ---------------------------------------------------------------------------------------------
# Logit lens


@dataclass
class LensView:
    """The logit lens (analysis.logit_lens) of one text, with its tokens: logits (n_layer + 1, T, V)."""

    logits: torch.Tensor
    tokens: list[str]
    vocab: list[str]

    def top(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability, id) of the most likely token per layer and position."""
        return torch.softmax(self.logits.float(), dim=-1).max(dim=-1)

    def __repr__(self) -> str:
        p, best = self.top()
        last = " ".join(f"{self.vocab[i]}({q:.2f})" for q, i in zip(p[:, -1].tolist(), best[:, -1].tolist()))
        return f"LensView({self.logits.size(0)} layers × {len(self.tokens)} positions; last position: {last})"

    def _repr_html_(self) -> str:
        p, best = self.top()
        rows = ["embedding"] + [f"block {i}" for i in range(1, self.logits.size(0))]
        head = "".join(f'<th style="font:11px monospace">{html.escape(t)}</th>' for t in self.tokens)
        body = "".join(
            f'<tr><th style="font:11px monospace;text-align:right">{html.escape(r)}</th>'
            + "".join(cell(self.vocab[i], colour(q), f"p = {q:.4f}") for q, i in zip(qs, ids)) + "</tr>"
            for r, qs, ids in zip(rows, p.tolist(), best.tolist()))
        return ('<div><b>logit lens</b>: the most likely next token read from each layer (colour: its probability)'
                f'<table style="border-collapse:collapse"><tr><th></th>{head}</tr>{body}</table></div>')


def lens(model, tokenizer, text: str) -> LensView:
    """analysis.logit_lens of `text`, for display."""
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    return LensView(analysis.logit_lens(model, ids), labels(tokenizer, ids), labels(tokenizer, range(
        tokenizer.vocab_size)))


# ---------------------------------------------------------------------------------------------
# Displays of objects defined elsewhere (Walkthrough, Trace, Patching, Attribution call these)


def walkthrough_html(walkthrough, height: int = 720) -> str:
    """The self-contained walkthrough page in a frame (its script runs there, apart from the notebook's)."""
    from glassformer.explain.render.html import render_html

    page = render_html(walkthrough)
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{height}px;'
            'border:1px solid #ddd" sandbox="allow-scripts"></iframe>')


def trace_html(trace: Trace) -> str:
    rows = "".join(f"<tr><td style='font:12px monospace'>{html.escape(name)}</td>"
                   f"<td style='font:12px monospace'>{len(calls)} × {tuple(calls[-1].shape)}</td></tr>"
                   for name, calls in trace.records.items())
    return (f"<div><b>Trace</b> of {html.escape(type(trace.model).__name__)}: {len(trace.records)} names "
            f"recorded<table>{rows}</table></div>")


def patching_html(result) -> str:
    caption = f"{result.metric}: 1 = the clean run's value, 0 = the corrupt run's"
    resid = grid_html(result.resid.tolist(), result.layer_labels, [str(t) for t in result.position_labels],
                      signed=True, scale=1.0, caption=f"residual stream (layer × position); {caption}")
    heads = grid_html(result.heads.tolist(), [f"layer {i + 1}" for i in range(result.heads.size(0))],
                      [f"head {h + 1}" for h in range(result.heads.size(1))], signed=True, scale=1.0,
                      caption="head outputs at all positions")
    return f"<div><b>activation patching</b>{resid}{heads}</div>"


def attribution_html(result) -> str:
    values = torch.cat([result.heads, result.ffn[:, None]], dim=1).tolist()
    cols = [f"head {h + 1}" for h in range(result.heads.size(1))] + ["feed-forward"]
    rows = [f"layer {i + 1}" for i in range(result.heads.size(0))]
    remaining = ", ".join(f"{html.escape(k)} {v:+.3f}" for k, v in result.remaining.items())
    return (f"<div><b>direct logit attribution</b> of token {result.target} at position {result.position}: "
            f"logit {result.logit:.4f} (the final norm's scale frozen at {result.scale:.4f})"
            f"{grid_html(values, rows, cols, signed=True)}remaining terms: {remaining}</div>")


def register(shell=None) -> bool:
    """Tells an IPython shell (Jupyter's kernel) to draw traces, attributions, patchings and walkthroughs
    as HTML; the objects themselves stay free of any rendering.

    Args:
        shell: the IPython shell; None: the one running, if any.

    Returns:
        Whether there was a shell to register with.
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    from glassformer.explain.walkthrough import Walkthrough

    html_formatter = shell.display_formatter.formatters["text/html"]
    for kind, draw in ((Trace, trace_html), (analysis.Attribution, attribution_html),
                       (analysis.Patching, patching_html), (Walkthrough, walkthrough_html)):
        html_formatter.for_type(kind, draw)
    return True
