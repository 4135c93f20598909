"""Inline displays for Jupyter: walkthroughs, traces, attention, the logit lens and patching.

Each object shows as one self-contained HTML fragment beside its plain-text `repr`: a `<div>`, a
`<style>` and a `<script>` that draws the object's numbers, carried as JSON, with
templates/notebook.js and the explorer's own dom.js and matrices.js (its palette, its number
formatting) inlined. Nothing is fetched; every id is fresh and every name of the script stays
inside one function, so views never collide; text reaches the page only through textContent.
The observers' own results (Trace, Attribution, Patching) and walkthroughs know nothing of HTML:
`register` tells IPython how to draw them, and `import glassformer` calls it when it runs inside
IPython or Jupyter.

    from glassformer.explain.render.notebook import attention, lens
    attention(model, tok, "ROMEO:")          # bertviz's head view (layer, head toggles, hover) and heatmaps
    lens(model, tok, "ROMEO:")               # the top token each layer predicts at each position
    walkthrough                              # the whole HTML walkthrough, in a frame
    patch_text(model, tok, clean, corrupt)   # (explain.analysis_view) the patching grids

The HTML is drawn from data the model produced; nothing here computes the model's math.
"""

from __future__ import annotations

import html
import json
import math
import re
import uuid
from dataclasses import dataclass

import torch

from glassformer.explain.narration import check_lang
from glassformer.observe import analysis
from glassformer.observe.trace import Trace

# The views' own words ({n} filled in by the script); the analyses' captions come from analysis_view.TEXT.
WORDS = {
    "en": {
        "layer": "Layer {n}", "head": "head {n}", "queries": "queries", "keys": "keys", "query": "query",
        "key": "key", "prob": "probability", "heatmaps": "Heatmaps (rows: queries, columns: keys)",
        "attention_hint": "Hover over a token to keep only its lines and read their weights, one number a head "
                          "in its colour; tick heads on or off; hover a heatmap cell for its value.",
        "not_run": "not run",
    },
    "zh": {
        "layer": "第 {n} 层", "head": "第 {n} 头", "queries": "查询", "keys": "键", "query": "查询", "key": "键",
        "prob": "概率", "heatmaps": "热力图（行：查询，列：键）",
        "attention_hint": "鼠标停在词元上：只留下它的连线，并按头的颜色写出每个头的权重；勾选或取消各个头；"
                          "鼠标停在热力图的格子上可看数值。",
        "not_run": "未运行",
    },
}
TITLES = {
    "attention": {"en": "Attention", "zh": "注意力"},
    "lens": {"en": "Logit lens", "zh": "Logit lens（逐层读出）"},
    "lens_note": {"en": "The most likely next token read from the residual stream after each layer (colour: its "
                        "probability); hover over a cell for the top five.",
                  "zh": "从每一层之后的残差流读出的最可能的下一个词元（颜色：它的概率）；鼠标停在格子上可看前五个。"},
    "embedding": {"en": "embedding", "zh": "嵌入"},
    "block": {"en": "block {n}", "zh": "第 {n} 层"},
}
NO_SCRIPT = ("This view is drawn by JavaScript: run the cell in Jupyter, or trust the notebook, to see it. "
             "此视图由 JavaScript 绘制：请在 Jupyter 中运行该单元格或信任该笔记本。")
# matrices.js takes its page's tip (#gf-tip) when it runs and may hide it on page events; a notebook
# has none, so each view lends it a hidden one inside the view, which notebook.js's start() removes
# (each view shows tips of its own). The id is in the page only while the view's script starts.
TIP_STAND_IN = ('if (!document.getElementById("gf-tip")) { const t = document.createElement("div"); t.id = "gf-tip"; '
                't.hidden = true; document.getElementById("%s").appendChild(t); }')
LENS_TOP = 5  # the lens's tip lists this many tokens
# The attention view draws at most the last VIEW_TOKENS tokens, and fewer where the model has so many
# heads that all of them would pass VIEW_VALUES numbers (GPT-2 small: 12 × 12 heads, 85 tokens, 2-7 MB).
VIEW_TOKENS = 128
VIEW_VALUES = 1 << 20
DECIMALS = 6  # the views' data keep this many decimals (cells print 2-4, tips all six)


