"""The analysis tools' results (glassformer.observe.analysis) printed for a reader, in English or Chinese,
and the patching heatmap as a PNG.

The printers draw what the analysis functions computed and compute nothing of the model's
math themselves (print_ablation calls `ablate`, the patching helper calls `patch`). Layers
and heads are printed counted from 1, as the walkthrough counts them; `parse_heads` reads
them back the same way ("2.1" is layer 2, head 1). Tokens and text are printed as plain text:
rich markup in them is not interpreted, control characters are shown escaped (`user_text`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from glassformer.base.files import atomic_write
from glassformer.explain.narration import check_lang
from glassformer.explain.render.terminal import user_text
from glassformer.observe import analysis
from glassformer.plots import MAX_TICK_TOKENS, tick_label

TEXT = {
    "lens": {"en": "Logit lens", "zh": "Logit lens（逐层读出）"},
    "lens_about": {"en": "the top {top} next tokens (with probabilities) read from the residual stream after each "
                         "layer, through the final norm and the unembedding; columns: position and its input token",
                   "zh": "把每一层之后的残差流经过最后的归一化和反嵌入读出，下一个词元的前 {top} 个预测（及概率）；"
                         "每列是一个位置和该位置输入的词元"},
    "embed": {"en": "embed", "zh": "嵌入"},
    "block": {"en": "block {n}", "zh": "第 {n} 层"},
    "position": {"en": "position", "zh": "位置"},
    "positions_cut": {"en": "the last {shown} of {total} positions", "zh": "{total} 个位置中的最后 {shown} 个"},
    "attribution": {"en": "Direct logit attribution of {token} (id {id}) at the last position",
                    "zh": "{token}（编号 {id}）在最后一个位置的 logit 的直接归因"},
    "frozen": {"en": "the final norm's {scale} = {value:.4g} is frozen at the value of the actual residual stream, "
                     "so the logit is a sum of the terms below (direct effects only)",
               "zh": "最后归一化的 {scale} = {value:.4g} 固定为实际残差流上的值，"
                     "所以 logit 等于下面各项之和（只算直接作用）"},
    "logit": {"en": "logit {logit:.4f} = sum of terms {total:.4f}", "zh": "logit {logit:.4f} = 各项之和 {total:.4f}"},
    "heads": {"en": "heads (layer × head)", "zh": "注意力头（层 × 头）"},
    "head": {"en": "head {n}", "zh": "头 {n}"},
    "layer": {"en": "layer {n}", "zh": "第 {n} 层"},
    "ffn": {"en": "feed-forward", "zh": "前馈网络"},
    "top": {"en": "largest contributions", "zh": "贡献最大的部分"},
    "remaining": {"en": "remaining terms", "zh": "其余各项"},
    "token_embedding": {"en": "token embedding", "zh": "词嵌入"},
    "normed_embedding": {"en": "the embeddings' sum, normed", "zh": "嵌入之和（归一化后）"},
    "pair_embedding": {"en": "pair embedding", "zh": "词对嵌入"},
    "position_embedding": {"en": "position embedding", "zh": "位置嵌入"},
    "segment_embedding": {"en": "segment embedding", "zh": "片段嵌入"},
    "o_proj_bias": {"en": "W_O biases (all layers)", "zh": "W_O 的偏置（所有层）"},
    "norm_shift": {"en": "final norm shift β", "zh": "最后归一化的平移 β"},
    "ablation": {"en": "Ablation ({mode}) of {heads}: log-probability of {token} at the last position",
                 "zh": "消融（{mode}）{heads}：最后一个位置上 {token} 的对数概率"},
    "zero": {"en": "head outputs set to zero", "zh": "头的输出置零"},
    "mean": {"en": "head outputs replaced by their mean over positions", "zh": "头的输出换成各位置上的平均"},
    "original": {"en": "original", "zh": "原模型"},
    "ablated": {"en": "ablated", "zh": "消融后"},
    "change": {"en": "change", "zh": "变化"},
    "prediction": {"en": "top prediction", "zh": "首选预测"},
    "patching": {"en": "Activation patching", "zh": "激活修补"},
    "patching_about": {"en": "the corrupt input is run with one site's activation taken from the clean input's run",
                       "zh": "运行被破坏的输入，把一处的激活换成干净输入运行时的激活"},
    "metric": {"en": "{metric}: clean {clean:.4f}, corrupt {corrupt:.4f}; each cell is normalised, "
                     "1 = the clean run's value, 0 = the corrupt run's",
               "zh": "{metric}：干净 {clean:.4f}，被破坏 {corrupt:.4f}；"
                     "每格已归一化，1 = 干净输入的值，0 = 被破坏输入的值"},
    "logit_diff": {"en": "logit({target}) − logit({foil}) at the last position",
                   "zh": "最后一个位置上 logit({target}) − logit({foil})"},
    "logprob": {"en": "log p({target}) at the last position", "zh": "最后一个位置上的 log p({target})"},
    "custom": {"en": "the given metric", "zh": "给定的指标"},
    "resid": {"en": "residual stream (layer × position)", "zh": "残差流（层 × 位置）"},
    "heads_all": {"en": "head outputs at all positions (layer × head)", "zh": "所有位置上的头输出（层 × 头）"},
}


def say(key: str, lang: str, **values) -> str:
    return TEXT[key][lang].format(**values)


# ---------------------------------------------------------------------------------------------
# Inputs from the command line


def as_ids(tokenizer, text_or_ids, model) -> list[int]:
    """A text (encoded, its last block_size tokens kept) or a list of ids -> ids; ValueError if empty."""
    ids = tokenizer.encode(text_or_ids) if isinstance(text_or_ids, str) else [int(i) for i in text_or_ids]
    ids = ids[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    return ids


def target_id(tokenizer, target: int | str) -> int:
    """A token id, or a text that must encode to exactly one token -> its id."""
    if isinstance(target, int):
        return target
    ids = tokenizer.encode(target)
    if len(ids) != 1:
        raise ValueError(f"the target must be one token; {target!r} encodes to {len(ids)} tokens")
    return ids[0]


def parse_heads(spec: str) -> list[tuple[int, int]]:
    """"2.1,3.4" (layer.head, counted from 1 as printed) -> [(1, 0), (2, 3)], counted from 0 as analysis takes them."""
    heads = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        layer, _, head = part.partition(".")
        if not (layer.isdigit() and head.isdigit()) or int(layer) < 1 or int(head) < 1:
            raise ValueError(f"a head is LAYER.HEAD, both counted from 1 (e.g. 2.1); got {part!r}")
        heads.append((int(layer) - 1, int(head) - 1))
    return heads


def token_text(tokenizer, i: int) -> str:
    """Token i as the walkthrough labels it (a token of whitespace made visible: " " -> "␣")."""
    from glassformer.explain.labels import token_label

    return token_label(tokenizer, int(i))


def quoted(tokenizer, i: int) -> str:
    return repr(token_text(tokenizer, i))


def signed_style(value: float, scale: float) -> str:
    """Red for negative, green for positive, stronger with |value| / scale; grey for NaN."""
    if math.isnan(value):
        return "grey50"
    level = int(255 - 150 * (min(abs(value) / scale, 1.0) if scale > 0 else 0.0))
    return f"black on rgb(255,{level},{level})" if value < 0 else f"black on rgb({level},255,{level})"


def grid_table(values: torch.Tensor, rows: list[str], cols: list, scale: float) -> Table:
    """A coloured (rows × cols) table of numbers; column labels may be user text."""
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
    table.add_column("", no_wrap=True)
    for col in cols:
        table.add_column(user_text(col) if not isinstance(col, Text) else col, justify="right", no_wrap=True,
                         min_width=5)
    for label, row in zip(rows, values.tolist()):
        table.add_row(label, *(Text("·" if math.isnan(v) else f"{v:+.2f}", style=signed_style(v, scale))
                               for v in row))
    return table


# ---------------------------------------------------------------------------------------------
# Logit lens


def print_lens(lens: torch.Tensor, tokenizer, ids, top: int = 3, lang: str = "en", console: Console | None = None,
               max_positions: int = 8) -> None:
    """The top tokens (with probabilities) each layer's residual stream predicts at each position.

    Args:
        lens: analysis.logit_lens's (n_layer + 1, T, V) logits, of all T positions or of the last
            ones (logit_lens(model, ids, positions=range(T - k, T)), which a long text can afford).
        tokenizer: what turns ids into token text.
        ids: the T input ids the lens read.
        top: tokens shown per layer and position.
        max_positions: the last this many positions are shown.
    """
    check_lang(lang)
    console = console or Console()
    ids = [int(i) for i in (ids.flatten().tolist() if isinstance(ids, torch.Tensor) else ids)]
    first = len(ids) - lens.size(1)  # the position of the lens's first column
    if first < 0:
        raise ValueError(f"the lens has {lens.size(1)} positions, more than the {len(ids)} ids given")
    shown = list(range(max(first, len(ids) - max_positions), len(ids)))
    probs = torch.softmax(lens[:, [p - first for p in shown]].float(), dim=-1)  # (layers, shown, V)
    best = probs.topk(min(top, probs.size(-1)), dim=-1)
    console.rule(Text(say("lens", lang), style="bold"))
    console.print(Text(say("lens_about", lang, top=top), style="italic"))
    if len(shown) < len(ids):
        console.print(Text(say("positions_cut", lang, shown=len(shown), total=len(ids)), style="dim"))
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    table.add_column("")
    for p in shown:
        table.add_column(Text.assemble(f"{p} ", user_text(token_text(tokenizer, ids[p]))))
    for layer in range(lens.size(0)):
        cells = []
        for column in range(len(shown)):
            cell = Text()
            tokens, chances = best.indices[layer, column].tolist(), best.values[layer, column].tolist()
            for k, (i, pr) in enumerate(zip(tokens, chances)):
                cell.append("\n" if k else "")
                cell.append_text(user_text(token_text(tokenizer, i), "bold" if k == 0 else ""))
                cell.append(f" {pr:.2f}", style="dim")
            cells.append(cell)
        name = say("embed", lang) if layer == 0 else say("block", lang, n=layer)
        table.add_row(name, *cells, end_section=True)
    console.print(table)


# ---------------------------------------------------------------------------------------------
# Attribution


def print_attribution(result: analysis.Attribution, tokenizer, lang: str = "en", console: Console | None = None,
                      top: int = 8) -> None:
    """Each head's and feed-forward's direct contribution to a logit, the remaining terms, and the largest ones."""
    check_lang(lang)
    console = console or Console()
    console.rule(Text(say("attribution", lang, token=quoted(tokenizer, result.target), id=result.target)))
    scale = "σ" if result.norm == "layernorm" else "rms"
    console.print(Text(say("frozen", lang, scale=scale, value=result.scale), style="italic"))
    console.print(Text(say("logit", lang, logit=result.logit, total=result.total()), style="bold"))
    values = torch.cat([result.heads, result.ffn[:, None]], dim=1)  # (n_layer, n_head + 1)
    largest = float(values.abs().max()) or 1.0
    cols = [say("head", lang, n=h + 1) for h in range(result.heads.size(1))] + [say("ffn", lang)]
    rows = [say("layer", lang, n=i + 1) for i in range(result.heads.size(0))]
    console.print(Text(say("heads", lang), style="bold"))
    console.print(grid_table(values, rows, cols, largest))
    console.print(Text(say("remaining", lang), style="bold"))
    for name, value in result.remaining.items():
        console.print(Text(f"  {say(name, lang)}: {value:+.4f}"))
    console.print(Text(say("top", lang), style="bold"))
    for layer, head, value in result.top(top):
        part = say("ffn", lang) if head is None else say("head", lang, n=head + 1)
        console.print(Text(f"  {say('layer', lang, n=layer + 1)}, {part}: {value:+.4f}"))


# ---------------------------------------------------------------------------------------------
# Ablation


def print_ablation(model, tokenizer, ids, heads: list[tuple[int, int]], target: int | str, mode: str = "zero",
                   lang: str = "en", console: Console | None = None) -> dict:
    """How removing heads changes the target's log-probability at the last position.

    Args:
        model: a glassformer GPT.
        tokenizer: its tokenizer.
        ids: a text or a list of ids.
        heads: (layer, head) pairs counted from 0 (`parse_heads` reads "2.1" as printed, counted from 1).
        target: a token id, or a text of one token.
        mode: "zero" or "mean" (see analysis.ablate).

    Returns:
        {"target", "original", "ablated", "delta"}: the log-probabilities before and after, and their difference.
    """
    check_lang(lang)
    console = console or Console()
    ids = as_ids(tokenizer, ids, model)
    target = target_id(tokenizer, target)
    original = torch.log_softmax(analysis.ablate(model, ids)[-1].double(), -1)
    ablated = torch.log_softmax(analysis.ablate(model, ids, heads, mode)[-1].double(), -1)
    names = ", ".join(f"{layer + 1}.{head + 1}" for layer, head in heads) or "-"
    console.rule(Text(say("ablation", lang, mode=mode, heads=names, token=quoted(tokenizer, target))))
    console.print(Text(say(mode, lang), style="italic"))
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    for col in ("", "log p", say("prediction", lang)):
        table.add_column(col)
    for key, logp in (("original", original), ("ablated", ablated)):
        predicted = user_text(token_text(tokenizer, int(logp.argmax())))
        table.add_row(say(key, lang), f"{float(logp[target]):.4f}", predicted)
    delta = float(ablated[target] - original[target])
    table.add_row(say("change", lang), Text(f"{delta:+.4f}", style=signed_style(delta, 1.0)), "")
    console.print(table)
    return {"target": target, "original": float(original[target]), "ablated": float(ablated[target]), "delta": delta}


# ---------------------------------------------------------------------------------------------
# Patching


def patch_text(model, tokenizer, clean, corrupt, target: int | str | None = None, **options) -> analysis.Patching:
    """analysis.patch on two texts (or id lists), its positions labelled with their tokens
    ("a→b" where the corrupt token differs). options: patch's (metric, foil, positions, ...)."""
    clean, corrupt = as_ids(tokenizer, clean, model), as_ids(tokenizer, corrupt, model)
    target = None if target is None else target_id(tokenizer, target)
    result = analysis.patch(model, clean, corrupt, target, **options)
    return with_tokens(result, tokenizer)


