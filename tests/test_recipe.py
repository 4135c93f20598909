"""The speedrun options (relu2, embed_norm, zero_init) and the warmup-stable-decay schedule, each against
a plain re-computation; saved, loaded and refused by export like the other options."""

import dataclasses
import json
import math

import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.checkpoint import CheckpointError, export_hf, load, save
from glassformer.data.tokenizers import CharTokenizer
from glassformer.model.config import PRESETS, config_from_dict
from glassformer.model.layers import FeedForward
from glassformer.training.lm import DEFAULT_PRESET
from glassformer.training.trainer import TrainConfig, learning_rate

OPTIONS = dict(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16, d_ff=40, bias=False, norm="rmsnorm",
               position="rope", activation="relu2", embed_norm=True, zero_init=True, tie_weights=False)


def test_wsd_schedule_by_hand():
    cfg = TrainConfig(lr_schedule="wsd", learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=100,
                      decay_fraction=0.5)
    # warmup as the cosine schedule's: (it + 1) / (warmup + 1) of the peak; flat to iteration 50;
    # then a straight line from 1e-3 at 50 to 1e-4 at 100; 1e-4 after.
    expected = {0: 1e-3 / 11, 9: 1e-3 * 10 / 11, 10: 1e-3, 30: 1e-3, 50: 1e-3, 60: 1e-3 - 9e-4 * 10 / 50,
                75: 5.5e-4, 99: 1e-3 - 9e-4 * 49 / 50, 100: 1e-4, 150: 1e-4}
    for it, lr in expected.items():
        assert learning_rate(it, cfg, 0) == pytest.approx(lr, rel=1e-12), it
    with pytest.raises(ValueError, match="lr_schedule must be one of cosine, wsd"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="decay_fraction must be in"):
        TrainConfig(decay_fraction=1.5)


def test_relu2_feed_forward_is_down_of_relu_squared():
    torch.manual_seed(0)
    ffn = FeedForward(8, 20, "relu2", bias=True)
    x = torch.randn(3, 5, 8)
    hidden = x @ ffn.up.weight.T + ffn.up.bias
    by_hand = torch.where(hidden > 0, hidden * hidden, torch.zeros(())) @ ffn.down.weight.T + ffn.down.bias
    torch.testing.assert_close(ffn(x), by_hand)


def test_embed_norm_is_an_rms_norm_of_the_embeddings():
    torch.manual_seed(1)
    model = GPT(GPTConfig(**{**OPTIONS, "zero_init": False}))
    with torch.no_grad():
        model.embed_norm.weight.uniform_(0.5, 1.5)  # a gain that is not all ones
    ids = torch.randint(0, 30, (2, 7))
    e = model.tok_emb.weight[ids]
    by_hand = e / torch.sqrt((e * e).mean(-1, keepdim=True) + model.config.norm_eps) * model.embed_norm.weight
    torch.testing.assert_close(model.embed(ids)[0], by_hand)


def test_zero_init_starts_every_block_as_the_identity_and_the_logits_at_zero():
    torch.manual_seed(2)
    model = GPT(GPTConfig(**OPTIONS))
    for i in range(2):
        assert not model.blocks[i].self_attn.o_proj.weight.any() and not model.blocks[i].ffn.down.weight.any()
    assert not model.lm_head.weight.any() and model.tok_emb.weight.std() > 0.01  # the embedding is not zeroed
    ids = torch.randint(0, 30, (2, 9))
    x, rotary = model.embed(ids)
    assert torch.equal(model.blocks[0](x, is_causal=True, rotary=rotary), x)  # both sublayers add 0
    assert not model(ids).any()  # uniform prediction: the first loss is ln V
    with pytest.raises(ValueError, match="zero_init needs tie_weights false"):
        GPTConfig(**{**OPTIONS, "tie_weights": True})


def test_options_save_load_and_export_refusal(tmp_path):
    torch.manual_seed(3)
    model = GPT(GPTConfig(**{**OPTIONS, "zero_init": False, "bigram": True})).eval()
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,")
    save(model, tmp_path / "m", tokenizer=tok)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert config_from_dict("gpt", saved) == model.config  # every field round-trips through the dataclass
    loaded, _ = load(tmp_path / "m")
    ids = torch.randint(0, 30, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="embed_norm=true"):
        export_hf(model, tmp_path / "hf")
    plain = GPT(dataclasses.replace(model.config, norm="layernorm", position="learned", embed_norm=False,
                                    bigram=False))
    with pytest.raises(CheckpointError, match="activation=relu2"):
        export_hf(plain, tmp_path / "hf2")


def test_the_default_preset_is_the_speedrun_and_its_first_loss_is_uniform():
    preset = PRESETS[DEFAULT_PRESET]
    assert DEFAULT_PRESET == "shakespeare-char-speedrun" and "shakespeare-char-fast" in PRESETS
    model = GPT(dataclasses.replace(preset.model, vocab_size=65))
    ids = torch.randint(0, 65, (2, 64))
    logits = model(ids)
    if preset.model.zero_init:
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten())
        assert loss.item() == pytest.approx(math.log(65), rel=1e-6)
    TrainConfig(**preset.train)  # its training settings are valid