def view_html(data: dict, lang: str = "en") -> str:
    """One self-contained HTML fragment that draws `data` with notebook.js: its style and script inline,
    nothing fetched, its ids unique (a fresh id each call) and its script's names inside a function.

    Args:
        data: {"view": "attention", "tokens", "probs"} or {"grids": [...]}, with "title" and "note".
        lang: the language it opens in ("en" or "zh"; it has a switch to the other).

    Returns:
        A `<div>`, a `<style>` and a `<script>`, for a notebook's text/html output or any HTML page.
    """
    from glassformer.explain.render.html import asset, script_json

    check_lang(lang)
    uid = f"gfnb-{uuid.uuid4().hex}"
    shared = "\n".join(asset(name) for name in ("dom.js", "matrices.js"))  # numbers and the palette, as the explorer's
    return (f'<div class="gfnb" id="{uid}"><p>{html.escape(NO_SCRIPT)}</p></div>\n'
            f'<style>\n{asset("notebook.css")}</style>\n'
            f'<script>\n"use strict";\n(function () {{\nconst WORDS = {script_json(WORDS)};\n{TIP_STAND_IN % uid}\n'
            f'{shared}\n'
            f'(function (root, data) {{\n{asset("notebook.js")}\nstart(root, data);\n}})'
            f'(document.getElementById("{uid}"), {script_json({**data, "lang": lang})});\n}})();\n</script>')


def numbers(tensor: torch.Tensor) -> list:
    """A tensor as nested lists for a view's data: DECIMALS decimals, NaN (not computed) as None."""
    out = tensor.double().round(decimals=DECIMALS)
    return nan_to_none(out.tolist()) if out.isnan().any() else out.tolist()


def nan_to_none(x):
    if isinstance(x, list):
        return [nan_to_none(v) for v in x]
    return None if x != x else x


def grid(values, rows, cols, caption, probabilities: bool = False, text=None, tips=None) -> dict:
    """One grid for notebook.js: values (rows × cols), labels (strings or {"en", "zh"}), a caption."""
    return {"values": values, "rows": rows, "cols": cols, "caption": caption, "probabilities": probabilities,
            "text": text, "tips": tips}


def palette_stops() -> dict[str, list]:
    """The explorer's colour stops (SEQUENTIAL, NEGATIVE, POSITIVE, GREY), read from matrices.js:
    the one place they are defined, so that a static table is coloured as the page colours."""
    from glassformer.explain.render.html import asset

    text = asset("matrices.js")
    found = {}
    for name in ("SEQUENTIAL", "NEGATIVE", "POSITIVE", "GREY"):
        match = re.search(rf"^const {name} = (\[.*?\]);$", text, re.M)
        if match is not None:
            found[name] = json.loads(match.group(1))
    if len(found) != 4:
        raise ValueError("templates/matrices.js no longer defines SEQUENTIAL, NEGATIVE, POSITIVE and GREY")
    return found


def mix(stops: list, t: float) -> tuple[int, int, int]:
    """matrices.js's mix(): the colour a fraction t (0..1) along the stops."""
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(math.floor(t), len(stops) - 2)
    f = t - i
    return tuple(math.floor(a + (b - a) * f + 0.5) for a, b in zip(stops[i], stops[i + 1]))


