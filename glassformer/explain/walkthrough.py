"""Builds the walkthrough: the articles' tiny example, or any trained model on the user's text.

The built-in example follows the articles: a three-sentence dialogue, a vocabulary made
from its words, the `walkthrough` preset (d_model 6, Q/K/V width 4, one encoder and one
decoder layer). The model is first trained for a moment on the dialogue (seeded, so it is
the same every time), so that its greedy decode really answers the first line with the second.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import PRESETS
from ..data import collate, lm_loss, load_translation_tokenizers, source_ids
from ..decode import greedy
from ..gpt import GPT
from ..seq2seq import Seq2Seq
from ..tokenizers import WordTokenizer
from ..trace import Trace
from .steps import Step, block_steps, input_steps, matrix, output_steps

# Three lines of a dialogue; each line answers the one before. The first two are the articles'.
CORPUS = [
    "when you play the game of thrones",
    "you win or you die",
    "so learn the rules before you play",
]
DISPLAY = {"<bos>": "<start>", "<eos>": "<end>"}  # the articles' names for the special tokens


def small_model(config) -> bool:
    """Weight matrices are shown only where they are small enough to read (the articles' example)."""
    return getattr(config, "d_model", 0) <= 16


@dataclass
class Walkthrough:
    """What the renderers draw: the steps in order, and what the model read and produced."""

    steps: list[Step]
    source: str  # the text the model read
    output: str  # what it produced (translation or next token)
    model_kind: str  # "seq2seq" | "gpt"
    config: dict


def token_labels(tok, ids: list[int]) -> list[str]:
    """The tokens of `ids` as the walkthrough shows them (special tokens by the articles' names)."""
    return [DISPLAY.get(tok.token(i), tok.token(i)) for i in ids]


def train_walkthrough_model(heads: int = 1, seed: int = 0, steps: int = 150) -> tuple[Seq2Seq, WordTokenizer]:
    """The `walkthrough` preset, trained on the dialogue until it answers each line with the next."""
    tok = WordTokenizer.train("\n".join(CORPUS))
    cfg = dataclasses.replace(PRESETS["walkthrough"].model, src_vocab_size=tok.vocab_size,
                              tgt_vocab_size=tok.vocab_size, shared_vocab=True, n_head=heads,
                              pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(seed)
    model = Seq2Seq(cfg)
    pairs = [(source_ids(tok.encode(a), cfg.block_size, tok.eos_id), tok.encode(b)) for a, b in zip(CORPUS, CORPUS[1:])]
    src, src_mask, tgt_in, tgt_out = collate(pairs, range(len(pairs)), tok.pad_id, tok.bos_id, tok.eos_id)
    # Gradient descent with momentum, written out: the articles' update rule, and it spares
    # loading torch.optim (whose first use imports the compiler stack, slower than this training).
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    model.train()
    for _ in range(steps):
        loss = lm_loss(model(src, tgt_in, src_mask), tgt_out, ignore_index=tok.pad_id)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, velocity):
                v.mul_(0.9).add_(g)  # v <- 0.9 v + dL/dp
                p.sub_(0.1 * v)  # p <- p - lr v
    return model.eval(), tok


def seq2seq_walkthrough(model: Seq2Seq, src_tok, tgt_tok, text: str, corpus: list[str] | None = None) -> Walkthrough:
    """Every step of translating `text`: the encoder pass, then the decoder pass over its own greedy output."""
    src_ids = source_ids(src_tok.encode(text), model.config.block_size, model.config.eos_id)
    src = torch.tensor([src_ids])
    decoded = greedy(model, src)[0]
    tgt_ids = [model.config.bos_id] + decoded
    with torch.no_grad(), Trace(model) as trace:
        model(src, torch.tensor([tgt_ids]))
    src_labels, tgt_labels = token_labels(src_tok, src_ids), token_labels(tgt_tok, tgt_ids)
    vocab = [DISPLAY.get(tgt_tok.token(i), tgt_tok.token(i)) for i in range(tgt_tok.vocab_size)]
    c = model.config
    small = small_model(c)
    steps: list[Step] = []
    if corpus is not None:
        steps.append(Step("corpus", "input", table=[[line] for line in corpus], header=["text"]))
        steps.append(Step("vocab", "input", table=[[w, str(i)] for i, w in enumerate(vocab)], header=["word", "id"]))
    steps.append(Step("tokens", "input", table=[src_labels, [str(i) for i in src_ids]]))
    steps += input_steps(trace, "encoder", "src_emb", 0, "encoder.0", src_labels)
    for i in range(c.n_encoder_layers):
        steps += block_steps(trace, model, f"encoder.{i}", "encoder", i, src_labels, src_labels, small)
    last = "encoder_norm" if model.encoder_norm is not None else f"encoder.{c.n_encoder_layers - 1}"
    steps.append(Step("memory", "encoder", matrix(trace[last][0]), src_labels))
    steps.append(Step("tokens", "decoder", table=[tgt_labels, [str(i) for i in tgt_ids]]))
    steps += input_steps(trace, "decoder", "src_emb" if c.shared_vocab else "tgt_emb", 1, "decoder.0", tgt_labels)
    for i in range(c.n_decoder_layers):
        steps += block_steps(trace, model, f"decoder.{i}", "decoder", i, tgt_labels, src_labels, small)
    steps += output_steps(trace, tgt_labels, vocab)
    probs = torch.softmax(trace["lm_head"][0].float(), dim=-1)  # (T, V): position t predicts token t + 1
    rows = []
    for t, next_id in enumerate(decoded + [c.eos_id]):
        word = DISPLAY.get(tgt_tok.token(next_id), tgt_tok.token(next_id))
        rows.append([str(t + 1), " ".join(tgt_labels[: t + 1]), word, f"{probs[t, next_id]:.3f}"])
    steps.append(Step("decode", "output", table=rows, header=["step", "decoder input", "next", "p"]))
    output = tgt_tok.decode(decoded)
    return Walkthrough(steps, text, output, "seq2seq", dataclasses.asdict(c))


def gpt_walkthrough(model: GPT, tok, text: str) -> Walkthrough:
    """Every step of reading `text` and predicting the token that comes next."""
    ids = tok.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    with torch.no_grad(), Trace(model) as trace:
        model(torch.tensor([ids]))
    labels = token_labels(tok, ids)
    vocab = [tok.token(i) for i in range(tok.vocab_size)]
    c = model.config
    steps = [Step("tokens", "input", table=[labels, [str(i) for i in ids]])]
    steps += input_steps(trace, "decoder", "tok_emb", 0, "blocks.0", labels)
    for i in range(c.n_layer):
        steps += block_steps(trace, model, f"blocks.{i}", "decoder", i, labels, labels, small_model(c))
    steps += output_steps(trace, labels, vocab)
    return Walkthrough(steps, text, steps[-1].extra["predicted"], "gpt", dataclasses.asdict(c))


def builtin_walkthrough(heads: int = 1) -> Walkthrough:
    """The articles' example, trained for a moment so that it answers the first line with the second."""
    model, tok = train_walkthrough_model(heads)
    return seq2seq_walkthrough(model, tok, tok, CORPUS[0], corpus=CORPUS)


def model_walkthrough(model_dir, text: str) -> Walkthrough:
    """The walkthrough of a trained GPT or Seq2Seq checkpoint on the user's text."""
    from ..checkpoint import load

    model, tok = load(model_dir)
    if tok is None:
        raise ValueError(f"{model_dir} has no tokenizer; it cannot read text")
    if isinstance(model, Seq2Seq):
        src_tok, tgt_tok = load_translation_tokenizers(model_dir)
        return seq2seq_walkthrough(model, src_tok, tgt_tok, text)
    return gpt_walkthrough(model, tok, text)
