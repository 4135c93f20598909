"""Decoding, on token ids: the model maps ids to logits; this module chooses the next token,
feeds it back, and decides when to stop. It is the one decoding core: language-model sampling
here, translation's greedy and beam search in glassformer.generation.decode, all on the same pieces:

  selection   `top_k` (ties to the lower index), `filter_top_k`, `filter_top_p`, `next_token`;
              `within_vocabulary` drops the ids a padded vocabulary has beyond its tokenizer's
  a Decoder   next-token logits for rows of sequences with a KV cache: `start`, `step`, `keep`
              (`LanguageModelDecoder` for a GPT; decode.Seq2SeqDecoder for a translation model)
  the loop    `decode_steps`: choose a token per row, feed it back, drop rows that finished

Shapes: B batch, A rows still decoding, T time, V vocabulary. A GPT sees at most its last
`block_size` tokens, as in nanoGPT: while the text fits, the KV cache means each step runs only
the newest token (through the model's fast one-token step where it has one); once it outgrows
the block the window slides, every position shifts, and the whole window is recomputed each step.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
import torch.nn as nn

from glassformer.fast import accelerate
from glassformer.observe.trace import observed

REPLACEMENT_CHAR = "\ufffd"  # what a decoder prints for an incomplete UTF-8 character

# ---------------------------------------------------------------------------------------------
# Choosing the next token from logits (B, V)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raises ValueError for sampling settings outside their ranges."""
    if not temperature >= 0:  # also refuses nan
        raise ValueError(f"temperature must be >= 0 (0 means greedy); got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit); got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None for no limit); got {top_p}")


def check_vocab_limit(vocab_limit: int | None, vocab_size: int) -> None:
    """Raises ValueError unless vocab_limit is None or an int from 1 to the model's vocab_size."""
    if vocab_limit is None:
        return
    if isinstance(vocab_limit, bool) or not isinstance(vocab_limit, int) or not 1 <= vocab_limit <= vocab_size:
        raise ValueError(f"vocab_limit must be an integer from 1 to the model's vocab_size {vocab_size} "
                         f"(or None for every id); got {vocab_limit!r}")


def within_vocabulary(logits: torch.Tensor, vocab_limit: int | None) -> torch.Tensor:
    """logits (..., V) -> (..., vocab_limit): only the ids below vocab_limit (all of them if None).

    A model's vocabulary may be padded beyond its tokenizer's (Qwen2.5 pads 151,665 tokens to
    151,936 rows; GPT-2 exports pad to a multiple of 64); the padded ids are no token, so they
    must never be chosen. Dropping their columns keeps every other id where it was, and a
    softmax afterwards is the model's distribution renormalised over the real ids.
    """
    if vocab_limit is None or vocab_limit >= logits.size(-1):
        return logits
    return logits[..., :vocab_limit]


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of scores (N, M): values and indices (N, k), best first.

    Equal values go to the lower index, as `argmax` does, so a beam of one picks what greedy
    picks. torch.topk leaves the order of equal values unspecified, so its picks are put in
    (value descending, index ascending) order afterwards, and a row where equal values
    straddle the k-th place (topk may have kept a higher index) is sorted stably instead.
    With fewer than k entries, or fewer finite ones, the remaining picks are -inf with
    arbitrary indices; callers drop -inf picks.
    """
    N, M = scores.shape
    values, indices = scores.topk(min(k + 1, M), dim=-1)  # (N, k + 1): one more, to see a tie at the k-th
    if M > k:
        straddles = (values[:, k - 1] == values[:, k]) & values[:, k - 1].isfinite()  # (N,)
        values, indices = values[:, :k], indices[:, :k]
        if bool(straddles.any()):
            rows = straddles.nonzero().squeeze(1)
            exact = scores[rows].sort(dim=-1, descending=True, stable=True)  # equal values keep index order
            values[rows], indices[rows] = exact.values[:, :k], exact.indices[:, :k]
    elif M < k:  # fewer entries than picks: the rest are -inf
        values = torch.cat([values, values.new_full((N, k - M), float("-inf"))], dim=-1)
        indices = torch.cat([indices, indices.new_zeros(N, k - M)], dim=-1)
    # Best first, equal values by index: sort by index, then stably by value.
    order = indices.argsort(dim=-1)
    values, indices = values.gather(-1, order), indices.gather(-1, order)
    order = values.argsort(dim=-1, descending=True, stable=True)
    return values.gather(-1, order), indices.gather(-1, order)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps exactly the k largest logits of each row (ties go to the lower id); the rest become -inf."""
    _, best = top_k(logits, min(k, logits.size(-1)))  # (B, k)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, best, True)  # (B, V)
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
               top_p: float | None = None, generator: torch.Generator | None = None,
               vocab_limit: int | None = None) -> torch.Tensor:
    """logits (B, V) for the next position -> token ids (B,).

    temperature 0 or top_k 1 is greedy (argmax, ties to the lower id, no randomness used).
    Otherwise the logits are divided by the temperature, filtered by top-k and then top-p,
    and one id per row is drawn from the softmax with `generator` (the global RNG if None).
    vocab_limit: only ids below it are ever chosen (`within_vocabulary`); None: any id.
    """
    check_sampling(temperature, top_k, top_p)
    logits = within_vocabulary(logits, vocab_limit)  # (B, V) -> (B, vocab_limit)
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
# Decoders: next-token logits for rows of sequences, with a cache