def with_tokens(result: analysis.Patching, tokenizer) -> analysis.Patching:
    """The result with its positions labelled by the clean token ("clean→corrupt" where they differ)."""
    labels = []
    for a, b in zip(result.clean_ids, result.corrupt_ids):
        labels.append(token_text(tokenizer, a) if a == b else f"{token_text(tokenizer, a)}→{token_text(tokenizer, b)}")
    return dataclasses.replace(result, position_labels=labels)


def metric_line(result: analysis.Patching, tokenizer, lang: str) -> str:
    def name(i):
        return str(i) if tokenizer is None or i is None else repr(token_text(tokenizer, i))

    metric = say(result.metric, lang, target=name(result.target), foil=name(result.foil))
    return say("metric", lang, metric=metric, clean=result.clean, corrupt=result.corrupt)


def print_patching(result: analysis.Patching, tokenizer=None, lang: str = "en", console: Console | None = None,
                   max_positions: int = 24) -> None:
    """The patching grids as coloured tables: residual stream (layer × position), heads (layer × head)."""
    check_lang(lang)
    console = console or Console()
    if tokenizer is not None:
        result = with_tokens(result, tokenizer)
    console.rule(Text(say("patching", lang), style="bold"))
    console.print(Text(say("patching_about", lang), style="italic"))
    console.print(Text(metric_line(result, tokenizer, lang), style="italic"))
    T = result.resid.size(1)
    fits = max(4, (console.width - 10) // 7)  # a column takes 7 characters ("+0.12" and its padding)
    shown = list(range(max(0, T - min(max_positions, fits)), T))
    console.print(Text(say("resid", lang), style="bold"))
    if len(shown) < T:
        console.print(Text(say("positions_cut", lang, shown=len(shown), total=T), style="dim"))
    rows = [say("embed", lang)] + [say("block", lang, n=i) for i in range(1, result.resid.size(0))]
    cols = [result.position_labels[p][:10] for p in shown]
    console.print(grid_table(result.resid[:, shown], rows, cols, 1.0))
    console.print(Text(say("heads_all", lang), style="bold"))
    rows = [say("layer", lang, n=i + 1) for i in range(result.heads.size(0))]
    cols = [say("head", lang, n=h + 1) for h in range(result.heads.size(1))]
    console.print(grid_table(result.heads, rows, cols, 1.0))


def save_patching_png(result: analysis.Patching, path, tokenizer=None) -> Path:
    """The two patching grids as heatmaps in one PNG (blue 0 = corrupt ... red 1 = clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if tokenizer is not None:
        result = with_tokens(result, tokenizer)
    T, n_head = result.resid.size(1), result.heads.size(1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(min(0.35 * T + 3, 16) + 0.4 * n_head + 3, 0.45 * len(
        result.layer_labels) + 2.5), dpi=100, width_ratios=[max(T, 4), max(n_head, 4)], layout="constrained")
    for ax, grid, title in ((left, result.resid, "residual stream"), (right, result.heads, "head outputs")):
        image = ax.imshow(grid.numpy(), cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest", aspect="auto")
        ax.set_title(title, fontsize=10)
    left.set_yticks(range(len(result.layer_labels)), result.layer_labels, fontsize=8)
    if T <= MAX_TICK_TOKENS:
        left.set_xticks(range(T), [tick_label(t) for t in result.position_labels], rotation=90, fontsize=7)
    left.set_xlabel("position", fontsize=8)
    right.set_yticks(range(result.heads.size(0)), [f"layer {i + 1}" for i in range(result.heads.size(0))], fontsize=8)
    right.set_xticks(range(n_head), [str(h + 1) for h in range(n_head)], fontsize=7)
    right.set_xlabel("head", fontsize=8)
    fig.colorbar(image, ax=[left, right], shrink=0.8, label="patched metric (1 = clean, 0 = corrupt)")
    fig.suptitle(f"activation patching: {result.metric}", fontsize=10)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# The command line's --lens, --attribute, --ablate and --patch together


def option(name: str, make):
    """make() with its ValueError's one line prefixed by the command-line option it came from."""
    try:
        return make()
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def lens_data(lens: torch.Tensor, tokenizer, top: int = 5) -> dict:
    """The lens as data: per layer and position, the `top` tokens and their probabilities."""
    probs = torch.softmax(lens.float(), dim=-1)
    best = probs.topk(min(top, probs.size(-1)), dim=-1)
    return {"layers": ["embedding"] + [f"block {i}" for i in range(1, lens.size(0))],
            "top": [[[{"id": int(i), "token": token_text(tokenizer, i), "p": round(float(q), 6)}
                      for i, q in zip(ids.tolist(), ps.tolist())] for ids, ps in zip(layer_ids, layer_ps)]
                    for layer_ids, layer_ps in zip(best.indices, best.values)]}


def attribution_data(result: analysis.Attribution, tokenizer, top: int = 12) -> dict:
    """An attribution as data for a page: `Attribution.to_dict()`, the target's label, and its `top`
    largest contributions as {"layer", "head" (None: the feed-forward), "value"}, counted from 0."""
    return {**result.to_dict(), "token": token_text(tokenizer, result.target), "total": result.total(),
            "top": [{"layer": layer, "head": head, "value": value} for layer, head, value in result.top(top)]}


def patching_data(result: analysis.Patching, tokenizer) -> dict:
    """A patching result as data for a page: `Patching.to_dict()` with its positions labelled by their
    tokens ("clean→corrupt" where they differ) and the target's and foil's labels."""
    result = with_tokens(result, tokenizer)

    def name(i):
        return None if i is None else token_text(tokenizer, i)

    return {**result.to_dict(), "target_token": name(result.target), "foil_token": name(result.foil)}


def corrupted(tokenizer, ids: list[int], tries: int = 400) -> str | None:
    """A default corrupt input for patching: `ids` with one token replaced, as text that reads back as
    exactly those ids (same length), or None where none is found.

    The token replaced is the last one made of letters before the final position (else the final
    one); its replacement is the nearest id whose text has the same shape (letters, the same
    leading space and the same case of its first letter): a neighbouring character for a
    character model ('h' -> 'g'), a neighbouring merge for BPE."""
    specials = {tokenizer.pad_id, tokenizer.unk_id, getattr(tokenizer, "bos_id", None),
                getattr(tokenizer, "eos_id", None)} - {None}

    def shape(i: int) -> tuple | None:
        text = tokenizer.decode([i])
        word = text.lstrip(" ")
        if not word.isalpha() or i in specials:
            return None
        return text.startswith(" "), word[0].isupper()

    order = [q for q in range(len(ids) - 2, -1, -1) if shape(ids[q]) is not None] + [len(ids) - 1]
    vocab = tokenizer.vocab_size
    for q in order[:4]:
        wanted = shape(ids[q])
        for step in range(1, vocab):
            if step > tries:
                break
            for i in (ids[q] - step, ids[q] + step):
                if not 0 <= i < vocab or (wanted is not None and shape(i) != wanted) or i in specials:
                    continue
                new = ids[:q] + [i] + ids[q + 1:]
                text = tokenizer.decode(new)
                if tokenizer.encode(text) == new:
                    return text
    return None


def explain_why(model, tokenizer, text: str, *, lens: bool = False, attribute: str | None = None,
                ablate: str | None = None, ablate_mode: str = "zero", target: str | None = None,
                patch: str | None = None, png=None, lang: str = "en", quiet: bool = False,
                console: Console | None = None) -> dict:
    """The analyses `glassformer explain --lens/--attribute/--ablate/--patch` asks for on a GPT: each
    printed (unless quiet) and returned as data ({"lens", "attribution", "ablation", "patching"}).

    target: the token --ablate and --patch watch (default: the model's prediction after `text`).
    Raises ValueError (one line, naming the option) for a bad head, token or text.
    """
    check_lang(lang)
    if target is not None and ablate is None and patch is None:
        raise ValueError("--target applies to --ablate and --patch")
    if png is not None and patch is None:
        raise ValueError("--png applies to --patch (its heatmap)")
    console = console or Console(quiet=quiet)
    ids = as_ids(tokenizer, text, model)
    watched = None
    if target is not None:
        watched = option("--target", lambda: target_id(tokenizer, target))
    elif ablate is not None:
        watched = int(analysis.ablate(model, ids)[-1].argmax())  # the model's own prediction
    data: dict = {}
    if lens:
        result = analysis.logit_lens(model, ids)
        print_lens(result, tokenizer, ids, lang=lang, console=console)
        data["lens"] = lens_data(result, tokenizer)
    if attribute is not None:
        token = option("--attribute", lambda: target_id(tokenizer, attribute))
        result = option("--attribute", lambda: analysis.attribute(model, ids, token))
        print_attribution(result, tokenizer, lang=lang, console=console)
        data["attribution"] = result.to_dict()
    if ablate is not None:
        heads = option("--ablate", lambda: parse_heads(ablate))
        c = model.config
        for layer, head in heads:
            if layer >= c.n_layer or head >= c.n_head:
                raise ValueError(f"--ablate: no head {layer + 1}.{head + 1}; the model has layers 1..{c.n_layer} "
                                 f"with heads 1..{c.n_head}")
        data["ablation"] = option("--ablate", lambda: print_ablation(model, tokenizer, ids, heads, watched,
                                                                     ablate_mode, lang, console))
        data["ablation"]["heads"] = [list(h) for h in heads]
    if patch is not None:
        result = option("--patch", lambda: patch_text(model, tokenizer, ids, patch, watched))
        print_patching(result, tokenizer, lang=lang, console=console)
        if png is not None:
            console.print(Text(str(save_patching_png(result, png, tokenizer)), style="dim"))
        data["patching"] = result.to_dict()
    return data


__all__ = ["as_ids", "attribution_data", "corrupted", "explain_why", "parse_heads", "patch_text", "patching_data",
           "print_ablation", "print_attribution", "print_lens", "print_patching", "save_patching_png", "target_id"]
