"""Translation decoding for Seq2Seq, on token ids: greedy search and beam search.

Every target starts from <bos>; a hypothesis ends when it produces <eos>, which is left
out of the returned ids. <pad> and <bos> are never produced (their log-probabilities are
set to -inf after the softmax, so the scores of the other tokens are the model's own).
Row b may produce at most max_len[b] tokens, <eos> included:

    max_len[b] = min(block_size - 1, int(max_len_a * src_len[b] + max_len_b))

where src_len[b] is the row's unpadded source length. A row that reaches max_len[b]
without <eos> ends there.

Shapes: B batch, K beam, S source length, T target length, V target vocabulary, C width.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from .generate import evaluating

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

    Ties go to the lower index, as `argmax` does, so one beam picks what greedy picks
    (torch.topk leaves tie order unspecified). Once a row runs out of finite entries its
    remaining picks are -inf and may repeat an index; callers drop -inf picks.
    """
    scores = scores.clone()
    values, indices = [], []
    for _ in range(k):
        index = scores.argmax(dim=-1, keepdim=True)  # (N, 1), the first of equal maxima
        values.append(scores.gather(-1, index))
        indices.append(index)
        scores.scatter_(-1, index, float("-inf"))  # taken: not picked again
    return torch.cat(values, dim=-1), torch.cat(indices, dim=-1)


def cut_at_eos(ids: list[int], eos_id: int) -> list[int]:
    """The ids before the first eos (all of them if there is none)."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


# ---------------------------------------------------------------------------------------------
# Greedy search


def greedy(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *,
           max_len_a: float = 1.5, max_len_b: float = 10, use_cache: bool = True) -> list[list[int]]:
    """The most likely next token at every step, for every row at once; the target ids per row.

    use_cache=False runs the whole target prefix through the decoder at every step (the
    reference the cached path is tested against); the result is the same.
    """
    c = model.config
    limits = max_lengths(source_lengths(src, src_mask), c.block_size, max_len_a, max_len_b)
    banned = banned_ids(c)
    with evaluating(model), torch.inference_mode():
        memory = model.encode(src, src_mask)  # (B, S, C)
        cache = model.new_cache() if use_cache else None
        tgt = torch.full((src.size(0), 1), c.bos_id, dtype=torch.long, device=src.device)  # (B, 1)
        finished = torch.tensor([n == 0 for n in limits], device=src.device)  # (B,)
        limit = torch.tensor(limits, device=src.device)
        for step in range(1, max(limits, default=0) + 1):
            # With a cache the decoder needs only the newest token; without, the whole prefix.
            new = tgt[:, -1:] if cache is not None else tgt
            logits = model.decode(new, memory, src_mask, cache=cache)[:, -1]  # (B, V)
            token = next_log_probs(logits, banned).argmax(dim=-1)  # (B,)
            token = token.masked_fill(finished, c.pad_id)  # finished rows idle until the batch ends
            tgt = torch.cat([tgt, token[:, None]], dim=1)  # (B, step) -> (B, step + 1)
            finished |= (token == c.eos_id) | (step >= limit)
            if bool(finished.all()):
                break
    rows = tgt[:, 1:].tolist()  # without bos
    return [cut_at_eos(ids[:n], c.eos_id) for ids, n in zip(rows, limits)]


# ---------------------------------------------------------------------------------------------
# Beam search


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
    finished, the best live one. With beam=1 this is exactly `greedy`.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1; got {beam}")
    c = model.config
    B, K = src.size(0), beam
    limits = max_lengths(source_lengths(src, src_mask), c.block_size, max_len_a, max_len_b)
    banned = banned_ids(c)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]  # (normalised score, ids)
    best: list[list[int] | None] = [[] if n == 0 else None for n in limits]  # the answer, once a row stops
    with evaluating(model), torch.inference_mode():
        # Every hypothesis is a row of its own: (B, ...) -> (B*K, ...), beams of a sentence adjacent.
        memory = model.encode(src, src_mask).repeat_interleave(K, dim=0)  # (B*K, S, C)
        mask = src_mask.repeat_interleave(K, dim=0) if src_mask is not None else None  # (B*K, S)
        cache = model.new_cache()
        tgt = torch.full((B * K, 1), c.bos_id, dtype=torch.long, device=src.device)  # (B*K, 1)
        # Float64 sums keep distinct candidates distinct, so ties break as in greedy.
        scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=src.device)
        scores[:, 0] = 0.0  # one live hypothesis per row at first, not K copies of <bos>
        scores[torch.tensor(limits, device=src.device) == 0] = float("-inf")  # rows allowed no token
        for step in range(1, max(limits, default=0) + 1):
            logits = model.decode(tgt[:, -1:], memory, mask, cache=cache)[:, -1]  # (B*K, V)
            V = logits.size(-1)
            logprobs = next_log_probs(logits, banned).double().view(B, K, V)  # (B*K, V) -> (B, K, V)
            candidates = (scores[:, :, None] + logprobs).view(B, K * V)  # (B, K, V) -> (B, K*V)
            top, index = top_k_first(candidates, K)  # (B, K), best first
            # Keep as many as the row has free places; the rest of the K picks are dropped.
            free = torch.tensor([K - len(f) for f in finished], device=src.device)  # (B,)
            keep = (torch.arange(K, device=src.device)[None, :] < free[:, None]) & top.isfinite()
            top = top.masked_fill(~keep, float("-inf"))
            parent = index // V  # (B, K): which of the row's hypotheses each pick extends
            token = index % V
            rows = (torch.arange(B, device=src.device)[:, None] * K + parent).view(-1)  # (B*K,) flat rows
            cache.reorder(rows)
            tgt = torch.cat([tgt[rows], token.view(-1, 1)], dim=1)  # (B*K, step) -> (B*K, step + 1)
            ended = keep & (token == c.eos_id)  # (B, K)
            for b, k in ended.nonzero().tolist():
                ids = tgt[b * K + k, 1:-1].tolist()  # without bos and eos
                finished[b].append((top[b, k].item() / gnmt_penalty(step, length_penalty), ids))
            scores = top.masked_fill(ended, float("-inf"))  # finished hypotheses are no longer extended
            has_live = scores.isfinite().any(dim=1).tolist()  # (B,)
            for b in range(B):
                if best[b] is None and (step >= limits[b] or not has_live[b]):
                    best[b] = row_answer(finished[b], scores[b], tgt[b * K:(b + 1) * K, 1:])
                    scores[b] = float("-inf")  # the row is done: nothing more to extend
            if all(answer is not None for answer in best):
                break
    return best


def row_answer(finished: list[tuple[float, list[int]]], scores: torch.Tensor, live: torch.Tensor) -> list[int]:
    """A stopped row's result: the best finished hypothesis, or else the best live one.

    finished: (normalised score, ids) in the order found; scores (K,) and live (K, T) are the
    row's live hypotheses (-inf for none). Ties go to the one found first.
    """
    if finished:
        return max(finished, key=lambda f: f[0])[1]
    return live[int(scores.argmax())].tolist()  # all of the same length, so raw scores rank them


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
