"""Generation from a language model, on token ids: the model maps ids to logits, this
module chooses the next token, feeds it back, and decides when to stop.

Shapes: B batch, T time, V vocabulary. The model sees at most its last `block_size`
tokens, as in nanoGPT: while the text fits, a KV cache means each step runs only the
newest token (through the model's fast single-token step where it has one); once it
outgrows the block the window slides, every position shifts, and the whole window is
recomputed each step.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import torch
import torch.nn as nn

REPLACEMENT_CHAR = "\ufffd"  # what a decoder prints for an incomplete UTF-8 character

# ---------------------------------------------------------------------------------------------
# Choosing the next token from logits (B, V)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raises ValueError for sampling settings outside their ranges."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy); got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit); got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for no limit); got {top_p}")


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps exactly the k largest logits of each row (ties go to the lower id); the rest become -inf."""
    k = min(k, logits.size(-1))
    top = logits.topk(k, dim=-1).indices  # (B, k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)  # (B, V)
    return logits.masked_fill(~keep, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keeps the smallest set of most likely tokens whose probability sums to >= p.

    The most likely token is always kept. The rest become -inf.
    """
    if p >= 1.0:
        return logits  # everything; also keeps rounding in the cumulative sum from trimming the tail
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V), most likely first
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one; 0 for the first
    drop_sorted = before >= p  # the set had already reached p without this token
    # Undo the sort: the flag at sorted place j belongs to vocabulary id order[j].
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) for the next position -> token ids (B,).

    temperature 0 or top_k 1 is greedy (argmax, no randomness used). Otherwise the logits
    are divided by the temperature, filtered by top-k and then top-p, and one id per row is
    drawn from the softmax with `generator` (the global RNG if None).
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B, 1) -> (B,)


# ---------------------------------------------------------------------------------------------
# The decoding loop


def stream(model: nn.Module, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           eos_id: int | None = None, use_cache: bool = True) -> Iterator[torch.Tensor]:
    """Yields the new token ids, a (B,) long tensor per step, up to `max_new_tokens` steps.

    ids: (B, T) tensor, or a 1-D tensor or list of ints (one row); at least one id. A prompt
    longer than block_size keeps its last block_size ids, with a warning.
    seed: sampling uses its own torch.Generator, so the same seed gives the same tokens and
    the global RNG is untouched; None seeds it randomly.
    eos_id: a row that produced eos is finished and keeps yielding eos_id (the batch keeps
    its shape); the stream ends early once every row is finished.
    use_cache=False recomputes the window every step; the tokens are the same either way.
    Arguments are checked (and the long-prompt warning given) when this is called, not
    at the first step. Each step runs in eval mode and inference mode, and the model's
    training flags are restored before the step's tokens are yielded.
    """
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    if eos_id is not None and not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id {eos_id} is outside the vocabulary (size {vocab_size})")
    device = next(model.parameters()).device
    prompt = crop_prompt(as_batch(ids, device), block_size)
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy from the OS, not from the global RNG
    else:
        generator.manual_seed(seed)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    return _decode_steps(model, prompt, max_new_tokens, sampling, generator, eos_id, use_cache)


def _decode_steps(model, context, steps, sampling, generator, eos_id, use_cache) -> Iterator[torch.Tensor]:
    """The generator behind `stream`; `context` (B, T) is the cropped prompt, T <= block_size.

    Three ways to the next logits, all computing the same numbers: the whole window through
    the model (no cache, or once the window slides); the prompt through the model into the
    cache; then one token per step, through the model's fast `decode_step` where it offers
    one (GPT: the same kernels without module calls; None while hooks observe the model, so
    a trace sees every step), else through the model. The fast step is chosen after the
    prompt: hooks added later in the generation do not see its remaining steps.
    """
    block_size = model.config.block_size
    cache = model.new_cache() if use_cache else None
    fast_step = None
    finished = torch.zeros(context.size(0), dtype=torch.bool, device=context.device)  # (B,)
    for _ in range(steps):
        if cache is not None and context.size(1) > block_size:
            cache = None  # the window starts to slide: positions shift, so cached keys no longer fit
        with torch.inference_mode():
            if cache is not None and fast_step is not None:
                logits = fast_step(context[:, -1:], cache)  # (B, V): the newest token only
            else:
                with evaluating(model):
                    if cache is not None:
                        # Only the ids the cache has not seen: the whole prompt, then (no fast step) one per step.
                        logits = last_logits(model, context[:, cache.length:], cache)  # (B, V)
                        fast_step = model.decode_step(len(context)) if hasattr(model, "decode_step") else None
                    else:
                        logits = last_logits(model, context[:, -block_size:])  # (B, V)
            token = next_token(logits, generator=generator, **sampling)  # (B,)
        token = token.clone()  # an ordinary tensor the caller may modify outside inference mode
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)  # finished rows only repeat eos
            finished |= token == eos_id
        yield token
        if eos_id is not None and bool(finished.all()):
            return
        context = torch.cat([context, token[:, None]], dim=1)  # (B, T) -> (B, T + 1)


def last_logits(model: nn.Module, ids: torch.Tensor, cache=None) -> torch.Tensor:
    """The logits (B, V) after the last of ids (B, T): `next_logits` where the model has it,
    which projects only the last position to the vocabulary, else the forward's last row."""
    if hasattr(model, "next_logits"):
        return model.next_logits(ids, cache)
    return model(ids, cache=cache)[:, -1] if cache is not None else model(ids)[:, -1]


def as_batch(ids: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """A list of ints or a 1-D tensor is one row; returns a non-empty (B, T) long tensor on `device`."""
    batch = torch.as_tensor(ids, dtype=torch.long, device=device)
    if batch.dim() == 1:
        batch = batch.unsqueeze(0)  # (T,) -> (1, T)
    if batch.dim() != 2:
        raise ValueError(f"ids must be a list of ints, a 1-D or a (batch, time) tensor; got shape {tuple(batch.shape)}")
    if batch.numel() == 0:
        raise ValueError("empty prompt: pass at least one id to start from (e.g. a <bos> or newline id)")
    return batch


def crop_prompt(ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """Keeps the last block_size ids of a (B, T) prompt, warning when some are dropped."""
    T = ids.size(1)
    if T <= block_size:
        return ids
    warnings.warn(f"the prompt has {T} tokens but the model sees at most block_size={block_size}: "
                  f"the first {T - block_size} tokens were dropped", stacklevel=3)
    return ids[:, -block_size:]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) for the duration, then every module's training flag as it was."""
    training = [module for module in model.modules() if module.training]  # usually none while generating
    for module in training:
        module.training = False
    try:
        yield
    finally:
        for module in training:
            module.training = True


# ---------------------------------------------------------------------------------------------
# Whole sequences, stop strings and streamed text


def generate(model: nn.Module, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos_id: int | None = None, stop: list[str] | None = None, tokenizer=None,
             use_cache: bool = True) -> list[list[int]]:
    """Per row: the prompt ids (uncropped) followed by the generated ids.

    The generated part is cut at the first eos_id (eos excluded) and, with `stop` strings,
    after the token at which its decoded text first contains one of them; the stop string
    stays in the ids, so trim the decoded text with `trim_at_stop`. Stops as soon as every
    row is finished. The other arguments are those of `stream`.
    """
    stop = _stop_list(stop)
    if stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer to decode the generated ids; pass tokenizer=")
    steps = stream(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   seed=seed, eos_id=eos_id, use_cache=use_cache)
    prompts = as_batch(ids).tolist()
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for token in steps:
        for row, id in enumerate(token.tolist()):
            if done[row]:
                continue
            if id == eos_id:
                done[row] = True  # eos itself is not part of the output
                continue
            new[row].append(id)
            if stop and _find_stop(tokenizer.decode(new[row]), stop) >= 0:
                done[row] = True  # keep the token that completed the stop string
        if all(done):
            break
    return [prompt + generated for prompt, generated in zip(prompts, new)]


def _stop_list(stop: list[str] | str | None) -> list[str]:
    """The stop strings as a list; a single string is one stop string."""
    if stop is None:
        return []
    stop = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError(f"stop strings must be non-empty strings; got {stop!r}")
    return stop


def _find_stop(text: str, stop: list[str]) -> int:
    """Index in `text` where the earliest stop string begins, or -1 if none occurs."""
    starts = [text.find(s) for s in stop if s in text]
    return min(starts) if starts else -1


def trim_at_stop(text: str, stop: list[str] | str | None) -> str:
    """Cuts `text` just before the earliest occurrence of any stop string."""
    start = _find_stop(text, _stop_list(stop))
    return text[:start] if start >= 0 else text


def partial_stop(text: str, stop: list[str] | str | None) -> int:
    """How many characters at the end of `text` could be the beginning of a stop string (0: none)."""
    longest = 0
    for s in _stop_list(stop):
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


class TextStream:
    """Turns ids arriving one at a time into printable text, for streaming to a terminal.

    Each push decodes all ids so far and returns only the new suffix. Byte-level BPE can
    split one character over several tokens; until its last byte arrives the decoded text
    ends in U+FFFD, so the output is held back. `flush` returns whatever is left.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.printed = 0  # characters of the decoded text already returned

    def push(self, id: int | torch.Tensor) -> str:
        self.ids.append(int(id))
        text = self.tokenizer.decode(self.ids)
        if text.endswith(REPLACEMENT_CHAR):
            return ""  # maybe half a character: wait for the rest of its bytes
        return self._take(text)

    def flush(self) -> str:
        return self._take(self.tokenizer.decode(self.ids))

    def _take(self, text: str) -> str:
        new = text[self.printed:]
        self.printed = len(text)
        return new
