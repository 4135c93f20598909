"""glassformer: the Transformer and GPT from first principles, with every number visible."""

from .checkpoint import load, save
from .config import PRESETS, GPTConfig, Seq2SeqConfig
from .generate import TextStream, generate, stream
from .gpt import GPT
from .layers import KVCache
from .seq2seq import Seq2Seq

__all__ = ["GPT", "GPTConfig", "KVCache", "PRESETS", "Seq2Seq", "Seq2SeqConfig", "TextStream", "generate", "load",
           "save", "stream"]
__version__ = "0.1.0"
