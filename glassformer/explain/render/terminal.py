"""Prints a walkthrough to the terminal with rich: each step's title, formula, shape and matrix.

Matrices are coloured by value (red negative, green positive; attention and output
probabilities in one blue scale). A matrix too large to read shows its top-left corner
and its statistics. What came from the user or a file (the text, tokens, the corpus) is
printed as plain text: rich markup in it is not interpreted and control characters are
shown escaped (`user_text`).
"""

from __future__ import annotations

import math

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from glassformer.base.display import plain
from glassformer.explain.narration import SECTIONS, check_lang, label, narrate
from glassformer.explain.steps import Step
from glassformer.explain.walkthrough import statistics


def user_text(value, style: str = "") -> Text:
    """A user's or a file's string as a rich Text: printed character for character, never as markup."""
    return Text(plain(str(value)), style=style)


def cell_style(value: float, scale: float, probability: bool) -> str:
    """A background colour whose strength follows |value| / scale."""
    if math.isinf(value):
        return "grey50"
    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    level = int(255 - 150 * strength)  # 255 = white (weak) ... 105 = strong
    if probability:
        return f"black on rgb({level},{level},255)"
    return f"black on rgb(255,{level},{level})" if value < 0 else f"black on rgb({level},255,{level})"


def format_value(value: float) -> str:
    if math.isinf(value):
        return "−∞" if value < 0 else "∞"
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"