def test_attribution_sums_to_the_logit_with_the_embedding_norm():
    from glassformer.observe.analysis import attribute

    torch.manual_seed(4)
    model = GPT(GPTConfig(**{**OPTIONS, "zero_init": False})).eval()
    ids = torch.randint(0, 30, (1, 9))
    result = attribute(model, ids, 5)
    with torch.no_grad():
        assert result.logit == pytest.approx(float(model(ids)[0, -1, 5]), abs=1e-6)
    assert set(result.remaining) == {"normed_embedding"}  # the normed sum is where the stream starts
    assert result.total() == pytest.approx(result.logit, abs=1e-4)


BIGRAM = dict(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=8, d_ff=12, bias=False, norm="rmsnorm",
              position="rope", activation="swiglu", bigram=True)


def test_bigram_adds_the_row_of_each_pair_and_continues_through_the_cache():
    from glassformer.model.gpt import bigram_ids

    torch.manual_seed(5)
    model = GPT(GPTConfig(**BIGRAM)).eval()
    V = 11
    assert model.bigram_emb.weight.shape == (V * (V + 1), 8)
    tables = sum(m.weight.numel() for m in (model.tok_emb, model.bigram_emb) + (
        (model.pos_emb,) if isinstance(model.pos_emb, torch.nn.Embedding) else ()))
    assert model.num_params(embeddings=False) == model.num_params() - tables  # the pair table is an embedding too
    ids = torch.randint(0, V, (3, 9))
    by_hand = torch.empty(3, 9, 8)
    for b in range(3):
        for t in range(9):
            before = V if t == 0 else int(ids[b, t - 1])  # V: no previous token, a row of its own
            by_hand[b, t] = model.tok_emb.weight[ids[b, t]] + model.bigram_emb.weight[before * V + ids[b, t]]
    torch.testing.assert_close(model.embed(ids)[0], by_hand, rtol=0, atol=0)
    assert torch.equal(bigram_ids(ids[:, 4:], V, ids[:, 3]), bigram_ids(ids, V)[:, 4:])
    with torch.no_grad():  # the cache hands the previous token across calls; beam search's reordering too
        whole = model(ids)
        cache = model.new_cache()
        parts = [model(ids[:, :4], cache), model(ids[:, 4:5], cache)]
        cache.keep(torch.tensor([2, 0, 1]))
        parts.append(model(ids[[2, 0, 1], 5:], cache))
    torch.testing.assert_close(torch.cat(parts[:2], 1), whole[:, :5], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts[2], whole[[2, 0, 1], 5:], rtol=1e-5, atol=1e-6)


def test_bigram_needs_a_small_vocabulary_and_is_refused_by_export(tmp_path):
    with pytest.raises(ValueError, match="bigram needs a vocabulary of at most 1024 tokens.*vocab_size is 2000"):
        GPTConfig(**{**BIGRAM, "vocab_size": 2000})
    torch.manual_seed(6)
    for options in (dict(activation="gelu", norm="layernorm", position="learned"), {}):  # GPT-2's layout, Llama's
        model = GPT(GPTConfig(**{**BIGRAM, **options}))
        with pytest.raises(CheckpointError, match=r"not GPT-2-compatible: (.*; )?bigram=true .*Llama/Qwen-compatible"
                                                  r": .*bigram=true \(no embedding of token pairs\)"):
            export_hf(model, tmp_path / "hf")
        assert not (tmp_path / "hf").exists()


def test_attribution_counts_the_pair_embedding():
    from glassformer.observe.analysis import attribute

    torch.manual_seed(7)
    model = GPT(GPTConfig(**BIGRAM)).eval()
    ids = torch.randint(0, 11, (1, 7))
    result = attribute(model, ids, 3)
    assert set(result.remaining) == {"token_embedding", "pair_embedding"}
    with torch.no_grad():
        pair = model.bigram_emb.weight[int(ids[0, -2]) * 11 + int(ids[0, -1])]
    assert result.remaining["pair_embedding"] != 0 and pair.abs().sum() > 0
    assert result.total() == pytest.approx(result.logit, abs=1e-4)


@pytest.mark.parametrize("options", [{"embed_norm": True}, {"embed_norm": False}], ids=["normed", "pairs"])
def test_attribution_prints_every_remaining_term_in_both_languages(options):
    """Each term attribute can leave (here the normed sum, or the token and pair embeddings) has a
    label in English and Chinese: an unlabelled one was an internal error in `explain --attribute`."""
    import io

    from rich.console import Console

    from glassformer.explain.render.analysis_view import print_attribution
    from glassformer.observe.analysis import attribute

    torch.manual_seed(8)
    model = GPT(GPTConfig(**{**BIGRAM, **options})).eval()
    tok = CharTokenizer.train("abcdefghijk")
    result = attribute(model, torch.tensor([[1, 2, 3, 4]]), 5)
    for lang, label in (("en", "pair embedding"), ("zh", "词对嵌入")):
        console = Console(record=True, width=120, file=io.StringIO())
        print_attribution(result, tok, lang, console=console)
        text = console.export_text()
        assert (label in text) == (not options["embed_norm"]), text
        assert not any(key in text for key in result.remaining), text  # labels, not the keys
