"""The walkthrough as one self-contained HTML page: every step with its numbers, in en or zh.

The page fetches nothing: its CSS is inline, its diagrams are inline SVG and it has no
script. Python prepares plain values (titles, coloured cells, diagram boxes) and the
Jinja2 template `templates/walkthrough.html.j2` lays them out, escaping every string, so
that the user's text and the model's tokens are shown as text, never read as markup.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from .narration import BOXES, SECTIONS, WORDS, check_lang, label, narrate
from .steps import Step
from .walkthrough import Walkthrough

MAX_CELLS = 16  # a matrix with more rows or columns shows its top-left corner and statistics
MAX_TABLE_ROWS = 100  # longer tables (a big vocabulary) are cut, saying how much is left out



def word(key: str, lang: str, **values) -> str:
    return WORDS[key][lang].format(**values)


# ---------------------------------------------------------------------------------------------
# Colours and numbers


def _blend(stops: list[tuple[int, int, int]], t: float) -> str:
    """A colour t (0..1) of the way along a list of RGB stops, as #rrggbb."""
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    a, b, f = stops[i], stops[i + 1], t - i
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


SEQUENTIAL = [(255, 255, 255), (158, 202, 225), (33, 113, 181), (8, 48, 107)]  # white -> deep blue
NEGATIVE = [(255, 255, 255), (146, 197, 222), (33, 102, 172)]  # white -> blue
POSITIVE = [(255, 255, 255), (244, 165, 130), (178, 24, 43)]  # white -> red
DARK_TEXT_UNTIL = 0.55  # cells more intense than this get white text


def decimals_for(finite: np.ndarray, probabilities: bool) -> int:
    """0 for whole numbers (a mask), else enough decimals to show two digits of the largest value."""
    if finite.size == 0 or np.all(finite == np.round(finite)):
        return 0
    scale = float(np.abs(finite).max())
    if probabilities or scale >= 0.1:
        return 2
    return min(4, 1 - int(np.floor(np.log10(scale))))


def number(x: float, decimals: int) -> str:
    """A cell's text, with a real minus sign and −∞ for masked positions."""
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "−∞" if x < 0 else "∞"
    text = f"{x:.{decimals}f}" if abs(x) < 1e4 else f"{x:.1e}"
    if float(text) == 0:
        text = text.lstrip("-")  # no "−0.00"
    return text.replace("-", "−")


def visible(text: str) -> str:
    """A token that is only whitespace, made visible: " " -> "␣"."""
    if text and not text.strip():
        return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return text


@dataclass
class Cell:
    text: str
    colour: str = ""
    css: str = ""  # "dark" (white text on a deep colour) or "ninf" (a masked position)


def cells(values: np.ndarray, probabilities: bool, scale: float, decimals: int) -> list[list[Cell]]:
    """Coloured cells: sequential 0..1 for probabilities, diverging around 0 otherwise."""
    rows = []
    for row in values:
        out = []
        for x in row:
            x = float(x)
            if not np.isfinite(x):
                out.append(Cell(number(x, decimals), css="ninf"))
                continue
            if probabilities:
                t, colour = x, _blend(SEQUENTIAL, x)
            else:
                t = abs(x) / scale if scale > 0 else 0.0
                colour = _blend(POSITIVE if x > 0 else NEGATIVE, t)
            out.append(Cell(number(x, decimals), colour, "dark" if t > DARK_TEXT_UNTIL else ""))
        rows.append(out)
    return rows


# ---------------------------------------------------------------------------------------------
# Steps as plain values for the template


@dataclass
class MatrixView:
    shape: str  # "8 × 6", the whole matrix
    col_labels: list[str]
    named_cols: bool  # the columns are tokens or words, not dimension indices
    rows: list[tuple[str, list[Cell]]]  # (row label, cells)
    more_rows: bool = False  # only the top-left corner is shown
    more_cols: bool = False
    corner: str = ""  # "top-left corner (16 × 16)"
    stats: str = ""  # mean, std, min, max of the whole matrix


