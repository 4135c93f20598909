"""Names the command line offers before it imports torch, written once for it and for the library."""

DEFAULT_PRESET = "shakespeare-char-speedrun"  # train lm's recipe: the fastest measured (README: Speed and scale)
WEIGHTS = ("float", "int8", "bf16")  # generation's weight storage: as the model holds them, int8 per output
# channel, or bfloat16 (weights only: the arithmetic stays in the model's dtype)