def matrix_table(step: Step, lang: str, max_rows: int, max_cols: int) -> tuple[Table, str | None]:
    """The values (or their top-left corner) as a rich Table, and a statistics line when cut."""
    m = step.values
    if m.ndim == 1:
        m = m[None, :]
    rows, cols = m.shape
    shown = m[:max_rows, :max_cols]
    probability, mask = step.display == "probabilities", step.display == "mask"
    numbers = m.astype(np.float64)
    finite = numbers[np.isfinite(numbers)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    table = Table(show_header=True, header_style="dim", box=None, pad_edge=False, padding=(0, 1))
    table.add_column("")
    col_labels = step.cols if step.cols is not None and len(step.cols) == cols else [str(j) for j in range(cols)]
    for j in range(shown.shape[1]):
        table.add_column(user_text(str(col_labels[j])[:8]), justify="right")
    if cols > max_cols:
        table.add_column("…")
    row_labels = step.rows if step.rows is not None and len(step.rows) == rows else [str(i) for i in range(rows)]
    for i in range(shown.shape[0]):
        if mask:
            cells = [Text("1" if v else "0", style="black on rgb(255,255,255)" if v else "grey50") for v in shown[i]]
        elif m.dtype.kind in "iu":
            cells = [Text(str(int(v))) for v in shown[i]]
        else:
            cells = [Text(format_value(v), style=cell_style(v, 1.0 if probability else scale, probability))
                     for v in shown[i]]
        table.add_row(user_text(str(row_labels[i])[:12]), *cells, *(["…"] if cols > max_cols else []))
    if rows > max_rows:
        table.add_row("…", *["" for _ in range(shown.shape[1])], *([""] if cols > max_cols else []))
    stats = None
    if (rows > max_rows or cols > max_cols) and m.dtype.kind == "f":
        st = statistics(m)
        stats = label("corner", lang) + "; " + label("stats", lang, mean=st["mean"], std=st["std"], min=st["min"],
                                                     max=st["max"])
    return table, stats


def shown_steps(walkthrough) -> list[Step]:
    """The steps the terminal prints: all of them for a model small enough to read its weights
    (the articles' example), otherwise all but the weights (the --json data has them)."""
    small = walkthrough.config.get("d_model", walkthrough.config.get("n_embd", 0)) <= 16
    return [s for s in walkthrough.steps if small or s.op != "weight"]


def print_walkthrough(walkthrough, lang: str = "en", console: Console | None = None, max_rows: int = 12,
                      max_cols: int = 10) -> None:
    check_lang(lang)
    console = console or Console()
    console.rule(f"[bold]{label('walkthrough', lang)}")
    console.print(Text.assemble(user_text(walkthrough.source, "bold"), " → ",
                                user_text(walkthrough.output, "bold green")))
    steps = shown_steps(walkthrough)
    if len(steps) < len(walkthrough.steps):
        console.print(Text(label("weights_hidden", lang), style="dim"))
    seq2seq = walkthrough.model_kind == "seq2seq"
    section = None
    for number, step in enumerate(steps, 1):
        if step.section != section:
            section = step.section
            console.rule(SECTIONS[section][lang])
        title, explanation, formula = narrate(step, lang, seq2seq)
        heading = Text(f"{number}. {title}", style="bold")
        if formula:
            heading.append(f"   {formula}", style="cyan")
        if step.values is not None:
            heading.append(f"   {label('shape', lang)} {' × '.join(map(str, step.values.shape))}", style="dim")
        console.print(heading)
        console.print(Text(explanation, style="italic"))
        console.print(Text(f"{step.id} = {step.op}({', '.join(step.inputs)})", style="dim"))
        if step.table is not None:
            table = Table(show_header=step.header is not None, box=None, padding=(0, 1))
            width = max(len(r) for r in step.table)
            for name in (step.header or [""] * width):
                table.add_column(name)
            for row in step.table:
                table.add_row(*(user_text(cell) for cell in row))
            console.print(table)
        elif step.values is not None:
            table, stats = matrix_table(step, lang, max_rows, max_cols)
            console.print(table)
            if stats:
                console.print(Text(stats, style="dim"))
        if step.op == "argmax":
            console.print(Text.assemble(Text(f"{label('predicted', lang)}: ", "bold green"),
                                        user_text(step.cols[0], "bold green"), f" (p = {step.table[0][1]})"))
        console.print()


# ---------------------------------------------------------------------------------------------
# Generation, token by token (glassformer.explain.generation)

SHOW_KEYS = 12  # the newest keys shown in an attention row


def attention_table(rows: list, keys: list[str]) -> Table:
    """Per layer and head (rows "1.2"), the attention probabilities over the last SHOW_KEYS keys."""
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
    table.add_column("")
    shown = keys[-SHOW_KEYS:]
    for key in shown:
        table.add_column(user_text(key[:6]), justify="right")
    for layer, heads in enumerate(rows):
        for head, row in enumerate(heads):
            cells = [Text(f"{v:.2f}", style=cell_style(v, 1.0, True)) for v in row[-len(shown):]]
            table.add_row(f"{layer + 1}.{head + 1}", *cells)
    return table


def candidates_table(candidates: list[dict], columns: list[str]) -> Table:
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
    table.add_column("token")
    for name in columns:
        table.add_column(name, justify="right")
    for c in candidates:
        table.add_row(user_text(c["token"]), *(f"{c[name]:.3f}" if c[name] is not None else "−∞" for name in columns))
    return table


def print_generation(generation, lang: str = "en", console: Console | None = None) -> None:
    """Prints a Generation: per step the cache, the newest query's attention, the choice's stages and the pick."""
    check_lang(lang)
    console = console or Console()
    console.rule(f"[bold]{label('generation', lang)}")
    console.print(Text.assemble(user_text(generation.text, "bold"), " → ", user_text(generation.output_text,
                                                                                    "bold green")))
    g = generation.settings
    for n, step in enumerate(generation.steps, 1):
        if generation.kind == "beam":
            console.print(Text(label("beam_step", lang, n=step["step"], k=len(step["candidates"]), beam=g["beam"]),
                               style="bold"))
            table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
            for name in label("beam_columns", lang):
                table.add_column(name)
            status = label("beam_status", lang)
            for c in step["candidates"]:
                style = {"kept": "green", "finished": "bold cyan", "pruned": "dim"}[c["status"]]
                table.add_row(user_text(" ".join(c["tokens"]), style), f"{c['score']:.3f}", f"{c['normalised']:.3f}",
                              Text(status[c["status"]], style=style))
            console.print(table)
            continue
        console.print(Text(label("gen_step", lang, n=n), style="bold"))
        if generation.kind == "greedy":
            console.print(Text.assemble(f"{label('gen_target', lang)}: ", user_text(" ".join(step["target"]))))
            console.print(Text(label("gen_cross", lang), style="dim"))
            console.print(attention_table(step["cross_attention"], generation.prompt))
            console.print(candidates_table(step["candidates"], ["p"]))
        else:
            cache = step["cache"]
            context = step["context"]
            console.print(Text(label("gen_cache", lang, layers=cache["layers"], shape=tuple(cache["k_shape"]))
                               if cache else label("gen_no_cache", lang, n=len(context)), style="dim"))
            console.print(Text(label("gen_context", lang, n=len(context)) + "; "
                               + label("gen_attention", lang, n=min(SHOW_KEYS, len(context))), style="dim"))
            console.print(attention_table(step["attention"], context))
            if step["greedy"]:
                console.print(Text(label("gen_greedy", lang), style="dim"))
            else:
                console.print(Text(label("gen_choice", lang, t=g["temperature"], k=g["top_k"] or "—",
                                         nk=step["kept"]["top_k"], v=step["kept"]["vocab"], p=g["top_p"] or "—",
                                         np=step["kept"]["top_p"], seed=g["seed"]), style="dim"))
            console.print(candidates_table(step["candidates"], ["logit", "softmax", "temperature", "top_k", "top_p"]))
        picked = step["picked"]
        console.print(Text.assemble(Text(f"{label('gen_picked', lang)}: ", "bold green"),
                                    user_text(picked["token"], "bold green"), f" (p = {picked['p']:.3f})"))
        console.print()
