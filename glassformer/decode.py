"""Translation decoding for Seq2Seq, on token ids: greedy search and beam search.

Every target starts from <bos>; a hypothesis ends when it produces <eos>, which is left
out of the returned ids. <pad> and <bos> are never produced (their log-probabilities are
set to -inf after the softmax, so the scores of the other tokens are the model's own).
Row b may produce at most max_len[b] tokens, <eos> included:

    max_len[b] = min(block_size - 1, int(max_len_a * src_len[b] + max_len_b))

where src_len[b] is the row's unpadded source length. A row that reaches max_len[b]
without <eos> ends there.

Shapes: B batch, A rows still decoding (a row that ends leaves the batch), K beam, W
hypotheses per sentence (1 at beam search's first step, then K), S source length, T target
length, V target vocabulary, C width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from .generate import evaluating
from .layers import KVCacheLayer

# ---------------------------------------------------------------------------------------------
# Small pure pieces


def max_lengths(src_lengths: list[int], block_size: int, a: float, b: float) -> list[int]:
    """The most tokens each row may produce (eos included): a * src_len + b, within the block."""
    return [max(0, min(block_size - 1, int(a * n + b))) for n in src_lengths]


def source_lengths(src: torch.Tensor, src_mask: torch.Tensor | None) -> list[int]:
    """Unpadded length of each row of src (B, S)."""
    if src_mask is None:
        return [src.size(1)] * src.size(0)
    if src_mask.shape != src.shape:
        raise ValueError(f"src_mask must have the shape of src {tuple(src.shape)}; got {tuple(src_mask.shape)}")
    return src_mask.sum(dim=1).tolist()


def next_log_probs(logits: torch.Tensor, banned: list[int]) -> torch.Tensor:
    """logits (N, V) -> log-probabilities (N, V) in float32, with `banned` ids at -inf."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    logprobs[:, banned] = float("-inf")  # after the softmax: the other tokens keep their model scores
    return logprobs


def banned_ids(config) -> list[int]:
    """Ids a translation never contains: <pad>, and <bos> unless it doubles as <eos>."""
    return sorted({config.pad_id, config.bos_id} - {config.eos_id})


def gnmt_penalty(length: int, alpha: float) -> float:
    """The length normaliser of Wu et al. (2016, GNMT): ((5 + length) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha


def top_k_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of scores (N, M): values and indices (N, k), best first.

    Ties go to the lower index, as `argmax` does, so one beam picks what greedy picks.
    torch.topk leaves the order of equal values unspecified, so its picks are put in
    (value descending, index ascending) order afterwards, and a row where equal values
    straddle the k-th place (topk may have kept the higher index) is sorted stably instead:
    rare with a trained model, common with a degenerate one. Once a row runs out of finite
    entries its remaining picks are -inf with arbitrary indices; callers drop -inf picks.
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
    # Best first, and equal values by index: sort by index, then stably by value.
    order = indices.argsort(dim=-1)
    values, indices = values.gather(-1, order), indices.gather(-1, order)
    order = values.argsort(dim=-1, descending=True, stable=True)
    return values.gather(-1, order), indices.gather(-1, order)


def best_candidates(scores: torch.Tensor, logprobs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best one-token extensions per sentence: what top_k_first(candidates, k) gives for
    candidates = scores[:, :, None] + logprobs (A, W, V) flattened to (A, W*V), in float64.

    scores (A, W) are the sums of the hypotheses, logprobs (A, W, V) their next tokens'. The
    same score is added to all of a hypothesis's tokens, so a sentence's k best are among
    each hypothesis's k best tokens: only those W*k sums are formed and ranked, not all W*V.
    Rounding can make the sums of two different log-probs equal; where that happens at a
    hypothesis's k-th place the shortcut could pick another token than the definition, so
    all W*V are ranked instead.
    """
    A, W, V = logprobs.shape
    top, token = top_k_first(logprobs.reshape(A * W, V), k + 1)  # (A*W, k + 1): one more, to check the k-th
    sums = scores[:, :, None] + top.view(A, W, k + 1)  # (A, W, k + 1) float64
    if bool(((sums[..., k - 1] == sums[..., k]) & sums[..., k].isfinite()).any()):
        return top_k_first((scores[:, :, None] + logprobs).view(A, W * V), k)
    flat = torch.arange(W, device=token.device)[:, None] * V + token.view(A, W, k + 1)  # (A, W, k + 1) in W*V
    values, flat = sums[..., :k].reshape(A, W * k), flat[..., :k].reshape(A, W * k)
    # Best first, and equal values by their index in W*V: sort by index, then stably by value.
    order = flat.argsort(dim=-1)
    values, flat = values.gather(-1, order), flat.gather(-1, order)
    order = values.argsort(dim=-1, descending=True, stable=True)[:, :k]
    return values.gather(-1, order), flat.gather(-1, order)


