"""Figures, drawn headless with matplotlib's Agg backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glassformer.base.files import atomic_write
from glassformer.base.reading import parse_json
from glassformer.data.batches import DataError, read_text


def read_log(path) -> list[dict]:
    """The records of a run's log.jsonl; a last line cut short by a killed run is skipped.

    Any other line that is not a JSON object, or a loss record without a numeric iteration and loss,
    is a one-line DataError naming the file and the line number.
    """
    lines = read_text(path).splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = parse_json(line, f"{path} line {number}")  # bounded nesting: no RecursionError
        except DataError:
            if number == len(lines):
                continue
            raise DataError(f"{path} line {number} is not a JSON record; is this a training run's log.jsonl?") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object; is this a training run's log.jsonl?")
        for key in ("train_loss", "val_loss"):
            if key in record and not all(is_number(record.get(k)) for k in ("iter", key)):
                raise DataError(f"{path} line {number} has {key} without a numeric iter and {key}")
        records.append(record)
    return records


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_loss(log_path, out_path) -> Path:
    """Training and validation loss against iteration, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["iter"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        raise DataError(f"{log_path} has no loss records to plot")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", linewidth=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out_path


# ---------------------------------------------------------------------------------------------
# Attention heatmaps

MAX_TICK_TOKENS = 32  # longer sequences are drawn without token labels
MAX_PIXELS = 40e6  # a big model's grid is drawn at a lower resolution rather than not at all


@dataclass
class AttentionMap:
    """One attention layer's probabilities, with the tokens that label its rows and columns."""

    name: str  # "layer 1" or "encoder 1 self-attention"
    probs: np.ndarray  # (heads, queries, keys)
    queries: list[str]
    keys: list[str]


def attention_maps(model, tokenizer, text: str) -> list[AttentionMap]:
    """Every attention layer's probabilities for `text`, one map per layer (and kind, for Seq2Seq).

    A GPT reads the text; a Seq2Seq translates it greedily and is then traced on its own
    output with teacher forcing, as the walkthrough does.
    """
    import torch

    from glassformer.data.batches import source_ids
    from glassformer.generation.decode import greedy
    from glassformer.model.seq2seq import Seq2Seq
    from glassformer.observe.trace import Trace

    def probs(trace, name):
        return trace[f"{name}.core.probs"][0].float().numpy()  # (h, T_q, T_k)

    def tokens(ids):
        return [tokenizer.token(i) for i in ids]

    c = model.config
    if isinstance(model, Seq2Seq):
        src_ids = source_ids(tokenizer.encode(text), c.block_size, c.eos_id)
        src = torch.tensor([src_ids])
        tgt_ids = [c.bos_id] + greedy(model, src)[0]
        with torch.no_grad(), Trace(model) as trace:
            model(src, torch.tensor([tgt_ids]))
        src_tokens, tgt_tokens = tokens(src_ids), tokens(tgt_ids)
        maps = [AttentionMap(f"encoder {i + 1} self-attention", probs(trace, f"encoder.{i}.self_attn"),
                             src_tokens, src_tokens) for i in range(c.n_encoder_layers)]
        for i in range(c.n_decoder_layers):
            maps.append(AttentionMap(f"decoder {i + 1} masked self-attention",
                                     probs(trace, f"decoder.{i}.self_attn"), tgt_tokens, tgt_tokens))
            maps.append(AttentionMap(f"decoder {i + 1} cross-attention", probs(trace, f"decoder.{i}.cross_attn"),
                                     tgt_tokens, src_tokens))
        return maps
    ids = tokenizer.encode(text)[-c.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    with torch.no_grad(), Trace(model) as trace:
        model(torch.tensor([ids]))
    labels = tokens(ids)
    return [AttentionMap(f"layer {i + 1}", probs(trace, f"blocks.{i}.self_attn"), labels, labels)
            for i in range(c.n_layer)]


def attention_figure(maps: list[AttentionMap], title: str = ""):
    """A grid of heatmaps: one row per map, one column per head; queries down, keys across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_heads = len(maps), max(m.probs.shape[0] for m in maps)
    longest = max(max(len(m.queries), len(m.keys)) for m in maps)
    side = min(max(2.4, 0.17 * longest + 1.2), 6.5)  # inches per heatmap: room for ~32 labels
    size = (side * n_heads + 1.0, side * n_rows + 0.6)
    dpi = min(100, int((MAX_PIXELS / (size[0] * size[1])) ** 0.5))
    fig, axes = plt.subplots(n_rows, n_heads, figsize=size, dpi=dpi, squeeze=False, layout="constrained")
    image = None
    for row, m in zip(axes, maps):
        for h, ax in enumerate(row):
            if h >= m.probs.shape[0]:
                ax.set_axis_off()
                continue
            image = ax.imshow(m.probs[h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                              aspect="auto")  # cross-attention maps are not square
            ax.set_title(f"{m.name}\nhead {h + 1}", fontsize=9)
            if max(len(m.queries), len(m.keys)) <= MAX_TICK_TOKENS:
                ax.set_xticks(range(len(m.keys)), [tick_label(t) for t in m.keys], rotation=90, fontsize=7)
                ax.set_yticks(range(len(m.queries)), [tick_label(t) for t in m.queries], fontsize=7)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if h == 0:
                ax.set_ylabel("query", fontsize=8)
            ax.set_xlabel("key", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=min(0.6, 3 / n_rows + 0.1), label="attention probability")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_attention(model, tokenizer, text: str, out_path) -> Path:
    """Attention heatmaps of every layer and head for `text`, as a PNG."""
    import matplotlib.pyplot as plt

    fig = attention_figure(attention_maps(model, tokenizer, text), title=shorten(text))
    out_path = Path(out_path)
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out_path


def tick_label(token: str) -> str:
    """A token as a tick label: whitespace made visible, control characters escaped."""
    token = token.replace(" ", "␣").replace("\n", "↵")
    return token if token.isprintable() else repr(token)[1:-1]


def shorten(text: str, width: int = 80) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
