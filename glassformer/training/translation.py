"""Translation end to end: parallel text -> BPE -> length-bucketed batches -> Seq2Seq, and sacreBLEU.

A sentence pair becomes
  src      = source tokens + <eos>                       (encoder input)
  tgt_in   = <bos> + target tokens                       (decoder input)
  tgt_out  = target tokens + <eos>                       (what the decoder must predict)
Pairs with an empty side are dropped (and counted); pairs longer than the model's
block_size are truncated (and counted), keeping <eos>. The source's shape, the padding and
the loss are glassformer.data.batches's (`source_ids`, `collate`, `lm_loss`); `TranslationTask` is
the translation training task (glassformer.training.task.Task).
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from glassformer.base.device import pick_device
from glassformer.checkpoint import load
from glassformer.data.batches import (
    MAX_TEXT_BYTES,
    SOURCE_TOKENIZER_FILE,
    STDIN,
    TEXT_LIMIT_ENV,
    DataError,
    check_line_lengths,
    collate,
    decode_text,
    env_limit,
    lm_loss,
    load_translation_tokenizers,
    read_bounded,
    read_text,
    source_ids,
)
from glassformer.data.tokenizers import BPETokenizer, Tokenizer
from glassformer.model.config import Seq2SeqConfig
from glassformer.model.seq2seq import Seq2Seq
from glassformer.training.distributed import world_from_env
from glassformer.training.rundir import run_directory
from glassformer.training.runs import configs_for_run, resumed_configs
from glassformer.training.task import Batch
from glassformer.training.trainer import TrainConfig, run_training

DEFAULT_VOCAB = 6000


def read_lines(path) -> list[str]:
    """Lines of a text file (plain or .gz), without line endings; a line over the length limit is refused."""
    return check_line_lengths(read_text(path).splitlines(), path)


def read_stdin_lines(stream=None) -> list[str]:
    """Lines of standard input (or binary `stream`), read with the same bounds and checks as a file's.

    Empty input gives no lines; bytes that are not UTF-8 text are refused in one line naming the offset.
    """
    stream = sys.stdin.buffer if stream is None else stream
    raw = read_bounded(stream, STDIN, env_limit(TEXT_LIMIT_ENV, MAX_TEXT_BYTES))
    return check_line_lengths(decode_text(raw, STDIN).splitlines(), STDIN)


def read_parallel(src_path, tgt_path, notice=None) -> list[tuple[str, str]]:
    """Line-aligned sentence pairs; pairs with an empty side are dropped and counted."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; they must be line-aligned")
    pairs = [(s.strip(), t.strip()) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    if len(kept) < len(pairs) and notice:
        notice(f"{src_path}: dropped {len(pairs) - len(kept)} pairs with an empty line on one side")
    if not kept:
        raise DataError(f"{src_path} and {tgt_path} hold no non-empty sentence pairs")
    return kept


def encode_pairs(pairs, src_tok, tgt_tok, block_size: int, notice=None) -> list[tuple[list[int], list[int]]]:
    """(source ids + eos, target ids) per pair, truncated to fit block_size."""
    src_ids = src_tok.encode_batch([s for s, _ in pairs])
    tgt_ids = tgt_tok.encode_batch([t for _, t in pairs])
    limit = block_size - 1  # room for <eos> (source) or <bos>/<eos> (target)
    truncated = sum(len(s) > limit or len(t) > limit for s, t in zip(src_ids, tgt_ids))
    if truncated and notice:
        notice(f"truncated {truncated} sentence pairs longer than block_size {block_size} tokens")
    return [(source_ids(s, block_size, src_tok.eos_id), t[:limit]) for s, t in zip(src_ids, tgt_ids)]


def bucket_batches(examples, batch_tokens: int) -> list[list[int]]:
    """Groups example indices of similar length so that batch size x longest sequence <= batch_tokens."""
    def length(i):
        src, tgt = examples[i]
        return max(len(src), len(tgt) + 1)

    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][1]), len(examples[i][0])))
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, length(i))
        if current and longest_if_added * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest_if_added = [], length(i)
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


