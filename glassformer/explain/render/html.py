"""The walkthrough as one self-contained HTML page, drawn in the browser from the walkthrough's data.

Python does little here. It embeds `walkthrough_data` (the JSON schema in the README) and
the page's own words in `<script type="application/json">` blocks, and inlines the CSS and
the JavaScript kept beside the template in `templates/` (dom.js: elements and words, shared
with the explorer; walkthrough.js: the page, the diagram, the contents; matrices.js: numbers,
colours, tables and heatmaps). The script lays the page out: each
result beside the matrices it is computed from, one architecture diagram that follows the
reader, a table of contents, English or Chinese. It computes no model math: every number
it shows is in the data. Nothing is fetched, so the page works offline.

User text and tokens reach the page only inside the JSON, with `<`, `>` and `&` written as
`\\u003c`, `\\u003e` and `\\u0026`, so no text can close the script block; the script puts
them on the page with textContent, never as markup.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from glassformer.base.files import atomic_write_text
from glassformer.explain.narration import BOXES, LABELS, LANGS, PLACES, SECTIONS, WORDS, check_lang
from glassformer.explain.walkthrough import Walkthrough, walkthrough_data

# A step with more numbers than this shows its top-left corner and statistics. It keeps a
# page of a small model to a few megabytes (a 4-head, d 128 model: 2.5 MB).
PAGE_MAX_VALUES = 4096

# Words only the page uses ({name} is filled in by the script); the rest come from narration.
PAGE_WORDS = {
    "en": {
        "d_ff": "d_ff", "norm": "norm", "activation": "activation", "position": "position",
        "pre": "pre-LN", "post": "post-LN", "sinusoidal": "sinusoidal, added", "learned": "learned, added",
        "rope": "RoPE (θ = {theta}), rotates Q and K", "final": "Final norm", "layer_of": "{name} {i} of {n}",
        "truncated": "{count} values: shown is the top-left {corner}; the page keeps at most {max} values a step",
        "stats": "mean {mean}, std {std}, min {min}, max {max}", "transposed": "shown transposed",
        "legend_values": "values: negative · 0 · positive (each matrix on its own scale)",
        "legend_probabilities": "probabilities: 0 → 1", "legend_masked": "−∞ (masked)",
        "legend_hover": "Hover over a cell for its value; click a box of the diagram to go to its first step.",
        "generation": "Generation, token by token", "gen_sample": "Sampling", "gen_greedy": "Greedy decoding",
        "gen_beam": "Beam search", "gen_so_far": "so far", "gen_candidates": "most likely next tokens",
        "gen_picked": "picked", "gen_output": "generated",
    },
    "zh": {
        "d_ff": "d_ff", "norm": "归一化", "activation": "激活函数", "position": "位置",
        "pre": "前置归一化（pre-LN）", "post": "后置归一化（post-LN）", "sinusoidal": "正弦位置编码，相加",
        "learned": "可学习位置嵌入，相加", "rope": "RoPE（θ = {theta}），旋转 Q 和 K", "final": "最终归一化",
        "layer_of": "{name} {i} / {n}",
        "truncated": "共 {count} 个数：这里只显示左上角 {corner}；页面每步最多保存 {max} 个数",
        "stats": "均值 {mean}，标准差 {std}，最小 {min}，最大 {max}", "transposed": "转置显示",
        "legend_values": "数值：负 · 0 · 正（每个矩阵各自的刻度）", "legend_probabilities": "概率：0 → 1",
        "legend_masked": "−∞（被掩码）", "legend_hover": "鼠标停在格子上可看数值；点击结构图中的方框可跳到它的第一步。",
        "generation": "逐词生成", "gen_sample": "采样", "gen_greedy": "贪心解码", "gen_beam": "束搜索",
        "gen_so_far": "已有", "gen_candidates": "最可能的下一个词元", "gen_picked": "选中", "gen_output": "生成结果",
    },
}

SCRIPTS = ("dom.js", "walkthrough.js", "matrices.js")  # one script: html.py inlines them inside one function


def page_words() -> dict[str, dict[str, str]]:
    """Every word of the page around the steps, per language: narration's words, sections,
    labels, diagram boxes (`box_<name>`) and places (`place_<name>`), and the page's own."""
    out = {}
    for lang in LANGS:
        words = {key: texts[lang] for key, texts in WORDS.items()}
        words.update({f"section_{key}": texts[lang] for key, texts in SECTIONS.items()})
        words.update({key: texts[lang] for key, texts in LABELS.items() if key != "stats"})
        words.update({f"box_{key}": texts[lang] for key, texts in BOXES.items()})
        words.update({f"place_{key}": text for key, text in PLACES[lang].items()})
        words.update(PAGE_WORDS[lang])
        out[lang] = words
    return out


def script_json(data) -> str:
    """Strict JSON that is safe inside a <script> element: no text in it can close the element."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def asset(name: str) -> str:
    """A file of templates/, which the page inlines."""
    text = resources.files("glassformer.explain.render").joinpath("templates", name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"templates/{name} would close its own element when inlined")
    return text


def render_html(walkthrough: Walkthrough, lang: str = "en", max_values: int = PAGE_MAX_VALUES) -> str:
    """The whole page as a string.

    Args:
        walkthrough: what to draw.
        lang: "en" or "zh", the page's first language (it has a switch to the other).
        max_values: a step with more values shows its top-left corner and statistics (0: all).

    Returns:
        One HTML document with its CSS, script and data inline.
    """
    check_lang(lang)
    return page(walkthrough_data(walkthrough, max_values), lang)


def page(data: dict, lang: str = "en") -> str:
    """The page for walkthrough data already made (`walkthrough_data`, or a file of `explain --json`)."""
    import jinja2

    check_lang(lang)
    env = jinja2.Environment(loader=jinja2.PackageLoader("glassformer.explain.render", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("walkthrough.html.j2").render(
        lang=lang, title=LABELS["walkthrough"][lang], css=asset("walkthrough.css"),
        js="\n".join(asset(name) for name in SCRIPTS), data=script_json(data), words=script_json(page_words()))


def write_html(walkthrough: Walkthrough, path, lang: str = "en", max_values: int = PAGE_MAX_VALUES) -> Path:
    """Writes the page to `path` atomically and returns the path."""
    path = Path(path)
    atomic_write_text(path, render_html(walkthrough, lang, max_values))
    return path
