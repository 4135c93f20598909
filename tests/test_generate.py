"""Generation: greedy against a hand-written argmax loop, KV cache against recomputation
(across block_size), seeded sampling, top-k/top-p filters, eos and stop strings, long
prompts, argument checks, and streamed text against a one-shot decode."""

import warnings

import pytest
import torch
from conftest import BLOCK

from glassformer.data.tokenizers import BPETokenizer, CharTokenizer
from glassformer.generation.sampling import (
    TextStream,
    filter_top_k,
    filter_top_p,
    generate,
    next_token,
    stream,
    trim_at_stop,
)

REPLACEMENT = "\ufffd"  # what decode gives for half a UTF-8 character


def argmax_reference(model, ids, n):
    """nanoGPT's loop, written out: crop to the block, take the last position's argmax, append.

    Checks that no step is a near tie, where float rounding (another CPU, thread count or kernel)
    rather than the model would pick the token; the smallest gap in these tests is 5e-3.
    """
    with torch.no_grad():
        for _ in range(n):
            logits = model(ids[:, -BLOCK:])[:, -1]  # (B, V)
            best_two = logits.topk(2, dim=-1).values  # (B, 2)
            assert (best_two[:, 0] - best_two[:, 1]).min() > 1e-4, "a near tie: choose another seed"
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids.tolist()


# ---------------------------------------------------------------------------------------------
# Greedy decoding and the KV cache


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_and_top_k_1_match_argmax_loop_past_block_size(B, use_cache, tiny_gpt, ids):
    model = tiny_gpt()
    x = ids(B, 5)
    expected = argmax_reference(model, x, 40)  # 45 tokens: well past block_size 16
    greedy = generate(model, x, 40, temperature=0, use_cache=use_cache)
    top1 = generate(model, x, 40, top_k=1, seed=3, use_cache=use_cache)
    assert greedy == expected
    assert top1 == expected
    assert len(greedy[0]) == 45


def test_stream_accepts_list_and_1d_tensor_as_one_row(tiny_gpt, ids):
    model = tiny_gpt()
    x = ids(1, 4)
    expected = argmax_reference(model, x, 6)
    assert generate(model, x[0].tolist(), 6, temperature=0) == expected
    assert generate(model, x[0], 6, temperature=0) == expected
    steps = list(stream(model, x[0].tolist(), 6, temperature=0))
    assert [t.shape for t in steps] == [torch.Size([1])] * 6
    assert all(t.dtype == torch.long for t in steps)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("sampling", [dict(temperature=0),
                                      dict(temperature=1.0, top_k=10, seed=7),
                                      dict(temperature=0.8, top_p=0.9, seed=11),
                                      dict(temperature=1.3, top_k=20, top_p=0.95, seed=5)])
def test_kv_cache_matches_recomputation_across_block_size(position, sampling, tiny_gpt, ids):
    model = tiny_gpt(position=position)
    x = ids(3, 6)
    cached = generate(model, x, 40, use_cache=True, **sampling)
    recomputed = generate(model, x, 40, use_cache=False, **sampling)
    assert cached == recomputed
    assert len(cached[0]) == 46


def test_cache_prefills_once_then_runs_one_token_per_step_until_the_window_slides(tiny_gpt, ids):
    model = tiny_gpt()
    lengths = []

    def record_length(module, args, output):
        lengths.append(args[0].size(1))  # ids (B, T) reaching the embedding

    hook = model.tok_emb.register_forward_hook(record_length)
    list(stream(model, ids(1, 5), 20, temperature=0))
    hook.remove()
    # Prompt (5) once, then single tokens up to 16 positions, then the full window each step.
    assert lengths == [5] + [1] * 11 + [16] * 8


# ---------------------------------------------------------------------------------------------
# Seeds and randomness


def test_same_seed_same_output_different_seed_different_output(tiny_gpt, ids):
    model = tiny_gpt()
    x = ids(2, 4)
    a = generate(model, x, 30, temperature=1.0, seed=1)
    b = generate(model, x, 30, temperature=1.0, seed=1)
    c = generate(model, x, 30, temperature=1.0, seed=2)
    assert a == b
    assert a != c


def test_global_rng_untouched(tiny_gpt, ids):
    model = tiny_gpt()
    state = torch.get_rng_state()
    generate(model, ids(2, 4), 20, temperature=1.0, top_p=0.9, seed=3)
    generate(model, ids(2, 4), 5, temperature=1.0)  # seed None: fresh entropy, still not the global RNG
    assert torch.equal(torch.get_rng_state(), state)