def cut_at_eos(ids: list[int], eos_id: int) -> list[int]:
    """The ids before the first eos (all of them if there is none)."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


# ---------------------------------------------------------------------------------------------
# Moving rows of the KV cache (a row is a sentence in greedy search, a hypothesis in beam search)


def keep_rows(layers: list[KVCacheLayer], rows: torch.Tensor) -> None:
    """Row i of each cache layer becomes old row rows[i]; the number of rows may change.

    This is KVCacheLayer.reorder made cheap: that copies whole buffers, block_size positions
    each, into new memory; a translation fills a few positions, and only those are copied
    here, back into the buffers the layers hold unless there are more rows than before.
    """
    for layer in layers:
        if layer.k is not None:
            layer.k, layer.v = (filled_rows(buffer, layer.length, rows) for buffer in (layer.k, layer.v))


def filled_rows(buffer: torch.Tensor, length: int, rows: torch.Tensor) -> torch.Tensor:
    """buffer (N, h, P, d) -> (len(rows), h, P, d): the old rows `rows` at positions below `length`
    (the rest is left as it was), in buffer's own memory when len(rows) <= N."""
    filled = buffer[:, :, :length].index_select(0, rows)  # (N', h, length, d)
    if rows.numel() > buffer.size(0):
        buffer = buffer.new_empty(rows.numel(), *buffer.shape[1:])
    buffer = buffer[: rows.numel()]  # (N', h, P, d), contiguous
    buffer[:, :, :length] = filled
    return buffer