def grid_html(values, rows: list[str], cols: list[str], signed: bool = False, scale: float | None = None,
              caption: str = "") -> str:
    """A static coloured table of numbers (two decimals, four in each cell's title), its labels
    escaped, in the explorer's palette: probabilities white to blue (signed False), or blue below
    zero and red above over the largest magnitude (signed True). No script: for pages that show many
    small matrices (the course), where a view_html each would repeat its scripts every time.
    Infinities and NaN (a masked score) are grey, written −∞, ∞ or ·."""
    stops = palette_stops()
    values = [[float(v) for v in row] for row in values]
    finite = [abs(v) for row in values for v in row if math.isfinite(v)]
    scale = scale or (max(finite) if finite else 1.0) or 1.0

    def cell(v: float, r: str, c: str) -> str:
        if not math.isfinite(v):
            rgb, text = stops["GREY"], "·" if v != v else "−∞" if v < 0 else "∞"
        else:
            t = abs(v) / scale
            rgb = mix(stops["SEQUENTIAL"], t) if not signed else mix(stops["POSITIVE" if v > 0 else "NEGATIVE"], t)
            text = f"{v:.2f}".replace("-", "−")
        ink = "#fff" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140 else "#1f2933"
        title = f"{r} / {c}: {v:.4f}".replace("-", "−")
        return (f'<td style="background:rgb{tuple(rgb)};color:{ink};padding:2px 5px;text-align:right;'
                f'font:12px monospace" title="{html.escape(title)}">{html.escape(text)}</td>')

    head = "".join(f'<th style="font:11px monospace;padding:2px 4px">{html.escape(str(c))}</th>' for c in cols)
    body = "".join(f'<tr><th style="font:11px monospace;text-align:right;padding:2px 4px">{html.escape(str(r))}</th>'
                   + "".join(cell(v, str(r), str(c)) for v, c in zip(row, cols)) + "</tr>"
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
    """Every layer's and head's attention probabilities for one text: probs (n_layer, h, T, T).

    In a notebook it draws as bertviz's head view (queries left, keys right, one colour a head, a
    layer selector, per-head toggles, hover for one token's weights) above one heatmap a head."""

    probs: torch.Tensor
    tokens: list[str]
    lang: str = "en"

    def __repr__(self) -> str:
        n_layer, n_head, T, _ = self.probs.shape
        return f"AttentionView({n_layer} layers × {n_head} heads over {T} tokens: {''.join(self.tokens)!r})"

    def _repr_html_(self) -> str:
        n_layer, n_head, T, _ = self.probs.shape
        n = min(T, VIEW_TOKENS, max(1, math.isqrt(VIEW_VALUES // (n_layer * n_head))))
        note = None if n == T else {
            "en": f"The last {n} of {T} tokens: their weights on the {T - n} tokens before are not drawn, so a row "
                  "can sum to less than 1.",
            "zh": f"只画出 {T} 个词元中的最后 {n} 个：它们对前面 {T - n} 个词元的权重没有画出，"
                  "所以一行之和可能小于 1。"}
        return view_html({"view": "attention", "title": TITLES["attention"], "note": note, "tokens": self.tokens[-n:],
                          "probs": numbers(self.probs[..., -n:, -n:])}, self.lang)


def attention(model, tokenizer, text: str, lang: str = "en") -> AttentionView:
    """The attention probabilities of a GPT reading `text`, recorded by a Trace of just those.

    Args:
        model: a GPT.
        tokenizer: its tokenizer.
        text: what it reads (its last block_size tokens).
        lang: the language the view opens in, "en" or "zh".

    Returns:
        An AttentionView, which a notebook draws.
    """
    check_lang(lang)
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    names = [f"blocks.{i}.self_attn.core.probs" for i in range(model.config.n_layer)]
    with torch.no_grad(), Trace(model, names=names) as trace:
        model(torch.tensor([ids]), segment_ids=torch.zeros(1, len(ids), dtype=torch.long)
              if model.seg_emb is not None else None)
    return AttentionView(torch.stack([trace[name][0] for name in names]), labels(tokenizer, ids), lang)


# ---------------------------------------------------------------------------------------------
# Logit lens


@dataclass
class LensView:
    """The logit lens (analysis.logit_lens) of one text, with its tokens: logits (n_layer + 1, T, V)."""

    logits: torch.Tensor
    tokens: list[str]
    vocab: list[str]
    lang: str = "en"

    def top(self, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, ids) of the k most likely tokens per layer and position, (n_layer + 1, T, k);
        for k = 1 without the last dimension."""
        p, ids = torch.softmax(self.logits.float(), dim=-1).topk(k, dim=-1)
        return (p[..., 0], ids[..., 0]) if k == 1 else (p, ids)

    def __repr__(self) -> str:
        p, best = self.top()
        last = " ".join(f"{self.vocab[i]}({q:.2f})" for q, i in zip(p[:, -1].tolist(), best[:, -1].tolist()))
        return f"LensView({self.logits.size(0)} layers × {len(self.tokens)} positions; last position: {last})"

    def _repr_html_(self) -> str:
        p, ids = self.top(min(LENS_TOP, self.logits.size(-1)))
        rows = [TITLES["embedding"]] + [{lang: TITLES["block"][lang].format(n=i) for lang in ("en", "zh")}
                                        for i in range(1, self.logits.size(0))]
        tips = [["\n".join(f"{self.vocab[i]!r}  {q:.4f}" for q, i in zip(qs, top)) for qs, top in zip(row_p, row_ids)]
                for row_p, row_ids in zip(p.tolist(), ids.tolist())]
        text = [[self.vocab[top[0]] for top in row] for row in ids.tolist()]
        return view_html({"title": TITLES["lens"], "note": TITLES["lens_note"], "grids": [grid(
            numbers(p[..., 0]), rows, self.tokens, "", probabilities=True, text=text, tips=tips)]}, self.lang)


def lens(model, tokenizer, text: str, lang: str = "en") -> LensView:
    """analysis.logit_lens of `text`, for display (lang: the language the view opens in)."""
    check_lang(lang)
    ids = tokenizer.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    return LensView(analysis.logit_lens(model, ids), labels(tokenizer, ids), labels(tokenizer, range(
        tokenizer.vocab_size)), lang)


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


def both(key: str, **values) -> dict[str, str]:
    """analysis_view's words for `key` in both languages."""
    from glassformer.explain.render.analysis_view import say

    return {lang: say(key, lang, **values) for lang in ("en", "zh")}


def patching_html(result) -> str:
    from glassformer.explain.render.analysis_view import metric_line

    def layer_label(label: str) -> dict[str, str]:  # analysis's "embed", "block 1", ... in both languages
        if label == "embed":
            return both("embed")
        n = label.removeprefix("block ")
        return both("block", n=n) if n.isdigit() else {"en": label, "zh": label}

    layers = [both("layer", n=i + 1) for i in range(result.heads.size(0))]
    heads = [both("head", n=h + 1) for h in range(result.heads.size(1))]
    return view_html({
        "title": both("patching"), "note": {lang: metric_line(result, None, lang) for lang in ("en", "zh")},
        "grids": [grid(numbers(result.resid), [layer_label(x) for x in result.layer_labels],
                       [str(t) for t in result.position_labels], both("resid")),
                  grid(numbers(result.heads), layers, heads, both("heads_all"))]})


def attribution_html(result) -> str:
    table = torch.cat([result.heads, result.ffn[:, None]], dim=1)
    cols = [both("head", n=h + 1) for h in range(result.heads.size(1))] + [both("ffn")]
    rows = [both("layer", n=i + 1) for i in range(result.heads.size(0))]
    from glassformer.explain.render.analysis_view import TEXT

    remaining = {lang: ", ".join(f"{both(k)[lang] if k in TEXT else k} {v:+.4f}" for k, v in result.remaining.items())
                 for lang in ("en", "zh")}
    title = {"en": f"Direct logit attribution of token {result.target} at position {result.position}",
             "zh": f"词元 {result.target} 在位置 {result.position} 的 logit 的直接归因"}
    note = both("logit", logit=result.logit, total=result.total())
    frozen = both("frozen", scale="σ" if result.norm == "layernorm" else "rms", value=result.scale)
    return view_html({"title": title, "note": {lang: f"{note[lang]}; {frozen[lang]}" for lang in note},
                      "grids": [grid(numbers(table), rows, cols, both("heads"))],
                      "footer": {lang: f"{both('remaining')[lang]}: {remaining[lang]}" for lang in note}})


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
