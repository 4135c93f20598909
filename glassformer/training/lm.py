"""Language modelling end to end: text file -> tokenizer -> ids -> trained GPT, its evaluation and sampling.

`LMTask` is the language-model training task (glassformer.training.task.Task): random windows of the
training ids to train on, fixed windows of the validation ids to measure. Its loss and its
evaluation loop are glassformer.data.batches's `lm_loss` and `lm_eval_loss`, which `evaluate_lm`
also uses over every token of a split.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glassformer.base.choices import DEFAULT_PRESET
from glassformer.base.device import pick_device
from glassformer.checkpoint import CONFIG_FILE, FORMAT, load, read_json
from glassformer.data.batches import (
    DataError,
    cached_ids,
    check_length,
    lm_eval_loss,
    lm_loss,
    random_windows,
    read_text,
    sequential_windows,
    split_text,
    to_device,
)
from glassformer.data.shards import META, TOKENIZER, Shards, check_same_tokenizer, is_prepared, read_record
from glassformer.data.tokenizers import load_tokenizer, train_tokenizer
from glassformer.model.config import BIGRAM_MAX_VOCAB, GPTConfig, override_key
from glassformer.model.gpt import GPT
from glassformer.training.rundir import run_directory
from glassformer.training.runs import configs_for_run, resumed_configs, saved_train_config
from glassformer.training.task import Batch
from glassformer.training.trainer import TrainConfig, run_training

BUNDLED = "bundled"  # what the run records as its data when no --data was given


class LMTask:
    """Next-token prediction on token-id arrays: random windows to train, fixed windows to validate.

    Args:
        train_ids, val_ids: the two splits' token ids.
        block_size: the window length (the model's block size).
        cfg: batch_size (windows per batch), eval_iters (batches per evaluation), seed.
    """

    def __init__(self, train_ids: np.ndarray, val_ids: np.ndarray, block_size: int, cfg: TrainConfig):
        check_length(train_ids, block_size, "training")
        check_length(val_ids, block_size, "validation")
        self.train_ids, self.val_ids = train_ids, val_ids
        self.block_size, self.cfg = block_size, cfg

    def train_batch(self, generator: torch.Generator, device: torch.device) -> Batch:
        """batch_size random training windows: x (B, T) and y (B, T), on `device`."""
        x, y = random_windows(self.train_ids, self.block_size, self.cfg.batch_size, generator)
        return to_device(x, device), to_device(y, device)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of the model's next-token predictions."""
        x, y = batch
        return lm_loss(model(x), y)

    def tokens(self, batch: Batch) -> int:
        """Every position of a window is a target."""
        return batch[0].numel()

    def evaluate(self, model: nn.Module, device: torch.device) -> dict:
        """Mean loss over `eval_iters` validation batches, the same batches at every evaluation."""
        generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        windows = (random_windows(self.val_ids, self.block_size, self.cfg.batch_size, generator)
                   for _ in range(self.cfg.eval_iters))
        loss, _ = lm_eval_loss(model, windows, device)
        return {"val_loss": loss}

    @staticmethod
    def score(metrics: dict) -> float:
        """Lower is better; the run keeps the model with the lowest validation loss."""
        return metrics["val_loss"]

    def state_dict(self) -> dict:
        """Nothing: the trainer's generator alone decides the next batch."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (see state_dict)."""


def evaluate_lm(model: GPT, ids: np.ndarray, batch_size: int = 32, device="cpu") -> dict:
    """Loss over every token of `ids`, in non-overlapping windows of the model's block size.

    Args:
        model: the language model (put in eval mode here).
        ids: the token ids to predict.
        batch_size: windows per forward pass.
        device: where the model is.

    Returns:
        {"val_loss": mean cross-entropy per token, "perplexity": exp of it, "tokens": how many were predicted}.
    """
    model.eval()
    loss, count = lm_eval_loss(model, sequential_windows(ids, model.config.block_size, batch_size), device)
    return {"val_loss": loss, "perplexity": math.exp(loss), "tokens": count}


def load_corpus(data: str | None) -> str:
    """The text of `data`, or the corpus the package generates itself when `data` is None."""
    if data is None or data == BUNDLED:
        from glassformer.data.corpus import bundled_corpus

        return bundled_corpus()
    return read_text(data)


def train_lm(out, data: str | None = None, tokenizer: str = "char", vocab_size: int | None = None,
             preset: str = DEFAULT_PRESET, overrides: list[str] = (), val_fraction: float | None = None,
             resume: bool = False, progress: bool | None = None, overwrite: bool = False,
             init_from: str | None = None) -> dict:
    """Trains a GPT on a text file (or the bundled corpus) into run directory `out`; returns final metrics.

    A directory that holds files is refused unless `resume` (continue its run) or `overwrite`
    (replace it); the run holds the directory's lock while it writes (glassformer.training.rundir).
    init_from: fine-tune a checkpoint (glassformer's, or a Hugging Face GPT-2, Llama, Mistral,
    Qwen2 or Qwen3 directory) with its own tokenizer, in float32; the preset gives the training
    settings and the window (its block_size, at most the model's).
    """
    with run_directory(out, resume=resume, overwrite=overwrite) as out:
        return _train_lm(out, data, tokenizer, vocab_size, preset, overrides, val_fraction, resume, progress,
                         init_from)


# A preset's pair table (bigram) is kept up to this vocabulary: its V (V + 1) rows are updated
# densely every step. Measured on the speedrun preset's one-layer step (2-core Ice Lake, fp32): the
# table made a step 1.06x slower at V = 65 (tiny-shakespeare's characters), 1.17x at 128, 1.81x at 256.
PRESET_BIGRAM_MAX_VOCAB = 128


def with_vocabulary(model_cfg: GPTConfig, vocab_size: int, overrides) -> GPTConfig:
    """The preset's model for the tokenizer's vocabulary. A preset's bigram table (a row per pair of
    tokens) is left out, saying so in one warning, where the vocabulary is over
    PRESET_BIGRAM_MAX_VOCAB; one asked for with --set bigram=true is kept (and refused by the config,
    in one line, over BIGRAM_MAX_VOCAB)."""
    asked = any(override_key(o) == "bigram" for o in overrides or [])
    if model_cfg.bigram and vocab_size > PRESET_BIGRAM_MAX_VOCAB and not asked:
        warnings.warn(f"bigram=false: the preset's pair embedding is for vocabularies of at most "
                      f"{PRESET_BIGRAM_MAX_VOCAB} tokens (its table has a row per pair of tokens); this one has "
                      f"{vocab_size} (--set bigram=true keeps it, up to {BIGRAM_MAX_VOCAB})", stacklevel=2)
        model_cfg = dataclasses.replace(model_cfg, bigram=False)
    return dataclasses.replace(model_cfg, vocab_size=vocab_size)


def _train_lm(out: Path, data, tokenizer, vocab_size, preset, overrides, val_fraction, resume, progress,
              init_from=None) -> dict:
    model = None
    if resume:
        model_cfg, train_cfg, meta = resumed_configs(out, overrides, GPTConfig)
        tok = load_tokenizer(out / "tokenizer.json")
        data = data or meta.get("data")
        window = meta.get("window", model_cfg.block_size)
    else:
        model_cfg, train_cfg = configs_for_run(preset, overrides, GPTConfig)
        window = model_cfg.block_size
        if val_fraction is not None:
            train_cfg = dataclasses.replace(train_cfg, val_fraction=val_fraction)
        if init_from is not None:
            model, tok = load(init_from, dtype="float32")
            if not isinstance(model, GPT) or tok is None:
                raise ValueError(f"--init-from {init_from}: a GPT with its tokenizer is needed")
            model_cfg, window = model.config, min(window, model.config.block_size)
    if data not in (None, BUNDLED) and is_prepared(data):  # `glassformer data prepare`'s shards, any size
        prepared = read_record(data)  # checked as a whole; an unfinished one is refused, saying how to finish it
        if resume:  # the run's ids must mean what the shards' ids mean
            check_same_tokenizer(tok, str(out / "tokenizer.json"), data, prepared)
        elif model is not None:
            check_same_tokenizer(tok, f"--init-from {init_from}", data, prepared)
        else:
            for option, value in (("--vocab-size", vocab_size), ("--val-fraction", val_fraction)):
                if value is not None:
                    raise DataError(f"{option}: {data} was prepared with its own tokenizer and splits; leave "
                                    f"{option} out (or give it to data prepare)")
            tok = load_tokenizer(Path(data) / TOKENIZER)  # the vocabulary the shards were made with; the run keeps it
            model_cfg = with_vocabulary(model_cfg, tok.vocab_size, overrides)
        train_ids, val_ids = Shards(data, "train", prepared), Shards(data, "val", prepared)
    else:
        if data not in (None, BUNDLED) and Path(data).is_dir():
            raise DataError(f"--data {data} is a directory without {META}: give a text file, or a "
                            f"directory that glassformer data prepare wrote")
        text = load_corpus(data)
        train_text, val_text = split_text(text, train_cfg.val_fraction)
        if not resume and model is None:
            # A character vocabulary comes from the whole text (nanoGPT's ids); learned vocabularies
            # (word counts, BPE merges) only from the training split.
            tok = train_tokenizer(tokenizer, text if tokenizer == "char" else train_text, vocab_size)
            model_cfg = with_vocabulary(model_cfg, tok.vocab_size, overrides)
        train_ids = cached_ids(train_text, tok, out / "data" / "train.bin")
        val_ids = cached_ids(val_text, tok, out / "data" / "val.bin")
    task = LMTask(train_ids, val_ids, window, train_cfg)
    record = {"data": str(Path(data).resolve()) if data not in (None, BUNDLED) else BUNDLED, "window": window}
    if init_from is not None:
        record["init_from"] = str(Path(init_from).resolve())
    torch.manual_seed(train_cfg.seed)  # the initial weights depend on the seed alone
    return run_training(model if model is not None else GPT(model_cfg), task, train_cfg, out, resume=resume,
                        tokenizer=tok, extra_config=record, progress=progress)


def eval_lm(model_dir, data: str, val_fraction: float | None = None, batch_size: int = 32,
            device: str = "auto", dtype: str | None = None) -> dict:
    """Loss and perplexity over every token of the validation split the run used; for a model
    trained elsewhere (a Hugging Face directory), over the whole file unless val_fraction is given.
    A directory `data prepare` wrote is evaluated on its validation split, with the model's
    tokenizer, which must be the one its shards were made with."""
    model, tok = load(model_dir, dtype=dtype)
    if tok is None:
        raise ValueError(f"{model_dir} has no tokenizer; it cannot read text")
    if not isinstance(model, GPT):
        raise ValueError(f"{model_dir} holds a translation model; use `glassformer eval translation`")
    dev = pick_device(device)
    if is_prepared(data):  # the validation split `data prepare` made, read as train lm reads it
        if val_fraction is not None:
            raise DataError(f"--val-fraction: {data} was prepared with its own validation split; leave it out")
        prepared = read_record(data)
        check_same_tokenizer(tok, f"{model_dir}'s tokenizer", data, prepared)
        ids = Shards(data, "val", prepared)
        if len(ids) < 2:
            raise DataError(f"the validation split of {data} has {len(ids)} tokens; nothing to evaluate")
        return evaluate_lm(model.to(dev), ids, batch_size, dev)
    meta = read_json(Path(model_dir) / CONFIG_FILE)
    if meta.get("format") == FORMAT:  # a glassformer run: its own validation split
        train_cfg = saved_train_config(meta, Path(model_dir) / CONFIG_FILE)  # one line for a malformed "train"
        fraction = val_fraction if val_fraction is not None else train_cfg.val_fraction
        _, val_text = split_text(read_text(data), fraction)
    else:
        text = read_text(data)
        val_text = split_text(text, val_fraction)[1] if val_fraction is not None else text
    ids = tok.encode(val_text)
    if len(ids) < 2:
        raise DataError(f"the validation split of {data} has {len(ids)} tokens; nothing to evaluate")
    return evaluate_lm(model.to(dev), np.asarray(ids, dtype=np.int64), batch_size, dev)


def encode_prompt(tok, prompt: str | None) -> tuple[list[int], list[str]]:
    """Prompt ids (a newline, or <bos>, when no prompt is given) and the characters the tokenizer has never seen."""
    if prompt is None or prompt == "":
        ids = tok.encode("\n")
        if not ids or ids == [tok.unk_id]:
            ids = [tok.bos_id if tok.bos_id is not None else 0]
        return ids, []
    ids = tok.encode(prompt)
    unseen = []
    if tok.unk_id is not None and tok.unk_id in ids:
        unseen = sorted({ch for ch in prompt if tok.encode(ch) == [tok.unk_id]})
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return ids, unseen


def chat_ids(tok, prompt: str, system: str | None = None) -> list[int]:
    """The prompt as the user's turn of a conversation (after `system`'s), rendered by the model's
    own chat template, ending where the assistant's answer starts."""
    from glassformer.hf.families import render_chat

    template = getattr(tok, "chat_template", None)
    if not template:
        raise ValueError("this model's tokenizer has no chat template (tokenizer_config.json's chat_template); "
                         "sample without --chat")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    special = {name: tok.token(i) if i is not None else "" for name, i in (("bos_token", tok.bos_id),
                                                                           ("eos_token", tok.eos_id))}
    return tok.encode(render_chat(template, messages, **special))


def end_ids(tok) -> list[int] | None:
    """Every id that ends a generation: a pretrained model's list (generation_config.json), or eos."""
    ids = list(getattr(tok, "eos_ids", []) or ([tok.eos_id] if tok.eos_id is not None else []))
    return ids or None


def sample(model_dir, prompt: str | None = None, max_new_tokens: int = 500, temperature: float = 0.8,
           top_k: int | None = 200, top_p: float | None = None, seed: int | None = 1337, num_samples: int = 1,
           stop: list[str] = (), device: str = "auto", write=None, notice=None, chat: bool = False,
           system: str | None = None, dtype: str | None = None, weights: str = "float") -> list[str]:
    """Generates `num_samples` continuations of `prompt`, streaming each one's text through `write`.

    chat: the prompt is the user's turn, rendered with the model's chat template (after
    `system`'s turn), and only the answer is written. dtype: the weights' ("auto", "float32",
    "bfloat16", "float16"; see glassformer.load). weights: "int8" stores the model's matrices as
    int8 with one scale per output channel, "bf16" in bfloat16 with the arithmetic in the model's
    dtype (glassformer.fast.quant), "float" as loaded. Generation stops at any of the model's end ids,
    and never produces an id the tokenizer lacks (a model's vocabulary may be padded beyond it).
    """
    from glassformer.fast.quant import check_weights, quantize
    from glassformer.generation.sampling import TextStream, partial_stop, stream, trim_at_stop

    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1; got {num_samples}")
    if system is not None and not chat:
        raise ValueError("--system is the conversation's first turn; it needs --chat")
    check_weights(weights)
    model, tok = load(model_dir, pick_device(device), dtype=dtype)
    if tok is None:
        raise ValueError(f"{model_dir} has no tokenizer; it cannot read or write text")
    if not isinstance(model, GPT):
        raise ValueError(f"{model_dir} holds a translation model; use `glassformer translate`")
    quantize(model, weights)
    if chat:
        ids, unseen = chat_ids(tok, prompt or "", system), []
    else:
        ids, unseen = encode_prompt(tok, prompt)
        if getattr(tok, "kind", "") == "pretrained" and tok.bos_id is not None and ids[:1] != [tok.bos_id]:
            ids = [tok.bos_id] + ids  # a Llama reads <s> first; its tokenizer.json's encode adds none here
    ends = end_ids(tok)
    if unseen and notice:
        notice(f"never seen in training, read as <unk>: {' '.join(repr(c) for c in unseen)}")
    if len(ids) > model.config.block_size and notice:
        notice(f"the prompt has {len(ids)} tokens; the model sees only the last {model.config.block_size}")
    texts = []
    for i in range(num_samples):
        if write:  # each sample starts with its prompt (a chat: the answer alone); a rule between samples
            write(("\n" + "-" * 40 + "\n" if i else "") + ("" if chat else prompt or ""))
        streamer, text, written = TextStream(tok), "", 0
        with warnings.catch_warnings():  # the long-prompt notice above already said it
            warnings.simplefilter("ignore")
            # vocab_limit: a model padded beyond its tokenizer (Qwen2.5, GPT-2 exports) never emits an id
            # the tokenizer lacks.
            steps = stream(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=None if seed is None else seed + i, eos_id=ends, vocab_limit=tok.vocab_size)
        for token in steps:
            if ends is not None and token.item() in ends:
                break
            text += streamer.push(token.item())
            trimmed = trim_at_stop(text, stop) if stop else text
            stopped, text = trimmed != text, trimmed
            # Text that could be the start of a stop string waits until the next token says
            # whether it is; the rest is written now.
            ready = len(text) if stopped else len(text) - partial_stop(text, stop)
            if write and ready > written:
                write(text[written:ready])
            written = max(written, ready)
            if stopped:
                break
        else:
            text += streamer.flush()
            text = trim_at_stop(text, stop) if stop else text
        if write and len(text) > written:
            write(text[written:])
        texts.append(text)
    return texts