def test_training_flag_is_restored_and_dropout_is_off(tiny_gpt, ids):
    model = tiny_gpt(dropout=0.5).train()
    model.blocks[0].eval()  # a mixed state, restored module by module
    x = ids(1, 4)
    steps = stream(model, x, 8, temperature=0)
    first = next(steps)
    assert model.training and not model.blocks[0].training and model.blocks[1].training
    rest = list(steps)
    assert model.training and not model.blocks[0].training
    reference = argmax_reference(tiny_gpt(dropout=0.5).eval(), x, 8)  # same weights, no dropout
    assert x[0].tolist() + [first.item()] + [t.item() for t in rest] == reference[0]


# ---------------------------------------------------------------------------------------------
# Filters and sampling


def test_top_p_keeps_smallest_set_reaching_p():
    # Row 0 probabilities .5 .2 .15 .1 .05 at ids 3 0 4 1 2; row 1 the same values, other ids.
    probs = torch.tensor([[0.2, 0.1, 0.05, 0.5, 0.15],
                          [0.05, 0.15, 0.5, 0.1, 0.2]])
    logits = probs.log()
    for p, kept_row0, kept_row1 in [(0.3, {3}, {2}), (0.6, {3, 0}, {2, 4}), (0.8, {3, 0, 4}, {2, 4, 1}),
                                    (0.9, {3, 0, 4, 1}, {2, 4, 1, 3}), (1.0, set(range(5)), set(range(5)))]:
        filtered = filter_top_p(logits, p)
        kept = [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in filtered]
        assert kept == [kept_row0, kept_row1], p
        finite = torch.isfinite(filtered)
        assert torch.equal(filtered[finite], logits[finite])  # kept logits unchanged


def test_top_p_always_keeps_the_most_likely_token():
    logits = torch.tensor([[5.0, 1.0, 0.0]])
    filtered = filter_top_p(logits, 1e-6)
    assert torch.isfinite(filtered).tolist() == [[True, False, False]]