class Decoder(Protocol):
    """What a search needs from a model. Each method runs in eval and inference mode."""

    def start(self) -> torch.Tensor:
        """Runs what the sequences start from (a prompt, <bos>); returns the next logits (B, V)."""

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Appends one token per row (A,) to the sequences; returns the next logits (A, V)."""

    def keep(self, rows: torch.Tensor) -> None:
        """Keeps rows `rows` (A',) of the sequences, in that order: beam search's reordering
        (a row may be kept twice), or the rows still decoding."""


@contextlib.contextmanager
def running(training: list[nn.Module], fast: accelerate.Swap | None = None) -> Iterator[None]:
    """Inference mode, eval mode for `training` (a model's modules in training mode, see
    `training_modules`) and the `fast` modules swapped in, for the duration; then their training
    flags are set back and the readable modules swapped back."""
    for module in training:
        module.training = False
    try:
        with torch.inference_mode(), fast if fast is not None else contextlib.nullcontext():
            yield
    finally:
        for module in training:
            module.training = True


def training_modules(model: nn.Module) -> list[nn.Module]:
    """The model's modules in training mode (usually none while decoding), found once per decoding:
    walking the modules costs more than a small model's step."""
    return [module for module in model.modules() if module.training]


class SequenceDecoder:
    """What the decoders share: the rows' ids so far (B, T), their KV cache (or None: every step
    recomputes), one token per row and step; the subclass computes the next logits."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, use_cache: bool = True):
        self.model, self.ids = model, ids
        self.cache = model.new_cache() if use_cache else None
        self.training = training_modules(model)  # switched to eval mode while the model runs
        self.fast = accelerate.for_generation(model)  # its faster modules, swapped in while it runs unobserved

    def running(self):
        """The context the model runs in: eval and inference mode, and the fast path unless the
        model is observed (glassformer.observe.trace.observe), so that hooks see every step."""
        return running(self.training, None if observed(self.model) else self.fast)

    def start(self) -> torch.Tensor:
        return self.logits()

    def step(self, token: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, token[:, None]], dim=1)  # (A, T) -> (A, T + 1)
        return self.logits()

    def keep(self, rows: torch.Tensor) -> None:
        with running(self.training):  # no model call: no fast modules needed
            self.ids = self.ids[rows]
            if self.cache is not None:
                self.cache.keep(rows)

    def logits(self) -> torch.Tensor:
        """The next logits (A, V) after self.ids."""
        raise NotImplementedError


class LanguageModelDecoder(SequenceDecoder):
    """A GPT continuing prompts (B, T), T <= block_size.

    With the cache: the prompt once, then one token per step through the fast path's one-token
    step (accelerate.decode_step; not while the model is observed, so a trace sees every step
    through the modules), until the text outgrows the block; from then on, and without the
    cache, the last block_size tokens are recomputed at every step.
    """

    def __init__(self, model: nn.Module, prompt: torch.Tensor, use_cache: bool = True):
        super().__init__(model, prompt, use_cache)
        self.fast_step = None

    def keep(self, rows: torch.Tensor) -> None:
        super().keep(rows)
        if self.fast_step is not None and self.fast_step.rows != rows.numel():
            self.fast_step = None  # built for another number of rows: the next step builds a new one

    def logits(self) -> torch.Tensor:
        block_size = self.model.config.block_size
        if self.cache is not None and self.ids.size(1) > block_size:
            self.cache = None  # the window starts to slide: positions shift, so cached keys no longer fit
        with self.running():
            if self.cache is None:
                return self.model.next_logits(self.ids[:, -block_size:])  # (A, V)
            new = self.ids[:, self.cache.length:]  # the ids the cache has not seen: the prompt, then one
            if self.cache.length > 0 and not observed(self.model):
                if self.fast_step is None:
                    self.fast_step = accelerate.decode_step(self.model, len(self.ids))
                if self.fast_step is not None:
                    return self.fast_step(new, self.cache)
            return self.model.next_logits(new, self.cache)


# ---------------------------------------------------------------------------------------------
# The decoding loop


def decode_steps(decoder: Decoder, steps: int, choose: Callable[[torch.Tensor], torch.Tensor],
                 eos_id: int | Sequence[int] | None = None, limits: torch.Tensor | None = None,
                 drop_finished: bool = True) -> Iterator[torch.Tensor]:
    """Yields the chosen token of every row, (B,) per step, for up to `steps` steps.

    choose: logits (A, V) of the rows in the decoder's batch -> their tokens (A,).
    A row finishes when it chooses eos_id or has produced limits[row] tokens (eos included);
    from then on it yields eos_id, and the loop ends when every row has finished. A finished
    row leaves the decoder's batch; with drop_finished=False it stays and is fed eos_id, so
    that `choose` sees every row at every step (sampling then draws the same random numbers
    for a row whichever other rows finish). Without eos_id and limits no row finishes.
    eos_id may list several ids that end a row (Llama 3 has three); a finished row then repeats the first.
    """
    logits = decoder.start()  # (B, V)
    B, device = logits.size(0), logits.device
    rows = torch.arange(B, device=device)  # (A,) the rows in the decoder's batch, by their place in the batch
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    ends = None if eos_id is None else torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id),
                                                     device=device)
    eos_id = None if ends is None else int(ends[0])  # what a finished row repeats
    can_finish = eos_id is not None or limits is not None
    for step in range(1, steps + 1):
        token = choose(logits)  # (A,)
        if can_finish:
            if not drop_finished:
                token = token.masked_fill(finished, eos_id)  # finished rows stay and repeat eos
            out = torch.full((B,), eos_id, dtype=token.dtype, device=device).index_copy_(0, rows, token)
            ended = torch.isin(token, ends) if ends is not None else torch.zeros_like(token, dtype=torch.bool)
            if limits is not None:
                ended |= step >= limits[rows]
            finished[rows] |= ended
        yield out if can_finish else token
        if step == steps or (can_finish and bool(finished.all())):
            return
        if can_finish and drop_finished and bool(ended.any()):
            going = (~ended).nonzero().squeeze(1)  # (A',)
            rows, token = rows[going], token[going]
            decoder.keep(going)
        logits = decoder.step(token)  # (A, V)


def stream(model: nn.Module, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
           eos_id: int | Sequence[int] | None = None, use_cache: bool = True,
           vocab_limit: int | None = None) -> Iterator[torch.Tensor]:
    """Yields the new token ids, a (B,) long tensor per step, up to `max_new_tokens` steps.

    ids: (B, T) tensor, or a 1-D tensor or list of ints (one row); at least one id. A prompt
    longer than block_size keeps its last block_size ids, with a warning.
    seed: sampling uses its own torch.Generator, so the same seed gives the same tokens and
    the global RNG is untouched; None seeds it randomly.
    eos_id: a row that produced eos is finished and keeps yielding eos_id (the batch keeps
    its shape); the stream ends early once every row is finished.
    use_cache=False recomputes the window every step; the tokens are the same either way.
    vocab_limit: the tokenizer's vocab_size where the model's is padded beyond it: no id at or
    above it is ever produced (None: any id of the model).
    Arguments are checked (and the long-prompt warning given) when this is called, not
    at the first step. Each step runs in eval mode and inference mode, and the model's
    training flags are restored before the step's tokens are yielded.
    """
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0; got {max_new_tokens}")
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    check_vocab_limit(vocab_limit, vocab_size)
    for end in [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else eos_id:
        if not 0 <= end < vocab_size:
            raise ValueError(f"eos_id {end} is outside the vocabulary (size {vocab_size})")
    device = next(model.parameters()).device
    prompt = crop_prompt(as_batch(ids, device), block_size)
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy from the OS, not from the global RNG
    else:
        generator.manual_seed(seed)

    def choose(logits: torch.Tensor) -> torch.Tensor:
        return next_token(logits, temperature, top_k, top_p, generator, vocab_limit)

    decoder = LanguageModelDecoder(model, prompt, use_cache)
    return decode_steps(decoder, max_new_tokens, choose, eos_id, drop_finished=False)


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


# ---------------------------------------------------------------------------------------------
# Whole sequences, stop strings and streamed text


def generate(model: nn.Module, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             eos_id: int | Sequence[int] | None = None, stop: list[str] | None = None, tokenizer=None,
             use_cache: bool = True, vocab_limit: int | None = None) -> list[list[int]]:
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
                   seed=seed, eos_id=eos_id, use_cache=use_cache, vocab_limit=vocab_limit)
    prompts = as_batch(ids).tolist()
    ends = set() if eos_id is None else {eos_id} if isinstance(eos_id, int) else set(eos_id)
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for token in steps:
        for row, id in enumerate(token.tolist()):
            if done[row]:
                continue
            if id in ends:
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