@dataclass
class TableView:
    header: list[str]
    rows: list[list[str]]
    more: str = ""


@dataclass
class StepView:
    id: str
    number: int
    section: str
    title: str
    explanation: str
    formula: str
    box: str  # the diagram box to highlight
    matrix: MatrixView | None = None
    table: TableView | None = None
    heatmap: str = ""  # the figure's caption, for attention probabilities
    predicted: str = ""


def labels_for(given: list[str] | None, n: int) -> tuple[list[str], bool]:
    """Given labels when they fit the matrix, else the indices 0..n-1."""
    if given is not None and len(given) == n:
        return [visible(str(x)) for x in given], True
    return [str(i) for i in range(n)], False


def matrix_view(step: Step, lang: str) -> MatrixView:
    m = np.asarray(step.matrix, dtype=np.float64)
    n_rows, n_cols = m.shape
    finite = m[np.isfinite(m)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    rows, _ = labels_for(step.rows, n_rows)
    cols, named = labels_for(step.cols, n_cols)
    shown = cells(m[:MAX_CELLS, :MAX_CELLS], step.heatmap, scale, decimals_for(finite, step.heatmap))
    view = MatrixView(f"{n_rows} × {n_cols}", cols[:MAX_CELLS], named, list(zip(rows, shown)),
                      n_rows > MAX_CELLS, n_cols > MAX_CELLS)
    if view.more_rows or view.more_cols:
        view.corner = f"{label('corner', lang)} ({min(n_rows, MAX_CELLS)} × {min(n_cols, MAX_CELLS)})"
        if finite.size:
            view.stats = label("stats", lang, mean=finite.mean(), std=finite.std(), min=finite.min(),
                               max=finite.max())
    return view


def table_view(step: Step, lang: str) -> TableView:
    rows = [[visible(str(x)) for x in row] for row in step.table or []]
    more = word("more_rows", lang, n=len(rows) - MAX_TABLE_ROWS) if len(rows) > MAX_TABLE_ROWS else ""
    return TableView([str(h) for h in step.header or []], rows[:MAX_TABLE_ROWS], more)


def step_ids(steps: list[Step]) -> list[str]:
    """step.key, with -2, -3, ... on repeats (a layer has several residual sums and norms)."""
    seen: Counter[str] = Counter()
    ids = []
    for step in steps:
        seen[step.key] += 1
        ids.append(step.key if seen[step.key] == 1 else f"{step.key}-{seen[step.key]}")
    return ids


# ---------------------------------------------------------------------------------------------
# Where each step sits: the architecture diagram

NORM_KINDS = ("ln_stats", "ln_out")
BOX_OF_KIND = {"memory": "memory", "logits": "linear", "softmax_out": "softmax", "prediction": "softmax",
               "decode": "softmax", "embedding": "embed", "positional": "embed", "positional_learned": "embed",
               "emb_sum": "embed"}


def locate(steps: list[Step], seq2seq: bool, pre_norm: bool) -> list[str]:
    """The diagram box of every step, e.g. "dec-cross" or "enc-addnorm-ffn"."""
    boxes: list[str] = []
    for step in steps:
        part = "enc" if seq2seq and step.section in ("input", "encoder") else "dec"
        if step.kind in ("corpus", "vocab", "tokens"):
            boxes.append(f"{part}-tokens")
        elif step.kind in BOX_OF_KIND:
            box = BOX_OF_KIND[step.kind]
            boxes.append(f"{part}-{box}" if box == "embed" else box)
        elif step.kind in NORM_KINDS and pre_norm:
            boxes.append(f"{part}-norm-{step.sublayer}")
        elif step.kind == "residual" or step.kind in NORM_KINDS:
            boxes.append(f"{part}-{'add' if pre_norm else 'addnorm'}-{step.sublayer}")
        else:
            boxes.append(f"{part}-{step.sublayer}")
    return boxes


# Diagram geometry, in SVG units (pixels at full size).
BOX_W, BOX_H = 80, 34
COL = 94  # a box and the gap its arrow crosses
ROW = 86  # from one row of boxes to the next
MARGIN = 8


@dataclass
class Box:
    id: str
    lines: list[str]
    x: float
    y: float


@dataclass
class Frame:
    label: str
    x: float
    y: float
    width: float


@dataclass
class Diagram:
    width: float
    height: float
    boxes: list[Box] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    arrows: list[str] = field(default_factory=list)  # SVG path data, each with its arrowhead
    box_w: float = BOX_W
    box_h: float = BOX_H

    @property
    def at(self) -> dict[str, Box]:
        return {box.id: box for box in self.boxes}


def block_boxes(part: str, sublayers: list[str], pre_norm: bool) -> list[tuple[str, str]]:
    """(box id, label key) of one layer's boxes, in order."""
    out = []
    for sub in sublayers:
        name = "masked_self" if sub == "self" and part == "dec" else sub
        if pre_norm:
            out += [(f"{part}-norm-{sub}", "norm"), (f"{part}-{sub}", name), (f"{part}-add-{sub}", "add")]
        else:
            out += [(f"{part}-{sub}", name), (f"{part}-addnorm-{sub}", "addnorm")]
    return out


def arrow(x1: float, y1: float, x2: float, y2: float, via_y: float | None = None) -> str:
    """A line (with one elbow down and across when via_y is given) ending in an arrowhead."""
    if via_y is None:
        head = f"M{x2 - 5},{y2 - 3.5} L{x2},{y2} L{x2 - 5},{y2 + 3.5}"  # pointing right
        return f"M{x1},{y1} L{x2},{y2} {head}"
    head = f"M{x2 - 3.5},{y2 - 5} L{x2},{y2} L{x2 + 3.5},{y2 - 5}"  # pointing down
    return f"M{x1},{y1} L{x1},{via_y} L{x2},{via_y} L{x2},{y2} {head}"


def diagram(model_kind: str, config: dict, lang: str) -> Diagram:
    """The model as rows of boxes: an encoder row above the decoder row for a seq2seq model."""
    pre_norm = config.get("norm_position") == "pre"
    seq2seq = model_kind == "seq2seq"
    rows: list[list[tuple[str, str]]] = []
    frames: list[tuple[int, int, int, str]] = []  # row, first column, last column, label
    if seq2seq:
        enc = block_boxes("enc", ["self", "ffn"], pre_norm)
        rows.append([("enc-tokens", "src_tokens"), ("enc-embed", "embed"), *enc, ("memory", "memory")])
        frames.append((0, 2, 1 + len(enc), BOXES["encoder_layer"][lang].format(n=config["n_encoder_layers"])))
        dec = block_boxes("dec", ["self", "cross", "ffn"], pre_norm)
        n_dec = config["n_decoder_layers"]
    else:
        dec = block_boxes("dec", ["self", "ffn"], pre_norm)
        n_dec = config["n_layer"]
    rows.append([("dec-tokens", "tgt_tokens" if seq2seq else "tokens"), ("dec-embed", "embed"), *dec,
                 ("linear", "linear"), ("softmax", "softmax")])
    frames.append((len(rows) - 1, 2, 1 + len(dec), BOXES["decoder_layer"][lang].format(n=n_dec)))

    top = MARGIN + 16  # room for the frame labels
    out = Diagram(width=2 * MARGIN + COL * max(map(len, rows)) - (COL - BOX_W),
                  height=top + ROW * (len(rows) - 1) + BOX_H + MARGIN + 6)
    where: dict[str, tuple[float, float]] = {}
    for r, row in enumerate(rows):
        y = top + r * ROW
        for c, (box_id, key) in enumerate(row):
            x = MARGIN + c * COL
            out.boxes.append(Box(box_id, BOXES[key][lang].split("\n"), x, y))
            where[box_id] = (x, y)
            if c:
                out.arrows.append(arrow(x - (COL - BOX_W) + 1, y + BOX_H / 2, x - 1, y + BOX_H / 2))
    for r, first, last, text in frames:
        x = MARGIN + first * COL - 5
        out.frames.append(Frame(text, x, top + r * ROW - 5, (last - first) * COL + BOX_W + 10))
    if seq2seq:  # the encoder's output feeds every decoder layer's cross-attention
        (mx, my), (cx, cy) = where["memory"], where["dec-cross"]
        out.arrows.append(arrow(mx + BOX_W / 2, my + BOX_H + 1, cx + BOX_W / 2, cy - 1,
                                via_y=my + BOX_H + 14))
    return out


# ---------------------------------------------------------------------------------------------
# The page


def config_facts(walkthrough: Walkthrough, lang: str) -> list[tuple[str, str]]:
    c = walkthrough.config
    if walkthrough.model_kind == "seq2seq":
        return [(word("model", lang), word("seq2seq", lang)), ("d_model", str(c["d_model"])),
                (word("heads", lang), str(c["n_head"])),
                (word("enc_dec_layers", lang), f"{c['n_encoder_layers']} + {c['n_decoder_layers']}"),
                (word("vocab", lang), str(c["tgt_vocab_size"]))]
    return [(word("model", lang), word("gpt", lang)), ("d_model", str(c["n_embd"])),
            (word("heads", lang), str(c["n_head"])), (word("layers", lang), str(c["n_layer"])),
            (word("vocab", lang), str(c["vocab_size"]))]


def step_views(walkthrough: Walkthrough, lang: str) -> list[StepView]:
    steps = walkthrough.steps
    boxes = locate(steps, walkthrough.model_kind == "seq2seq", walkthrough.config.get("norm_position") == "pre")
    views = []
    for i, (step, step_id, box) in enumerate(zip(steps, step_ids(steps), boxes)):
        title, explanation, formula = narrate(step.kind, lang, step.layer, step.head)
        view = StepView(step_id, i + 1, step.section, title, explanation, formula, box)
        if step.matrix is not None:
            view.matrix = matrix_view(step, lang)
            if step.heatmap:
                view.heatmap = word(step.kind if step.kind in WORDS else "heatmap", lang)
        if step.table is not None:
            view.table = table_view(step, lang)
        if "predicted" in step.extra:
            view.predicted = f"{label('predicted', lang)}: {step.extra['predicted']}"
            if "p" in step.extra:
                view.predicted += f" (p = {step.extra['p']:.3f})"
        views.append(view)
    return views


def sections(views: list[StepView], lang: str) -> list[dict]:
    """The steps grouped by section, in walkthrough order."""
    out: list[dict] = []
    for view in views:
        if not out or out[-1]["key"] != view.section:
            out.append({"key": view.section, "name": SECTIONS[view.section][lang], "steps": []})
        out[-1]["steps"].append(view)
    return out


def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("glassformer.explain", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.get_template("walkthrough.html.j2")


def render_html(walkthrough: Walkthrough, lang: str = "en") -> str:
    """The whole page as a string."""
    check_lang(lang)
    views = step_views(walkthrough, lang)
    return _template().render(
        lang=lang,
        title=label("walkthrough", lang),
        source=walkthrough.source,
        output=walkthrough.output,
        facts=config_facts(walkthrough, lang),
        sections=sections(views, lang),
        diagram=diagram(walkthrough.model_kind, walkthrough.config, lang),
        words={**{key: texts[lang] for key, texts in WORDS.items()},
               "shape": label("shape", lang), "formula": label("formula", lang)},
        n_steps=len(views),
    )


def write_html(walkthrough: Walkthrough, path, lang: str = "en") -> Path:
    """Writes the page to `path` atomically."""
    path = Path(path)
    atomic_write_text(path, render_html(walkthrough, lang))
    return path
