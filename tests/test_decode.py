"""Translation decoding: a tiny Seq2Seq learns to copy and to reverse and both searches
reproduce held-out sequences; beam search with a beam wide enough to keep every hypothesis
against a brute-force enumeration scored by teacher forcing, and against a plain
one-sentence-at-a-time implementation of its definition; beam 1 against greedy, the KV
cache against recomputation, batches and padding against one sentence at a time; length
limits; top-k selection against repeated argmax; the cache's row moves against indexing;
translate_texts on text (order, empty lines, unknown words, truncation)."""

import functools
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from glassformer.data.tokenizers import WordTokenizer
from glassformer.generation.decode import beam_search, greedy, translate_texts
from glassformer.generation.sampling import top_k
from glassformer.model.config import Seq2SeqConfig
from glassformer.model.layers import KVCache
from glassformer.model.seq2seq import Seq2Seq

WORDS = "ant bee cat dog eel fox gnu hen ibis jay koi lynx mole newt owl pig".split()
TOKENIZER = WordTokenizer.train(" ".join(WORDS))  # <pad>=0 <unk>=1 <bos>=2 <eos>=3, the words 4..19
PAD, UNK, BOS, EOS = TOKENIZER.pad_id, TOKENIZER.unk_id, TOKENIZER.bos_id, TOKENIZER.eos_id
FIRST_WORD = EOS + 1
VOCAB = TOKENIZER.vocab_size  # 20
BLOCK = 24


def tiny_config(**overrides) -> Seq2SeqConfig:
    sizes = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, block_size=BLOCK, n_encoder_layers=2,
                 n_decoder_layers=2, n_head=2, d_model=32, d_ff=64, dropout=0.0)
    return Seq2SeqConfig(**{**sizes, **overrides}, pad_id=PAD, bos_id=BOS, eos_id=EOS)


def random_model(seed=0, **overrides) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(tiny_config(**overrides)).eval()


def random_sequences(n: int, generator: torch.Generator, shortest=3, longest=8) -> list[list[int]]:
    """n sequences of word ids (never a special id), of random lengths."""
    lengths = torch.randint(shortest, longest + 1, (n,), generator=generator).tolist()
    return [torch.randint(FIRST_WORD, VOCAB, (length,), generator=generator).tolist() for length in lengths]


