"""Figures, drawn headless with matplotlib's Agg backend."""

from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write


def read_log(path) -> list[dict]:
    """The records of a run's log.jsonl; a line cut short by a killed run is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_loss(log_path, out_path) -> Path:
    """Training and validation loss against iteration, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["iter"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        raise ValueError(f"{log_path} has no loss records to plot")
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