class TranslationTask:
    """Label-smoothed cross-entropy on length-bucketed batches; validation loss, BLEU and chrF.

    Args:
        train: encoded training pairs (see `encode_pairs`).
        valid_examples: encoded validation pairs, for the validation loss.
        valid_pairs: the validation sentences, for BLEU and chrF of greedy translations.
        config: the model's config (its special token ids).
        cfg: batch_tokens (the token budget of a batch) and label_smoothing.
        src_tok, tgt_tok: the tokenizers (one object when the vocabulary is joint).
    """

    def __init__(self, train, valid_examples, valid_pairs, config: Seq2SeqConfig, cfg: TrainConfig,
                 src_tok, tgt_tok):
        self.train = train
        self.valid_examples, self.valid_pairs = valid_examples, valid_pairs
        self.config, self.cfg = config, cfg
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.batches = bucket_batches(train, cfg.batch_tokens)
        self.order: list[int] = []  # this epoch's batch order
        self.position = 0
        self.epoch = 0

    def _collate(self, examples, indices) -> Batch:
        c = self.config
        return collate(examples, indices, c.pad_id, c.bos_id, c.eos_id)

    def train_batch(self, generator: torch.Generator, device: torch.device) -> Batch:
        """The next batch of this epoch (a new random order each epoch): src, src_mask, tgt_in, tgt_out."""
        if self.position >= len(self.order):  # a new epoch: the batches in a new random order
            self.order = torch.randperm(len(self.batches), generator=generator).tolist()
            self.position = 0
            self.epoch += 1
        indices = self.batches[self.order[self.position]]
        self.position += 1
        return tuple(t.to(device) for t in self._collate(self.train, indices))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Label-smoothed cross-entropy of the decoder's predictions; padding does not count."""
        src, src_mask, tgt_in, tgt_out = batch
        # Right padding: real target positions never attend to padding under the causal mask.
        logits = model(src, tgt_in, src_mask)
        return lm_loss(logits, tgt_out, self.cfg.label_smoothing, ignore_index=self.config.pad_id)

    def tokens(self, batch: Batch) -> int:
        """The batch's target tokens, padding excluded."""
        return int((batch[3] != self.config.pad_id).sum())

    def state_dict(self) -> dict:
        """Where the run is in its epochs: this epoch's batch order, the next batch, the epoch."""
        return {"order": torch.tensor(self.order, dtype=torch.long), "position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restores what state_dict returned."""
        self.order, self.position, self.epoch = state["order"].tolist(), state["position"], state["epoch"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict:
        """Validation loss (no label smoothing), and BLEU and chrF of greedy translations; the epoch."""
        total, count = 0.0, 0
        for indices in bucket_batches(self.valid_examples, self.cfg.batch_tokens):
            src, src_mask, tgt_in, tgt_out = (t.to(device) for t in self._collate(self.valid_examples, indices))
            logits = model(src, tgt_in, src_mask)
            n = int((tgt_out != self.config.pad_id).sum())
            total += lm_loss(logits, tgt_out, ignore_index=self.config.pad_id).item() * n
            count += n
        hyps = translate(model, self.src_tok, self.tgt_tok, [s for s, _ in self.valid_pairs], beam=1)
        scores = bleu_chrf(hyps, [t for _, t in self.valid_pairs])
        return {"val_loss": total / count, "bleu": scores["bleu"], "chrf": scores["chrf"], "epoch": self.epoch}

    @staticmethod
    def score(metrics: dict) -> float:
        """Minus BLEU: the run keeps the model that translates best."""
        return -metrics["bleu"]  # keep the model that translates best


def translate(model, src_tok, tgt_tok, sentences: list[str], beam: int = 1, batch_size: int = 64,
              notice=None) -> list[str]:
    """Translations of `sentences`, in order (decoding lives in glassformer.generation.decode).

    Sentences longer than the model's block_size are truncated; `notice` hears how many. A beam wider
    than the target vocabulary is narrowed to it (its memory grows with beam x vocabulary); `notice` hears it.
    """
    from glassformer.generation.decode import translate_texts

    widest = model.config.tgt_vocab_size
    if beam > widest:
        if notice:
            notice(f"--beam {beam} is more than the {widest} tokens of the target vocabulary; using --beam {widest}")
        beam = widest

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = translate_texts(model, _PairTokenizer(src_tok, tgt_tok), sentences, beam=beam, batch_size=batch_size)
    for w in caught:
        if notice:
            notice(str(w.message))
    return out


class _PairTokenizer:
    """Encodes with the source tokenizer and decodes with the target one (separate vocabularies)."""

    def __init__(self, src_tok, tgt_tok):
        self.src, self.tgt = src_tok, tgt_tok
        self.pad_id, self.bos_id, self.eos_id = tgt_tok.pad_id, tgt_tok.bos_id, tgt_tok.eos_id

    def encode(self, text):
        return self.src.encode(text)

    def decode(self, ids):
        return self.tgt.decode(ids)


def bleu_chrf(hypotheses: list[str], references: list[str]) -> dict:
    """Detokenized, cased corpus BLEU and chrF from sacrebleu, with BLEU's signature."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    return {"bleu": bleu.corpus_score(hypotheses, [references]).score,
            "chrf": chrf.corpus_score(hypotheses, [references]).score,
            "signature": str(bleu.get_signature())}


# ---------------------------------------------------------------------------------------------
# Runs


def notice(text: str) -> None:
    """Prints a note about the input (dropped or truncated pairs) on stderr."""
    print(f"glassformer: {text}", file=sys.stderr)


def train_translation(out, train_src, train_tgt, valid_src, valid_tgt, preset: str = "multi30k",
                      overrides: list[str] = (), vocab_size: int | None = None, tokenizer: str = "joint",
                      resume: bool = False, progress: bool | None = None, overwrite: bool = False) -> dict:
    """Trains a Seq2Seq model on parallel text into run directory `out`; returns the final metrics.

    A directory that holds files is refused unless `resume` (continue its run) or `overwrite`
    (replace it); the run holds the directory's lock while it writes (glassformer.training.rundir).
    """
    with run_directory(out, resume=resume, overwrite=overwrite) as out:
        return _train_translation(out, train_src, train_tgt, valid_src, valid_tgt, preset, overrides, vocab_size,
                                  tokenizer, resume, progress)


def _train_translation(out: Path, train_src, train_tgt, valid_src, valid_tgt, preset, overrides, vocab_size,
                       tokenizer, resume, progress) -> dict:
    train_pairs = read_parallel(train_src, train_tgt, notice)
    valid_pairs = read_parallel(valid_src, valid_tgt, notice)
    if resume:
        model_cfg, train_cfg, _ = resumed_configs(out, overrides, Seq2SeqConfig)
        src_tok, tgt_tok = load_translation_tokenizers(out)
    else:
        if tokenizer not in ("joint", "separate"):
            raise ValueError(f"--tokenizer must be joint or separate; got {tokenizer!r}")
        model_cfg, train_cfg = configs_for_run(preset, overrides, Seq2SeqConfig)
        size = vocab_size or DEFAULT_VOCAB
        if tokenizer == "joint":
            text = "\n".join(s for s, _ in train_pairs) + "\n" + "\n".join(t for _, t in train_pairs)
            src_tok = tgt_tok = BPETokenizer.train(text, vocab_size=size)
        else:
            src_tok = BPETokenizer.train("\n".join(s for s, _ in train_pairs), vocab_size=size)
            tgt_tok = BPETokenizer.train("\n".join(t for _, t in train_pairs), vocab_size=size)
        model_cfg = dataclasses.replace(
            model_cfg, src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size,
            shared_vocab=tokenizer == "joint", pad_id=tgt_tok.pad_id, bos_id=tgt_tok.bos_id, eos_id=tgt_tok.eos_id)
        if tokenizer == "separate" and world_from_env().main:  # under torchrun, process 0 writes the run's files
            out.mkdir(parents=True, exist_ok=True)
            src_tok.save(out / SOURCE_TOKENIZER_FILE)
    train = encode_pairs(train_pairs, src_tok, tgt_tok, model_cfg.block_size, notice)
    valid = encode_pairs(valid_pairs, src_tok, tgt_tok, model_cfg.block_size)
    task = TranslationTask(train, valid, valid_pairs, model_cfg, train_cfg, src_tok, tgt_tok)
    torch.manual_seed(train_cfg.seed)  # the initial weights depend on the seed alone
    return run_training(Seq2Seq(model_cfg), task, train_cfg, out, resume=resume, tokenizer=tgt_tok,
                        progress=progress)


def load_translator(model_dir, device: str = "auto") -> tuple[Seq2Seq, Tokenizer, Tokenizer]:
    """(model, source tokenizer, target tokenizer) of a translation checkpoint, the model on `device`."""
    model, _ = load(model_dir, pick_device(device))
    if not isinstance(model, Seq2Seq):
        raise ValueError(f"{model_dir} holds a language model, not a translation model; use `glassformer sample`")
    src_tok, tgt_tok = load_translation_tokenizers(model_dir)
    check_translation_tokenizers(model.config, src_tok, tgt_tok, Path(model_dir))
    return model, src_tok, tgt_tok


def check_translation_tokenizers(config, src_tok: Tokenizer, tgt_tok: Tokenizer, model_dir: Path) -> None:
    """Raises ValueError (one line) when a tokenizer lacks <pad>/<bos>/<eos> or has more ids than the model."""
    for side, tok, size_key in (("source", src_tok, "src_vocab_size"), ("target", tgt_tok, "tgt_vocab_size")):
        missing = [name for name in ("pad", "bos", "eos") if getattr(tok, f"{name}_id") is None]
        if missing:
            raise ValueError(f"{model_dir}: the {side} tokenizer ({type(tok).__name__}) has no "
                             f"{', '.join(f'<{m}>' for m in missing)} token; translation needs <pad>, <bos> and <eos> "
                             f"(glassformer train translation writes BPE tokenizers that have them)")
        if tok.vocab_size > getattr(config, size_key):
            raise ValueError(f"{model_dir}: the {side} tokenizer has {tok.vocab_size} tokens, more than the model's "
                             f"{size_key} {getattr(config, size_key)} in config.json")


def eval_translation(model_dir, src_path, ref_path, beam: int = 5, device: str = "auto") -> dict:
    """sacreBLEU (cased, detokenized) and chrF of the model's translations of `src_path` against `ref_path`."""
    model, src_tok, tgt_tok = load_translator(model_dir, device)
    sources, references = read_lines(src_path), read_lines(ref_path)
    if len(sources) != len(references):
        raise DataError(f"{src_path} has {len(sources)} lines but {ref_path} has {len(references)}")
    hyps = translate(model, src_tok, tgt_tok, sources, beam=beam, notice=notice)
    return {**bleu_chrf(hyps, references), "sentences": len(sources)}
