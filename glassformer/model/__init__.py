"""The ground floor: the readable model (configs, layers, positions, GPT, Seq2Seq), literal.

It imports nothing of the rest of the package."""