def pad_rows(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and their mask (B, T), True for real tokens."""
    ids = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(row) for row in rows])
    return ids, torch.arange(ids.size(1))[None, :] < lengths[:, None]  # (1, T) < (B, 1) -> (B, T)


def sources(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """What the encoder reads: each sequence + eos, padded."""
    return pad_rows([s + [EOS] for s in seqs])


TASKS = {"copy": lambda s: list(s), "reverse": lambda s: s[::-1]}


def gold_probabilities(model, seqs: list[list[int]], task: str) -> torch.Tensor:
    """p(target + eos | source) of each sequence's right answer, by teacher forcing: (n,)."""
    targets = [TASKS[task](s) for s in seqs]
    src, src_mask = sources(seqs)
    tgt_in, _ = pad_rows([[BOS] + t for t in targets])
    tgt_out, keep = pad_rows([t + [EOS] for t in targets])
    with torch.no_grad():
        logprobs = model(src, tgt_in, src_mask).log_softmax(-1)  # (n, T, V)
    token_logprobs = logprobs.gather(-1, tgt_out[..., None]).squeeze(-1)  # (n, T)
    return token_logprobs.masked_fill(~keep, 0.0).sum(dim=1).exp()


@functools.cache
def trained(task: str, steps: int = 300) -> tuple[Seq2Seq, frozenset]:
    """A tiny model taught `task` by teacher forcing (~5 s), and the sequences it saw."""
    model = random_model(seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / steps)  # linear to 0
    generator = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(steps):
        seqs = random_sequences(64, generator)
        seen.update(map(tuple, seqs))
        targets = [TASKS[task](s) for s in seqs]
        src, src_mask = sources(seqs)
        tgt_in, _ = pad_rows([[BOS] + t for t in targets])
        tgt_out, _ = pad_rows([t + [EOS] for t in targets])
        logits = model(src, tgt_in, src_mask)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        decay.step()
    return model.eval(), frozenset(seen)


def held_out(task: str, n: int, seed: int = 99) -> list[list[int]]:
    """n random sequences the trained model never saw."""
    _, seen = trained(task)
    generator = torch.Generator().manual_seed(seed)
    fresh = [s for s in random_sequences(4 * n, generator) if tuple(s) not in seen]
    return fresh[:n]


def mixed_batch(seed=5, n=8) -> tuple[torch.Tensor, torch.Tensor]:
    """n sources of different lengths (2..12 tokens before eos), padded."""
    generator = torch.Generator().manual_seed(seed)
    return sources(random_sequences(n, generator, shortest=2, longest=12))


def one_at_a_time(decoder, src, src_mask, **kw) -> list[list[int]]:
    """Each row decoded alone, unpadded and without a mask."""
    return [decoder(src[i: i + 1, : int(src_mask[i].sum())], None, **kw)[0] for i in range(src.size(0))]


def log_prob(model, src_ids: list[int], tgt_ids: list[int]) -> float:
    """log p(tgt_ids + eos | src_ids), by teacher forcing the whole sentence in one pass."""
    with torch.no_grad():
        logits = model(torch.tensor([src_ids]), torch.tensor([[BOS] + tgt_ids]))[0]  # (T + 1, V)
    target = tgt_ids + [EOS]
    return logits.log_softmax(-1)[range(len(target)), target].sum().item()


def normalised(model, src_ids, tgt_ids, alpha: float) -> float:
    """The GNMT-normalised score beam search ranks finished hypotheses by (eos counted)."""
    return log_prob(model, src_ids, tgt_ids) / ((5 + len(tgt_ids) + 1) / 6) ** alpha


# ---------------------------------------------------------------------------------------------
# A model that has learned something


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_trained_model_copies_and_reverses_held_out_sequences(task):
    # Where the right answer has probability p > 0.75, each of its prefixes is more likely than
    # all other prefixes of its length together, so greedy follows it and beam search ranks it
    # first at every step; and no other target outscores it under the length penalty (at most
    # ((5 + 23) / 6) ** 0.6 = 2.5): log 0.75 = -0.29 > log 0.25 / 2.5 = -0.55. Where the
    # model is less sure, nothing is claimed.
    model, _ = trained(task)
    seqs = held_out(task, 50)
    sure = gold_probabilities(model, seqs, task) > 0.75
    assert int(sure.sum()) >= 25, int(sure.sum())  # the task was learned: untrained, the model is sure of none
    seqs = [s for s, ok in zip(seqs, sure.tolist()) if ok]
    expected = [TASKS[task](s) for s in seqs]
    src, src_mask = sources(seqs)
    assert greedy(model, src, src_mask) == expected
    assert beam_search(model, src, src_mask, beam=5) == expected


# ---------------------------------------------------------------------------------------------
# Equivalences: beam 1 and greedy, cache and recomputation, batches and single sentences


@pytest.mark.parametrize("which", ["random", "copy", "reverse"])
def test_beam_1_is_greedy(which):
    model = random_model(seed=3) if which == "random" else trained(which)[0]
    src, src_mask = mixed_batch()
    expected = greedy(model, src, src_mask)
    assert beam_search(model, src, src_mask, beam=1) == expected
    assert beam_search(model, src, src_mask, beam=1, length_penalty=2.0) == expected  # one hypothesis: no ranking
    if which == "random":
        assert len(set(map(tuple, expected))) > 1  # the rows really differ


@pytest.mark.parametrize("position", ["sinusoidal", "rope"])
def test_greedy_with_cache_equals_recomputing_the_prefix(position):
    model = random_model(seed=4, position=position)
    src, src_mask = mixed_batch(seed=6)
    cached = greedy(model, src, src_mask, use_cache=True)
    assert cached == greedy(model, src, src_mask, use_cache=False)
    assert max(map(len, cached)) > 3  # long enough for the cache to matter


@pytest.mark.parametrize("decoder", [greedy, functools.partial(beam_search, beam=5)], ids=["greedy", "beam5"])
def test_batched_decoding_equals_one_sentence_at_a_time(decoder):
    model = random_model(seed=7)
    src, src_mask = mixed_batch(seed=8)
    assert not bool(src_mask.all())  # some rows are padded
    assert decoder(model, src, src_mask) == one_at_a_time(functools.partial(decoder, model), src, src_mask)


@pytest.mark.parametrize("decoder", [greedy, functools.partial(beam_search, beam=5)], ids=["greedy", "beam5"])
def test_padding_does_not_change_the_result(decoder):
    model = random_model(seed=9)
    short = [5, 9, 11]
    alone = decoder(model, torch.tensor([short + [EOS]]))[0]
    batch = [list(range(4, 16)), short, [7] * 10, short]  # short first padded among longer rows
    src, src_mask = sources(batch)
    outputs = decoder(model, src, src_mask)
    assert outputs[1] == alone
    assert outputs[3] == alone


# ---------------------------------------------------------------------------------------------
# Beam search finds what it should


class EosShifted(Seq2Seq):
    """Adds `eos_shift` to the <eos> logit: a random model that ends later, or (-inf) never."""

    eos_shift = 0.0

    def decode(self, *args, **kwargs):
        logits = super().decode(*args, **kwargs)  # (B, T, V)
        shift = torch.zeros(logits.size(-1))
        shift[EOS] = self.eos_shift
        return logits + shift


def eos_shifted_model(seed: int, eos_shift: float, **overrides) -> EosShifted:
    torch.manual_seed(seed)
    model = EosShifted(tiny_config(**overrides)).eval()
    model.eos_shift = eos_shift
    return model


def test_wide_beam_finds_the_best_hypothesis_of_a_brute_force_search():
    # Target vocabulary of 6 ids: <pad> and <bos> are never produced, so 3 tokens and <eos>
    # remain. With at most 4 tokens (eos included) there are 1 + 3 + 9 + 27 = 40 finished
    # hypotheses and 81 unfinished ones: a beam of 128 keeps them all, so beam search must
    # return the best finished hypothesis, scored here independently by teacher forcing.
    # (This random model ends at once unless <eos> is made less likely.)
    model = eos_shifted_model(seed=11, eos_shift=-7.0, tgt_vocab_size=6)
    tokens = [t for t in range(6) if t not in (PAD, BOS, EOS)]
    every = [list(h) for n in range(4) for h in itertools.product(tokens, repeat=n)]
    seqs = [[4, 5, 6], [7, 8, 9, 10, 11, 12], [13]]
    src, src_mask = sources(seqs)
    limit = dict(max_len_a=0, max_len_b=4)
    answers = set()
    for alpha in (0.0, 0.6, 1.0):
        found = beam_search(model, src, src_mask, beam=128, length_penalty=alpha, **limit)
        for seq, hypothesis, by_greedy in zip(seqs, found, greedy(model, src, src_mask, **limit)):
            scores = [normalised(model, seq + [EOS], h, alpha) for h in every]
            best = max(range(len(every)), key=scores.__getitem__)
            assert hypothesis == every[best]
            if len(by_greedy) < 4:  # greedy ended with eos: one of the enumerated hypotheses
                assert scores[best] >= scores[every.index(by_greedy)]
            answers.add(tuple(hypothesis))
    assert len(answers) >= 3  # the answers depend on the row and on alpha: a real search


def reference_beam_search(model, src_ids: list[int], beam: int, alpha: float, max_len: int) -> list[int]:
    """The documented search, one sentence at a time with Python lists and no cache: every
    hypothesis's whole prefix goes through the model to score its next token."""
    live, finished = [(0.0, [])], []  # (sum of log-probs, ids); (normalised score, ids)
    for step in range(1, max_len + 1):
        candidates = []
        for score, ids in live:
            with torch.no_grad():
                logits = model(torch.tensor([src_ids]), torch.tensor([[BOS] + ids]))[0, -1]  # (V,)
            logprobs = logits.log_softmax(-1).tolist()
            candidates += [(score + lp, ids + [t]) for t, lp in enumerate(logprobs) if t not in (PAD, BOS)]
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep (hypothesis, token) order
        live = []
        for score, ids in candidates[: beam - len(finished)]:
            if ids[-1] == EOS:
                finished.append((score / ((5 + step) / 6) ** alpha, ids[:-1]))
            else:
                live.append((score, ids))
        if not live:
            break
    return max(finished, key=lambda f: f[0])[1] if finished else live[0][1]


@pytest.mark.parametrize("seed, eos_shift, beam, alpha, overrides", [
    (18, 1.5, 3, 0.0, {}),  # some hypotheses end, some run to the limit
    (18, 1.5, 3, 2.0, {}),
    (22, 0.0, 2, 0.6, {}),
    (21, 1.0, 4, 0.0, dict(position="rope")),
    (22, -1.0, 7, 1.5, dict(position="rope")),
    (21, 0.0, 3, 1.0, dict(tgt_vocab_size=8)),
    (35, -1.0, 6, 2.0, dict(tgt_vocab_size=6)),  # 4 tokens to produce: fewer candidates than places at first
])
def test_beam_search_matches_a_plain_reference_implementation(seed, eos_shift, beam, alpha, overrides):
    model = eos_shifted_model(seed, eos_shift, **overrides)
    generator = torch.Generator().manual_seed(seed)
    seqs = random_sequences(6, generator, shortest=1, longest=8)
    src, src_mask = sources(seqs)
    found = []
    for a, b in [(0, 8), (0.5, 1)]:  # long limits, short ones
        limit = [min(BLOCK - 1, int(a * (len(seq) + 1) + b)) for seq in seqs]
        found += beam_search(model, src, src_mask, beam=beam, length_penalty=alpha, max_len_a=a, max_len_b=b)
        assert found[-len(seqs):] == [reference_beam_search(model, seq + [EOS], beam, alpha, n)
                                      for seq, n in zip(seqs, limit)]
    assert len({len(h) for h in found}) > 2  # answers of many lengths: ended early, late, cut


def test_ties_go_to_the_lower_id_in_greedy_and_beam_search():
    # A zero output layer: every token is equally likely, so every choice is a tie.
    model = eos_shifted_model(seed=19, eos_shift=0.0, tie_output=False)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    src = torch.tensor([[5, 6, 7, EOS]])
    limit = dict(max_len_a=0, max_len_b=5)
    assert greedy(model, src, **limit) == [[UNK] * 5]  # the lowest id that is neither <pad> nor <bos>
    assert beam_search(model, src, beam=1, **limit) == [[UNK] * 5]
    for beam in (3, 6):
        expected = reference_beam_search(model, [5, 6, 7, EOS], beam, 0.6, 5)
        assert beam_search(model, src, beam=beam, **limit) == [expected]


# ---------------------------------------------------------------------------------------------
# The pieces: top-k selection, the cache's row moves


def argmax_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries per row by repeated argmax, so ties go to the lower index."""
    scores = scores.clone()
    values, indices = [], []
    for _ in range(k):
        index = scores.argmax(dim=-1, keepdim=True)  # (N, 1)
        values.append(scores.gather(-1, index))
        indices.append(index)
        scores.scatter_(-1, index, float("-inf"))
    return torch.cat(values, dim=-1), torch.cat(indices, dim=-1)


def test_top_k_equals_repeated_argmax_with_ties_and_infinities():
    generator = torch.Generator().manual_seed(29)
    for n_columns, k in [(50, 5), (7, 7), (4, 6), (300, 1), (30, 12)]:
        scores = torch.randint(0, 4, (64, n_columns), generator=generator).double()  # few values: many ties
        scores[torch.rand(scores.shape, generator=generator) < 0.3] = float("-inf")
        scores[0] = float("-inf")
        values, indices = top_k(scores, k)
        expected_values, expected_indices = argmax_top_k(scores, min(k, n_columns))
        if n_columns < k:  # more picks than entries: the first n_columns, then -inf
            assert values[:, n_columns:].eq(float("-inf")).all()
            values, indices = values[:, :n_columns], indices[:, :n_columns]
        assert torch.equal(values, expected_values)
        finite = values.isfinite()  # -inf picks are dropped by callers, their indices are arbitrary
        assert torch.equal(indices[finite], expected_indices[finite])


def test_cache_keep_moves_rows_as_indexing_does():
    generator = torch.Generator().manual_seed(31)
    for rows in (torch.tensor([2, 2, 0, 1, 3, 3]), torch.tensor([3, 1]), torch.tensor([0, 1, 2, 3])):
        cache = KVCache(n_layers=2, max_len=10)
        appended = []
        for _ in range(3):  # three positions filled
            k, v = torch.randn(2, 4, 2, 1, 5, generator=generator)  # (B, h, T, d) each
            appended.append((k, v))
            for layer in cache.self_attn:
                layer.append(k, v)
        cache.keep(rows)
        new_k, new_v = torch.randn(2, len(rows), 2, 1, 5, generator=generator)
        for layer in cache.self_attn:
            k, v = layer.append(new_k, new_v)
            assert torch.equal(k, torch.cat([a[0][rows] for a in appended] + [new_k], dim=2))
            assert torch.equal(v, torch.cat([a[1][rows] for a in appended] + [new_v], dim=2))
        assert cache.length == 4


# ---------------------------------------------------------------------------------------------
# Lengths, modes, arguments


@pytest.mark.parametrize("decoder", [greedy, functools.partial(beam_search, beam=3)], ids=["greedy", "beam3"])
@pytest.mark.parametrize("a, b, expected", [(1.5, 10, [14, 17, 23]), (0.5, 1, [2, 3, 7]), (0, 0, [0, 0, 0])])
def test_max_length_is_a_times_source_length_plus_b_within_the_block(decoder, a, b, expected):
    model = eos_shifted_model(seed=14, eos_shift=float("-inf"))  # never ends by itself
    src, src_mask = sources([[4] * 2, [5] * 4, [6] * 11])  # source lengths 3, 5, 12 with eos
    outputs = decoder(model, src, src_mask, max_len_a=a, max_len_b=b)
    assert [len(ids) for ids in outputs] == expected  # 1.5 * 12 + 10 = 28 is capped at block_size - 1
    assert all(EOS not in ids and PAD not in ids and BOS not in ids for ids in outputs)


def test_a_trained_model_is_cut_at_the_length_limit():
    model, _ = trained("copy")
    src, src_mask = sources([[4, 5, 6, 7, 8, 9]])
    assert greedy(model, src, src_mask, max_len_a=0, max_len_b=3) == [[4, 5, 6]]
    assert beam_search(model, src, src_mask, beam=4, max_len_a=0, max_len_b=3) == [[4, 5, 6]]


def test_decoding_runs_in_eval_mode_and_restores_training_flags():
    model = random_model(seed=15, dropout=0.5)
    src, src_mask = mixed_batch()
    expected = greedy(model, src, src_mask), beam_search(model, src, src_mask, beam=3)
    model.train()
    model.decoder[0].eval()  # a mixed state, to be restored as it was
    assert (greedy(model, src, src_mask), beam_search(model, src, src_mask, beam=3)) == expected  # no dropout
    assert model.training and model.encoder[0].training and not model.decoder[0].training


def test_bad_arguments_raise():
    model = random_model()
    src, src_mask = mixed_batch()
    with pytest.raises(ValueError, match="beam"):
        beam_search(model, src, src_mask, beam=0)
    with pytest.raises(ValueError, match="src_mask"):
        greedy(model, src, src_mask[:, :-1])


# ---------------------------------------------------------------------------------------------
# Text in, text out


def sentence(ids: list[int]) -> str:
    return TOKENIZER.decode(ids)


@pytest.mark.parametrize("beam", [1, 5])
def test_translate_texts_keeps_order_and_handles_empty_and_unknown_input(beam):
    model, _ = trained("copy")
    known = [sentence(s) for s in held_out("copy", 6, seed=21)]
    inputs = [known[0], "", known[1], "   ", known[2], "zebra ant 你好 bee cat", known[3], known[4], "", known[5]]
    outputs = translate_texts(model, TOKENIZER, inputs, beam=beam, batch_size=3)
    assert len(outputs) == len(inputs)
    assert all(isinstance(text, str) for text in outputs)
    for text, out in zip(inputs, outputs):
        if text in known:
            assert out == text  # a copy, in the input's place
        elif not text.strip():
            assert out == ""
    assert translate_texts(model, TOKENIZER, inputs[::-1], beam=beam, batch_size=4) == outputs[::-1]


def test_translate_texts_does_not_run_the_model_on_empty_sentences(monkeypatch):
    model = random_model()
    batches = []
    encode = model.encode

    def recording_encode(src, src_mask=None):
        batches.append(src.size(0))
        return encode(src, src_mask)

    monkeypatch.setattr(model, "encode", recording_encode)
    assert translate_texts(model, TOKENIZER, ["", "  ", ""]) == ["", "", ""]
    assert batches == []
    outputs = translate_texts(model, TOKENIZER, ["", "ant bee", ""], beam=2)
    assert outputs[0] == outputs[2] == "" and batches == [1]


def test_translate_texts_truncates_long_sentences_with_one_warning():
    model, _ = trained("copy")
    long = " ".join(WORDS * 2)  # 32 words: more than block_size - 1 = 23
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = translate_texts(model, TOKENIZER, [long, "ant bee cat", long])
    assert len(caught) == 1 and "2 of 3" in str(caught[0].message)
    assert outputs[1] == "ant bee cat"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        translate_texts(model, TOKENIZER, ["ant bee cat"])  # nothing to warn about
