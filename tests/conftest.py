"""Shared fixtures: small seeded models and random ids. Tests never reach a model hub.

The fixtures are factories: a test asks for `tiny_gpt` and calls it with the config
fields it cares about, e.g. `tiny_gpt(position="rope")` or `tiny_gpt(seed=3, dropout=0.5)`.
"""

import os

# Set before anything below is imported, so no import reads the hub settings first:
# transformers builds random models locally; nothing is downloaded.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

from glassformer import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig  # noqa: E402

VOCAB = 50  # tiny_gpt's vocabulary and random_ids' default range
BLOCK = 16  # tiny_gpt's block_size


def build_tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """A 2-layer, 2-head, width-32 GPT over VOCAB ids and BLOCK positions, seeded, in eval mode.

    Args:
        seed: torch's global seed before the weights are drawn; equal seeds give equal weights
            whatever the other overrides (dropout draws nothing at construction).
        **overrides: GPTConfig fields replacing the defaults above.
    """
    values = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)
    values.update(overrides)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**values)).eval()


def build_tiny_seq2seq(seed: int = 0, **overrides) -> Seq2Seq:
    """A 2+2-layer, width-16 encoder-decoder (source vocabulary 31, target 29), no dropout, eval mode."""
    values = dict(src_vocab_size=31, tgt_vocab_size=29, block_size=20, n_encoder_layers=2, n_decoder_layers=2,
                  n_head=2, d_model=16, d_ff=32, dropout=0.0)
    values.update(overrides)
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(**values)).eval()


def random_ids(B: int, T: int, V: int = VOCAB, seed: int = 1) -> torch.Tensor:
    """(B, T) ids uniform in [0, V), from a private generator (the global seed is left alone)."""
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


EXPLORER_PAGE = "<!doctype html><title>placeholder</title>"  # the explorer tests' stand-in for its page


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    """A folder holding a placeholder explore.html, for the explorer tests' app."""
    folder = tmp_path_factory.mktemp("static")
    (folder / "explore.html").write_text(EXPLORER_PAGE)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT (2 layers, 2 heads, width 32) with a character vocabulary, saved to disk (the explorer tests')."""
    from glassformer import save
    from glassformer.data.tokenizers import CharTokenizer

    tok = CharTokenizer.train("ROMEO: wherefore art thou so\n")
    path = tmp_path_factory.mktemp("gpt")
    save(build_tiny_gpt(vocab_size=tok.vocab_size), path, tokenizer=tok)
    return path


@pytest.fixture
def tiny_gpt():
    """The factory `build_tiny_gpt(seed=0, **overrides) -> GPT`."""
    return build_tiny_gpt


@pytest.fixture
def tiny_seq2seq():
    """The factory `build_tiny_seq2seq(seed=0, **overrides) -> Seq2Seq`."""
    return build_tiny_seq2seq


@pytest.fixture
def ids():
    """The factory `random_ids(B, T, V=VOCAB, seed=1) -> (B, T) long tensor`."""
    return random_ids