def gathered_rows(buffer: torch.Tensor, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """source's rows `rows`, (len(rows), ...), written into buffer's memory when it is big enough
    and shaped alike (source must not share buffer's memory)."""
    if rows.numel() > buffer.size(0) or buffer.shape[1:] != source.shape[1:]:
        buffer = source.new_empty(rows.numel(), *source.shape[1:])
    return torch.index_select(source, 0, rows, out=buffer[: rows.numel()])


# ---------------------------------------------------------------------------------------------
# Greedy search


def greedy(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *,
           max_len_a: float = 1.5, max_len_b: float = 10, use_cache: bool = True) -> list[list[int]]:
    """The most likely next token at every step, for every row at once; the target ids per row.

    A row that ends leaves the batch, so the decoder works only on the rows still going.
    use_cache=False runs the whole target prefix through the decoder at every step (the
    reference the cached path is tested against); the result is the same.
    """
    c = model.config
    limits = max_lengths(source_lengths(src, src_mask), c.block_size, max_len_a, max_len_b)
    banned = banned_ids(c)
    device = src.device
    out = torch.full((src.size(0), max(limits, default=0)), c.pad_id, dtype=torch.long, device=device)  # (B, L)
    with evaluating(model), torch.inference_mode():
        memory = model.encode(src, src_mask)  # (B, S, C)
        cache = model.new_cache() if use_cache else None
        # The A rows still decoding: their place in the batch and their share of everything.
        rows = torch.tensor([b for b, n in enumerate(limits) if n > 0], dtype=torch.long, device=device)  # (A,)
        limit = torch.tensor(limits, device=device)[rows]  # (A,)
        memory = memory[rows]  # (A, S, C)
        mask = src_mask[rows] if src_mask is not None else None  # (A, S)
        tgt = torch.full((rows.numel(), 1), c.bos_id, dtype=torch.long, device=device)  # (A, 1)
        for step in range(1, max(limits, default=0) + 1):
            # With a cache the decoder needs only the newest token; without, the whole prefix.
            new = tgt[:, -1:] if cache is not None else tgt
            logits = model.decode(new, memory, mask, cache=cache)[:, -1]  # (A, V)
            token = next_log_probs(logits, banned).argmax(dim=-1)  # (A,)
            out[rows, step - 1] = token
            tgt = torch.cat([tgt, token[:, None]], dim=1)  # (A, step) -> (A, step + 1)
            ended = (token == c.eos_id) | (step >= limit)  # (A,)
            if bool(ended.any()):
                going = (~ended).nonzero().squeeze(1)  # (A',) the rows that go on
                if going.numel() == 0:
                    break
                rows, limit, tgt, memory = rows[going], limit[going], tgt[going], memory[going]
                mask = mask[going] if mask is not None else None
                if cache is not None:
                    keep_rows(cache.self_attn + cache.cross_attn, going)
    return [cut_at_eos(ids[:n], c.eos_id) for ids, n in zip(out.tolist(), limits)]


# ---------------------------------------------------------------------------------------------
# Beam search


@dataclass
class Sentences:
    """Beam search's bookkeeping for the A sentences still searched, one row each."""

    index: torch.Tensor  # (A,) the sentence's row in the batch
    first_row: torch.Tensor  # (A,) its row at the first step, the one its memory was computed in
    limit: torch.Tensor  # (A,) its max_len
    scores: torch.Tensor  # (A, W) float64 sums of log-probs of its live hypotheses, -inf for an empty place
    n_finished: torch.Tensor  # (A,) how many hypotheses finished (each keeps a place)
    best_score: torch.Tensor  # (A,) float64 the best normalised score of a finished one, -inf for none
    best_ids: torch.Tensor  # (A, L) that hypothesis's ids, the first best_len of them
    best_len: torch.Tensor  # (A,)

    def select(self, rows: torch.Tensor) -> Sentences:
        return Sentences(*(getattr(self, f.name)[rows] for f in fields(self)))

    def add_finished(self, ended: torch.Tensor, normalised: torch.Tensor, ids: torch.Tensor) -> None:
        """Counts the hypotheses that ended (A, K) and keeps the best of them if it beats the best so far.

        normalised (A, K): their GNMT-normalised scores; ids (A, K, n): their ids without bos and eos.
        Equal scores: the one found first (the earlier step, then the lower place).
        """
        self.n_finished += ended.sum(dim=1)
        step_best, k_best = normalised.masked_fill(~ended, float("-inf")).max(dim=1)  # (A,), the first of equals
        better = step_best > self.best_score  # (A,)
        self.best_score = torch.where(better, step_best, self.best_score)
        n = ids.size(-1)
        found = ids[torch.arange(ids.size(0), device=ids.device), k_best]  # (A, n)
        self.best_ids[:, :n] = torch.where(better[:, None], found, self.best_ids[:, :n])
        self.best_len = torch.where(better, n, self.best_len)


def beam_search(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *, beam: int = 5,
                length_penalty: float = 0.6, max_len_a: float = 1.5, max_len_b: float = 10) -> list[list[int]]:
    """Beam search over every row at once; the best target ids per row.

    Each row holds `beam` hypotheses, live or finished. A hypothesis's score is the sum of
    its tokens' log-probabilities. At each step the live hypotheses of a row are extended
    by every token and the best candidates by score fill the row's free places (beam minus
    the finished ones); a candidate ending in <eos> is finished and keeps its place, so the
    live beam shrinks (as in dl4mt/Nematus). A row stops when all `beam` places are finished
    or at its max_len: the search runs to its end, with no early-stopping bound. Its answer
    is the finished hypothesis with the best GNMT-normalised score,
    score / ((5 + length) / 6) ** length_penalty with <eos> counted in the length; if none
    finished, the best live one. Equal scores go to the candidate from the lower
    (hypothesis, token) index, and equal finished scores to the one found first. With
    beam=1 this is exactly `greedy`.

    The batch holds every hypothesis of the sentences still searched, A*W rows (one per
    sentence at the first step, `beam` after); a sentence that stops leaves it.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1; got {beam}")
    c = model.config
    K, device = beam, src.device
    limits = max_lengths(source_lengths(src, src_mask), c.block_size, max_len_a, max_len_b)
    banned = banned_ids(c)
    answers: list[list[int] | None] = [[] if n == 0 else None for n in limits]
    longest = max(limits, default=0)
    with evaluating(model), torch.inference_mode():
        index = torch.tensor([b for b, n in enumerate(limits) if n > 0], dtype=torch.long, device=device)  # (A,)
        A = index.numel()
        rows = Sentences(index=index, first_row=torch.arange(A, device=device),
                         limit=torch.tensor(limits, device=device)[index],
                         scores=torch.zeros(A, 1, dtype=torch.float64, device=device),  # <bos> alone, W = 1
                         n_finished=torch.zeros(A, dtype=torch.long, device=device),
                         best_score=torch.full((A,), float("-inf"), dtype=torch.float64, device=device),
                         best_ids=torch.full((A, longest), c.pad_id, dtype=torch.long, device=device),
                         best_len=torch.zeros(A, dtype=torch.long, device=device))
        # Every hypothesis is a batch row, those of a sentence adjacent: (A, W, ...) -> (A*W, ...).
        memory = first_memory = model.encode(src, src_mask)[index]  # (A*1, S, C)
        mask = first_mask = src_mask[index] if src_mask is not None else None  # (A*1, S)
        cache = model.new_cache()
        tgt = torch.full((A, 1), c.bos_id, dtype=torch.long, device=device)  # (A*1, 1)
        places = torch.arange(K, device=device)
        for step in range(1, longest + 1):
            logits = model.decode(tgt[:, -1:], memory, mask, cache=cache)[:, -1]  # (A*W, V)
            W, V = rows.scores.size(1), logits.size(-1)
            # Float32 log-probs summed in float64: distinct candidates stay distinct, so ties break
            # as in greedy.
            logprobs = next_log_probs(logits, banned).view(A, W, V)  # (A*W, V) -> (A, W, V)
            top, flat = best_candidates(rows.scores, logprobs, K)  # (A, K) of the A*W*V, best first
            # Keep as many as the row has free places; the rest of the K picks are dropped.
            keep = (places[None, :] < (K - rows.n_finished)[:, None]) & top.isfinite()  # (A, K)
            top = top.masked_fill(~keep, float("-inf"))
            parent, token = flat // V, flat % V  # (A, K): which hypothesis each pick extends, by which token
            hyp = (torch.arange(A, device=device)[:, None] * W + parent).view(-1)  # (A*K,) batch rows extended
            tgt = torch.cat([tgt[hyp], token.view(-1, 1)], dim=1)  # (A*W, step) -> (A*K, step + 1)

            # Picks ending in <eos> are finished; the best of them replaces the row's best if better.
            ended = keep & (token == c.eos_id)  # (A, K)
            rows.add_finished(ended, top / gnmt_penalty(step, length_penalty), tgt.view(A, K, -1)[:, :, 1:-1])
            rows.scores = top.masked_fill(ended, float("-inf"))  # finished hypotheses are no longer extended

            # A row stops at its max_len or when no live hypothesis is left; it leaves the batch.
            stopped = (step >= rows.limit) | ~rows.scores.isfinite().any(dim=1)  # (A,)
            going = None
            if bool(stopped.any()):
                record_answers(answers, rows, stopped, tgt.view(A, K, -1)[:, :, 1:])
                going = (~stopped).nonzero().squeeze(1)  # (A',)
                if going.numel() == 0:
                    break
                rows, A = rows.select(going), going.numel()
                hyp = hyp.view(-1, K)[going].view(-1)  # (A'*K,)
                tgt = tgt.view(-1, K, tgt.size(1))[going].view(A * K, -1)  # (A*K, T) -> (A'*K, T)
            # Every hypothesis of a sentence attends to the same memory: its rows of the memory
            # and of the cross-attention cache are copies of the sentence's row at the first step.
            if step == 1:  # one copy per sentence of the memory's keys and values, (A, h, S, d) per layer
                memory_kv = [(layer.k[:, :, : layer.length].clone(), layer.v[:, :, : layer.length].clone())
                             for layer in cache.cross_attn]
            if step == 1 or going is not None:
                memory_rows = rows.first_row.repeat_interleave(K)  # (A*K,): each sentence's row, K times
                for layer, (k, v) in zip(cache.cross_attn, memory_kv):
                    layer.k, layer.v = gathered_rows(layer.k, k, memory_rows), gathered_rows(layer.v, v, memory_rows)
                memory = first_memory.index_select(0, memory_rows)  # (A*K, S, C)
                mask = first_mask.index_select(0, memory_rows) if first_mask is not None else None  # (A*K, S)
            keep_rows(cache.self_attn, hyp)  # the extended hypotheses' keys and values
    return answers


def record_answers(answers: list, rows: Sentences, stopped: torch.Tensor, live_ids: torch.Tensor) -> None:
    """Fills answers for the stopped rows: the best finished hypothesis, or else the best live one.

    live_ids (A, K, T): the rows' live hypotheses, all of length T, so raw scores rank them
    (equal ones: the first).
    """
    stop = stopped.nonzero().squeeze(1)
    best_live = live_ids[stop, rows.scores[stop].argmax(dim=1)]  # (n, T)
    for b, n_finished, ids, n, live in zip(rows.index[stop].tolist(), rows.n_finished[stop].tolist(),
                                            rows.best_ids[stop].tolist(), rows.best_len[stop].tolist(),
                                            best_live.tolist()):
        answers[b] = ids[:n] if n_finished else live


# ---------------------------------------------------------------------------------------------
# Text in, text out


def encode_sources(tokenizer, sentences: list[str], block_size: int) -> tuple[list[list[int]], int]:
    """Source ids per sentence (tokens + eos, as in training) and how many were truncated.

    A sentence longer than block_size - 1 tokens keeps its first block_size - 1 and its eos.
    A sentence with no tokens gives [] (nothing to translate).
    """
    sources, truncated = [], 0
    for sentence in sentences:
        ids = tokenizer.encode(sentence)
        truncated += len(ids) > block_size - 1
        sources.append(ids[: block_size - 1] + [tokenizer.eos_id] if ids else [])
    return sources, truncated


def pad_batch(sources: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded src (B, S) and src_mask (B, S), True for real tokens."""
    lengths = torch.tensor([len(ids) for ids in sources], device=device)  # (B,)
    src = torch.full((len(sources), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for row, ids in enumerate(sources):
        src[row, : len(ids)] = torch.tensor(ids, device=device)
    mask = torch.arange(src.size(1), device=device)[None, :] < lengths[:, None]  # (1, S) < (B, 1) -> (B, S)
    return src, mask


def translate_texts(model: nn.Module, tokenizer, sentences: list[str], *, beam: int = 1,
                    length_penalty: float = 0.6, batch_size: int = 64, max_len_a: float = 1.5,
                    max_len_b: float = 10, **kw) -> list[str]:
    """Translations of `sentences`, in the same order.

    Sentences are batched by length (sorted, so little padding) and decoded with `greedy`
    (beam=1) or `beam_search`; `kw` goes to that function (e.g. use_cache for greedy).
    Sentences without tokens translate to "" without running the model. Sources longer than
    the block are truncated, with one warning that counts them.
    """
    sources, truncated = encode_sources(tokenizer, sentences, model.config.block_size)
    if truncated:
        warnings.warn(f"{truncated} of {len(sentences)} sentences are longer than block_size "
                      f"{model.config.block_size} tokens and were truncated", stacklevel=2)
    device = next(model.parameters()).device
    todo = sorted((i for i, ids in enumerate(sources) if ids), key=lambda i: len(sources[i]))
    lengths = dict(max_len_a=max_len_a, max_len_b=max_len_b)
    translations = [""] * len(sentences)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        src, mask = pad_batch([sources[i] for i in chunk], model.config.pad_id, device)
        if beam == 1:
            outputs = greedy(model, src, mask, **lengths, **kw)
        else:
            outputs = beam_search(model, src, mask, beam=beam, length_penalty=length_penalty, **lengths, **kw)
        for i, ids in zip(chunk, outputs):
            translations[i] = tokenizer.decode(ids)
    return translations