def test_top_k_keeps_exactly_k_largest():
    logits = torch.tensor([[0.3, -1.0, 2.0, 2.0, 0.1, 5.0],
                           [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    filtered = filter_top_k(logits, 3)
    assert torch.isfinite(filtered).sum(-1).tolist() == [3, 3]
    assert torch.isfinite(filtered[0]).tolist() == [False, False, True, True, False, True]
    assert torch.isfinite(filter_top_k(logits, 100)).all()  # k above V keeps everything


def test_sampling_with_top_k_3_only_yields_the_top_3():
    torch.manual_seed(0)
    logits = torch.randn(1, 50).expand(2000, 50)  # 2000 draws from one distribution
    # At temperature 2 the top three have probabilities 0.52, 0.24, 0.24: one of them missing from
    # 2000 draws has a chance of about 3 * 0.76^2000, nil.
    top3 = set(logits[0].topk(3).indices.tolist())
    drawn = next_token(logits, temperature=2.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == top3  # all three appear, nothing else


def test_greedy_next_token_is_argmax():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(next_token(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(next_token(logits, top_k=1), logits.argmax(-1))


# ---------------------------------------------------------------------------------------------
# eos and stop strings


def first_index(values, value):
    return values.index(value) if value in values else None


def test_eos_finishes_a_row_and_stream_stops_when_all_are_finished(tiny_gpt, ids):
    model = tiny_gpt(vocab_size=8)  # small vocabulary: eos comes up soon in every row
    x = ids(3, 3, V=8)
    free = generate(model, x, 30, seed=4)
    new = [row[3:] for row in free]
    eos = new[0][4]
    cuts = [first_index(row, eos) for row in new]
    assert all(cut is not None for cut in cuts)
    with_eos = generate(model, x, 30, seed=4, eos_id=eos)
    assert with_eos == [row[:3 + cut] for row, cut in zip(free, cuts)]
    steps = torch.stack(list(stream(model, x, 30, seed=4, eos_id=eos)), dim=1)  # (B, steps)
    assert steps.size(1) == max(cuts) + 1  # ended once the last row produced eos
    for row, cut in enumerate(cuts):
        assert steps[row, :cut].tolist() == new[row][:cut]
        assert (steps[row, cut:] == eos).all()  # finished rows keep yielding eos


def test_stop_strings_cut_after_the_completing_token(tiny_gpt):
    text = "the cat sat on the mat.\nabc xyz\n"
    tok = CharTokenizer.train(text)
    model = tiny_gpt(vocab_size=tok.vocab_size)
    x = tok.encode("the ")
    free = generate(model, x, 40, seed=2)[0]
    generated = tok.decode(free[len(x):])
    stop = generated[20:22]
    cut = generated.find(stop) + len(stop)  # one character per token
    out = generate(model, x, 40, seed=2, stop=[stop], tokenizer=tok)[0]
    assert out == free[: len(x) + cut]
    assert trim_at_stop(tok.decode(out[len(x):]), [stop]) == generated[: generated.find(stop)]
    # The earliest of several stop strings wins; a row without one runs to the end.
    late = generated[30:33]
    assert generate(model, x, 40, seed=2, stop=[late, stop], tokenizer=tok)[0] == out
    batch = torch.tensor([x, x])
    rows = generate(model, batch, 40, seed=2, stop=["never there"], tokenizer=tok)
    assert [len(r) for r in rows] == [len(x) + 40] * 2


def test_trim_at_stop():
    assert trim_at_stop("hello\n\nworld END more", ["END", "\n\n"]) == "hello"
    assert trim_at_stop("no stop here", ["END"]) == "no stop here"
    assert trim_at_stop("a.b", ".") == "a"
    assert trim_at_stop("abc", None) == "abc"


# ---------------------------------------------------------------------------------------------
# Prompts and arguments


def test_long_prompt_warns_and_keeps_last_block_size_tokens(tiny_gpt, ids):
    model = tiny_gpt()
    x = ids(2, BLOCK + 4)
    with pytest.warns(UserWarning, match="first 4 tokens were dropped"):
        out = generate(model, x, 10, temperature=0.9, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cropped = generate(model, x[:, -BLOCK:], 10, temperature=0.9, seed=1)
    assert [row[:BLOCK + 4] for row in out] == x.tolist()  # the full prompt is returned
    assert [row[BLOCK + 4:] for row in out] == [row[BLOCK:] for row in cropped]


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.1), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(eos_id=50), "eos_id"),
])
def test_bad_arguments_raise(kwargs, message, tiny_gpt):
    model = tiny_gpt()
    args = dict(max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        stream(model, [1, 2], **args)  # raised at the call, before the first step
    with pytest.raises(ValueError, match=message):
        generate(model, [1, 2], **args)


def test_empty_prompt_and_stop_without_tokenizer_raise(tiny_gpt):
    model = tiny_gpt()
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, [], 5)
    with pytest.raises(ValueError, match="empty prompt"):
        stream(model, torch.zeros(2, 0, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, [1], 5, stop=["x"])
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, [1], 5, stop=[""], tokenizer=CharTokenizer.train("ab"))


def test_zero_new_tokens_returns_the_ids(tiny_gpt):
    model = tiny_gpt()
    assert generate(model, [4, 5, 6], 0) == [[4, 5, 6]]
    assert list(stream(model, [4, 5, 6], 0)) == []


# ---------------------------------------------------------------------------------------------
# Streamed text


def test_text_stream_with_bpe_matches_one_shot_decode():
    text = "Hello, world! 你好，世界。 Emoji: 🙂🚀 mixed 中文 and English. " * 4
    tok = BPETokenizer.train(text, vocab_size=300)
    ids = tok.encode("你好 🚀 world 🙂 世界!")
    # Byte pieces split characters: some pushes must be held back for the test to mean anything.
    assert any(REPLACEMENT in tok.decode(ids[:n]) for n in range(1, len(ids)))
    out = TextStream(tok)
    pieces = [out.push(i) for i in ids]
    assert "".join(pieces) + out.flush() == tok.decode(ids)
    assert all(REPLACEMENT not in piece for piece in pieces)


def test_text_stream_on_generated_ids_and_tensor_ids(tiny_gpt):
    tok = BPETokenizer.train("猫が好き 😺 cats " * 10, vocab_size=300)
    model = tiny_gpt(vocab_size=tok.vocab_size)
    out = TextStream(tok)
    ids, pieces = [], []
    for token in stream(model, tok.encode("猫"), 30, seed=0):
        ids.append(token.item())
        pieces.append(out.push(token[0]))
    assert "".join(pieces) + out.flush() == tok.decode(ids)



def test_partial_stop_finds_the_longest_beginning_of_a_stop_string():
    from glassformer.generation.sampling import partial_stop

    assert partial_stop("That th", ["the"]) == 2
    assert partial_stop("That t", ["the", "tea"]) == 1
    assert partial_stop("That", ["the"]) == 1  # "t" may begin "the"
    assert partial_stop("Thaw", ["the"]) == 0
    assert partial_stop("xab", ["abc", "bz"]) == 2  # the longer candidate wins
    assert partial_stop("", ["the"]) == 0
