"""Names the command line offers before it imports torch, written once for it and for the library."""

DEFAULT_PRESET = "shakespeare-char-speedrun"  # train lm's recipe: the fastest measured (README: Speed and scale)
WEIGHTS = ("float", "int8")  # generation's weight storage: as the model holds them, or int8 per output channel
