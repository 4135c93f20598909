"""glassformer: the Transformer and GPT from first principles, with every number visible.

The public names are imported when first used, so that the command line (glassformer.cli)
starts, and answers Ctrl-C, before torch is imported.
"""

from __future__ import annotations

import importlib
import sys

_PUBLIC = {
    "load": "checkpoint", "save": "checkpoint",
    "PRESETS": "model.config", "GPTConfig": "model.config", "Seq2SeqConfig": "model.config",
    "TextStream": "generation.sampling", "generate": "generation.sampling", "stream": "generation.sampling",
    "GPT": "model.gpt", "KVCache": "model.layers", "Seq2Seq": "model.seq2seq",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


def _show_in_notebooks() -> None:
    """Inside IPython or Jupyter, the observers' results display as HTML (glassformer.explain.render.notebook)."""
    ipython = sys.modules.get("IPython")
    if ipython is not None and ipython.get_ipython() is not None:
        from glassformer.explain.render import notebook

        notebook.register(ipython.get_ipython())


_show_in_notebooks()
