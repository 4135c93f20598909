"""`glassformer explain`: the articles' walkthrough, every matrix of the real model, in English or Chinese."""

from glassformer.explain.walkthrough import Walkthrough, builtin_walkthrough, gpt_walkthrough, seq2seq_walkthrough

__all__ = ["Walkthrough", "builtin_walkthrough", "gpt_walkthrough", "seq2seq_walkthrough"]
