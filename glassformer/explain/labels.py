"""How the walkthroughs label tokens: the articles' names for special tokens, whitespace made visible.

Shared by the walkthrough data, the generation view and the notebook displays.
"""

from __future__ import annotations

DISPLAY = {"<bos>": "<start>", "<eos>": "<end>"}  # the articles' names for the special tokens

WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def token_label(tok, i: int) -> str:
    """Token i as the walkthrough labels it: special tokens by the articles' names, and a token
    of whitespace made visible (" " -> "␣", a newline -> "↵"); other tokens as they are."""
    text = tok.token(i)
    if text in DISPLAY:
        return DISPLAY[text]
    return text.translate(WHITESPACE) if text and not text.strip() else text


def token_labels(tok, ids) -> list[str]:
    """The tokens of `ids` as the walkthrough shows them (`token_label`)."""
    return [token_label(tok, i) for i in ids]
