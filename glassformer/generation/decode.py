"""Translation decoding for Seq2Seq, on token ids: greedy search and beam search.

Every target starts from <bos>; a hypothesis ends when it produces <eos>, which is left
out of the returned ids. <pad> and <bos> are never produced (their log-probabilities are
set to -inf after the softmax, so the scores of the other tokens are the model's own).
Row b may produce at most max_len[b] tokens, <eos> included:

    max_len[b] = min(block_size - 1, int(max_len_a * src_len[b] + max_len_b))

where src_len[b] is the row's unpadded source length. A row that reaches max_len[b]
without <eos> ends there.

Both searches run on the decoding core of glassformer.generation.sampling (its loop, its `top_k`, a
Decoder) with `Seq2SeqDecoder` below. Shapes: B batch, A sentences still decoding, K beam,
W hypotheses per sentence (1 at beam search's first step, then K), S source length, T
target length, V target vocabulary, C width.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn as nn

from glassformer.data.batches import right_pad, source_ids
from glassformer.generation.sampling import SequenceDecoder, check_vocab_limit, decode_steps, top_k, within_vocabulary

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


def next_log_probs(logits: torch.Tensor, banned: list[int], vocab_limit: int | None = None) -> torch.Tensor:
    """logits (N, V) -> log-probabilities (N, V') in float32, with `banned` ids at -inf.

    vocab_limit: the target tokenizer's size where the model's vocabulary is padded beyond it;
    the ids from it up are no token, so they are dropped before the softmax (V' = vocab_limit)
    and the real ids' probabilities sum to one. None: every id (V' = V).
    """
    logprobs = torch.log_softmax(within_vocabulary(logits, vocab_limit).float(), dim=-1)
    inside = [i for i in banned if i < logprobs.size(-1)]  # a banned id beyond the limit is gone already
    logprobs[:, inside] = float("-inf")  # after the softmax: the other tokens keep their model scores
    return logprobs


def banned_ids(config) -> list[int]:
    """Ids a translation never contains: <pad>, and <bos> unless it doubles as <eos>."""
    return sorted({config.pad_id, config.bos_id} - {config.eos_id})


def gnmt_penalty(length: int, alpha: float) -> float:
    """The length normaliser of Wu et al. (2016, GNMT): ((5 + length) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha


def cut_at_eos(ids: list[int], eos_id: int) -> list[int]:
    """The ids before the first eos (all of them if there is none)."""
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


# ---------------------------------------------------------------------------------------------
# The decoder: target rows over encoded sources


class Seq2SeqDecoder(SequenceDecoder):
    """A Decoder (glassformer.generation.sampling) for a Seq2Seq model: rows of targets, each starting from
    <bos> and reading the encoder memory of one source sentence.

    The encoder runs once. `source` (A,) says which sentence each row reads; a row that is
    kept twice (beam search) or a sentence that leaves changes it, and only then are the rows
    of the memory, its mask and the cross-attention caches gathered again, from one copy per
    sentence. use_cache=False runs the whole target prefix through the decoder at every step.
    """

    def __init__(self, model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                 use_cache: bool = True):
        bos = torch.full((src.size(0), 1), model.config.bos_id, dtype=torch.long, device=src.device)  # (B, 1)
        super().__init__(model, bos, use_cache)
        with self.running():
            self.sentence_memory = model.encode(src, src_mask)  # (B, S, C)
        self.sentence_mask = src_mask  # (B, S) or None
        self.sentence_kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer, (B, h, S, d) each
        self.source = torch.arange(src.size(0), device=src.device)  # (A,)
        self.memory, self.mask = self.sentence_memory, src_mask

    def start(self) -> torch.Tensor:
        logits = super().start()
        if self.cache is not None:  # the first step filled the cross-attention caches, a row per sentence
            self.sentence_kv = [layer.keys_values() for layer in self.cache.cross_attn]
        return logits

    def keep(self, rows: torch.Tensor) -> None:
        super().keep(rows)
        source = self.source[rows]  # (A',)
        if torch.equal(source, self.source):
            return  # every row reads the sentence it read before
        self.source = source
        with self.running():
            self.memory = self.sentence_memory.index_select(0, source)  # (A', S, C)
            self.mask = self.sentence_mask.index_select(0, source) if self.sentence_mask is not None else None
            if self.cache is not None:
                for layer, (k, v) in zip(self.cache.cross_attn, self.sentence_kv):
                    layer.k, layer.v = k.index_select(0, source), v.index_select(0, source)

    def logits(self) -> torch.Tensor:
        new = self.ids[:, -1:] if self.cache is not None else self.ids  # with a cache only the newest token
        with self.running():
            return self.model.decode(new, self.memory, self.mask, cache=self.cache)[:, -1]  # (A, V)


def sentences_to_decode(model, src, src_mask, max_len_a: float, max_len_b: float, use_cache: bool = True):
    """(max_len per row, the rows (A,) whose max_len lets them produce a token, a Seq2SeqDecoder
    over just those rows; None when there are none)."""
    limits = max_lengths(source_lengths(src, src_mask), model.config.block_size, max_len_a, max_len_b)
    todo = torch.tensor([b for b, n in enumerate(limits) if n > 0], dtype=torch.long, device=src.device)
    if todo.numel() == 0:
        return limits, todo, None
    return limits, todo, Seq2SeqDecoder(model, src[todo], src_mask[todo] if src_mask is not None else None, use_cache)


# ---------------------------------------------------------------------------------------------
# Greedy search


def greedy(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *,
           max_len_a: float = 1.5, max_len_b: float = 10, use_cache: bool = True,
           vocab_limit: int | None = None) -> list[list[int]]:
    """The most likely next token at every step, for every row at once; the target ids per row.

    A row that ends leaves the batch, so the decoder works only on the rows still going.
    use_cache=False runs the whole target prefix through the decoder at every step (the
    reference the cached path is tested against); the result is the same.
    vocab_limit: no id at or above it is produced (the target tokenizer's size; None: any id).
    """
    c = model.config
    check_vocab_limit(vocab_limit, c.tgt_vocab_size)
    limits, todo, decoder = sentences_to_decode(model, src, src_mask, max_len_a, max_len_b, use_cache)
    answers: list[list[int]] = [[] for _ in limits]
    if decoder is None:
        return answers
    banned = banned_ids(c)

    def most_likely(logits: torch.Tensor) -> torch.Tensor:
        return next_log_probs(logits, banned, vocab_limit).argmax(dim=-1)  # ties: the lower id

    limit = torch.tensor(limits, device=src.device)[todo]
    steps = list(decode_steps(decoder, int(limit.max()), most_likely, c.eos_id, limit))
    for b, ids in zip(todo.tolist(), torch.stack(steps, dim=1).tolist()):  # (A, steps)
        answers[b] = cut_at_eos(ids[: limits[b]], c.eos_id)
    return answers


# ---------------------------------------------------------------------------------------------
# Beam search


def beam_search(model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *, beam: int = 5,
                length_penalty: float = 0.6, max_len_a: float = 1.5, max_len_b: float = 10,
                record: Callable[[int, list[list[dict]]], None] | None = None,
                vocab_limit: int | None = None) -> list[list[int]]:
    """Beam search over every row at once; the best target ids per row.

    Each sentence holds `beam` places for hypotheses, live or finished. A hypothesis's score is
    the sum of its tokens' log-probabilities. At each step every live hypothesis is extended by
    every token, and the best candidates fill the sentence's free places (beam minus its
    finished hypotheses); a candidate ending in <eos> is finished and keeps its place, so the
    live beam shrinks (as in dl4mt/Nematus). A sentence stops when no live hypothesis is left
    or at its max_len (no early-stopping bound). Its answer is the finished hypothesis with the
    best GNMT-normalised score, score / ((5 + length) / 6) ** length_penalty with <eos> counted
    in the length; if none finished, the best live one. Equal scores go to the candidate from
    the lower (hypothesis, token) index, equal finished scores to the one found first; so
    beam=1 is exactly `greedy`.

    record: called at every step with the step and, per sentence still decoding, its best 2K
    candidates (`beam_tree`): the tree that `glassformer explain --beam` shows.
    vocab_limit: no id at or above it is produced (the target tokenizer's size; None: any id).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1; got {beam}")
    c, K = model.config, beam
    check_vocab_limit(vocab_limit, c.tgt_vocab_size)
    limits, todo, decoder = sentences_to_decode(model, src, src_mask, max_len_a, max_len_b)
    answers: list[list[int]] = [[] for _ in limits]
    if decoder is None:
        return answers
    banned, device = banned_ids(c), src.device
    sentence = todo.tolist()  # (A,) each sentence's row in the batch
    limit = torch.tensor(limits, device=device)[todo]  # (A,)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in sentence]  # (normalised score, ids) each
    scores = torch.zeros(len(sentence), 1, dtype=torch.float64, device=device)  # (A, W): <bos> alone, W = 1
    hypotheses = torch.zeros(len(sentence), 1, 0, dtype=torch.long, device=device)  # (A, W, step - 1) their ids
    places = torch.arange(K, device=device)
    logits = decoder.start()  # (A*W, V)
    for step in range(1, int(limit.max()) + 1):
        logprobs = next_log_probs(logits, banned, vocab_limit)  # (A*W, V), V the ids that may be chosen
        A, W, V = *scores.shape, logprobs.size(-1)
        # Every one-token extension of every hypothesis; float32 log-probs summed in float64, so
        # distinct candidates stay distinct and ties break as in greedy.
        candidates = scores[:, :, None] + logprobs.view(A, W, V)  # (A, W, V)
        top, index = top_k(candidates.view(A, W * V), K)  # (A, K) best first
        parent, token = index // V, index % V  # which hypothesis each pick extends, by which token
        before = hypotheses  # (A, W, step - 1)
        hypotheses = torch.cat([hypotheses[torch.arange(A, device=device)[:, None], parent], token[..., None]], 2)
        # The first K - (finished) picks fill the free places; a pick ending in <eos> is finished.
        free = K - torch.tensor([len(f) for f in finished], device=device)  # (A,)
        picked = (places < free[:, None]) & top.isfinite()  # (A, K)
        ended = picked & (token == c.eos_id)
        for a, k in ended.nonzero().tolist():
            finished[a].append((top[a, k].item() / gnmt_penalty(step, length_penalty), hypotheses[a, k, :-1].tolist()))
        if record is not None:
            record(step, beam_tree(candidates, before, picked, ended, step, length_penalty))
        scores = top.masked_fill(~picked | ended, float("-inf"))  # (A, K): the live hypotheses
        # A sentence stops at its max_len or when no live hypothesis is left.
        stopped = (step >= limit) | ~scores.isfinite().any(dim=1)  # (A,)
        for a in stopped.nonzero().squeeze(1).tolist():
            best_live = hypotheses[a, scores[a].argmax()].tolist()  # all of one length: raw scores rank them
            answers[sentence[a]] = max(finished[a], key=lambda f: f[0])[1] if finished[a] else best_live
        going = (~stopped).nonzero().squeeze(1)  # (A',)
        if going.numel() == 0:
            break
        # The next batch: the K places of every sentence going on, each continuing its parent's row.
        decoder.keep((going[:, None] * W + parent[going]).view(-1))  # (A'*K,)
        logits = decoder.step(token[going].view(-1))  # (A'*K, V)
        scores, hypotheses, limit = scores[going], hypotheses[going], limit[going]
        sentence = [sentence[a] for a in going.tolist()]
        finished = [finished[a] for a in going.tolist()]
    return answers


def beam_tree(candidates, hypotheses, picked, ended, step: int, length_penalty: float) -> list[list[dict]]:
    """One beam search step, for display: per sentence its best 2K candidates (K = picked's width),
    each with its hypothesis (ids), score, length-normalised score and status: "finished"
    (ends in <eos>), "kept" (live), or "pruned" (no free place left, or not among the best K).
    hypotheses (A, W, step - 1) are the ids of the hypotheses the candidates (A, W, V) extend."""
    A, W, V = candidates.shape
    K = picked.size(1)
    best, index = top_k(candidates.view(A, W * V), min(2 * K, W * V))  # (A, 2K), the first K the search's picks
    tree = []
    for a in range(A):
        rows = []
        for k, (score, i) in enumerate(zip(best[a].tolist(), index[a].tolist())):
            if score == float("-inf"):
                break
            status = "pruned" if k >= K or not picked[a, k] else "finished" if ended[a, k] else "kept"
            rows.append({"ids": hypotheses[a, i // V].tolist() + [i % V], "parent": i // V, "score": score,
                         "normalised": score / gnmt_penalty(step, length_penalty), "status": status})
        tree.append(rows)
    return tree


# ---------------------------------------------------------------------------------------------
# Text in, text out


def translate_texts(model: nn.Module, tokenizer, sentences: list[str], *, beam: int = 1,
                    length_penalty: float = 0.6, batch_size: int = 64, max_len_a: float = 1.5,
                    max_len_b: float = 10, vocab_limit: int | None = None, **kw) -> list[str]:
    """Translations of `sentences`, in the same order.

    Sentences are batched by length (sorted, so little padding) and decoded with `greedy`
    (beam=1) or `beam_search`; `kw` goes to that function (e.g. use_cache for greedy).
    vocab_limit: the target tokenizer's size where the model's vocabulary is padded beyond it.
    Sentences without tokens translate to "" without running the model. Sources longer than
    the block are truncated, with one warning that counts them.
    """
    block_size = model.config.block_size
    encoded = [tokenizer.encode(sentence) for sentence in sentences]
    sources = [source_ids(ids, block_size, tokenizer.eos_id) if ids else [] for ids in encoded]  # [] : nothing
    truncated = sum(len(ids) > block_size - 1 for ids in encoded)
    if truncated:
        warnings.warn(f"{truncated} of {len(sentences)} sentences are longer than block_size "
                      f"{model.config.block_size} tokens and were truncated", stacklevel=2)
    device = next(model.parameters()).device
    todo = sorted((i for i, ids in enumerate(sources) if ids), key=lambda i: len(sources[i]))
    lengths = dict(max_len_a=max_len_a, max_len_b=max_len_b, vocab_limit=vocab_limit)
    translations = [""] * len(sentences)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        src, mask = right_pad([sources[i] for i in chunk], model.config.pad_id, device)
        if beam == 1:
            outputs = greedy(model, src, mask, **lengths, **kw)
        else:
            outputs = beam_search(model, src, mask, beam=beam, length_penalty=length_penalty, **lengths, **kw)
        for i, ids in zip(chunk, outputs):
            translations[i] = tokenizer.decode(ids)
    return translations
