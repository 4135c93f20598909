"""explain shapes: the table computed from a config, held to real models' parameters and tensors."""

import dataclasses
import io
import re
from collections import defaultdict

import pytest
import torch
from rich.console import Console

from glassformer.cli import main
from glassformer.explain.shapes import config_shapes, parameter_total, print_shapes, shapes
from glassformer.model.config import PRESETS, GPTConfig
from glassformer.model.gpt import GPT
from glassformer.model.seq2seq import Seq2Seq

SIZES = {"B": 2, "t": 5, "s": 7}  # s != t, so a (B, h, t, s) mix-up cannot pass


def _row(rows, name):
    return next(r for r in rows if r.kind == "activation" and r.name == name)


def test_gpt2_shapes_as_the_article_lists_them():
    rows = shapes("gpt2")
    flow = {r.name: r for r in rows if r.kind == "activation"}
    assert flow["ids"].shape == ("B", "t")
    assert flow["tok_emb(ids)"].shape == ("B", "t", 768)
    assert flow["positions"].shape == ("t", 768)
    assert flow["Q, K, V"].shape == ("B", "t", 768) and flow["Q, K, V"].repeat == 12
    assert flow["Q, K, V heads"].shape == ("B", 12, "t", 64)
    assert flow["scores"].shape == ("B", 12, "t", "t")
    assert flow["merged"].shape == ("B", "t", 768)
    assert flow["up"].shape == ("B", "t", 3072)
    assert flow["down"].shape == ("B", "t", 768)
    assert flow["logits"].shape == ("B", "t", 50257)
    assert flow["logits[:, -1]"].shape == ("B", 50257)
    # The article's order: embeddings, then the block, then the head.
    names = [r.name for r in rows if r.kind == "activation"]
    assert names.index("Q, K, V") < names.index("scores") < names.index("merged") < names.index("up")
    assert names[-3:] == ["final_norm", "logits", "logits[:, -1]"]


def _expand(rows):
    """{parameter name: shape} with every "*" replaced by each layer index; tied weights left out."""
    out = {}
    for r in rows:
        if r.kind == "weight" and not r.tied_to:
            for i in range(r.repeat):
                out[r.name.replace("*", str(i))] = tuple(r.shape)
    return out


def _model(config):
    return GPT(config) if isinstance(config, GPTConfig) else Seq2Seq(config)


def _check_weights(config, model):
    rows = config_shapes(config)
    real = {name: tuple(p.shape) for name, p in model.named_parameters()}  # tied parameters once
    assert _expand(rows) == real
    count, symbolic = parameter_total(rows)
    assert not symbolic and count == sum(p.numel() for p in model.parameters())
    for r in rows:
        if r.tied_to:
            assert model.get_submodule(r.name.rsplit(".", 1)[0]).weight is model.get_parameter(r.tied_to)


def test_gpt2_parameter_total_is_a_built_models():
    config = PRESETS["gpt2"].model
    model = GPT(config)
    _check_weights(config, model)
    assert parameter_total(shapes("gpt2")) == (124_439_808, {})  # GPT-2 small with its head tied


def _tiny(config):
    """The preset's options (norm, activation, positions, biases, tying) at a size built in milliseconds."""
    if isinstance(config, GPTConfig):
        return dataclasses.replace(config, n_embd=config.n_head * 4, d_ff=40 if config.d_ff else None, n_layer=2,
                                   block_size=16, vocab_size=23)
    width = config.d_model if config.d_head else config.n_head * 4
    vocab = {"src_vocab_size": 23, "tgt_vocab_size": 23 if config.shared_vocab else 29}
    return dataclasses.replace(config, d_model=width, d_ff=40, n_encoder_layers=2, n_decoder_layers=2,
                               block_size=16, **vocab)


VARIANTS = {
    **{name: _tiny(p.model) for name, p in PRESETS.items()},
    "gpt-untied-segments-classes": _tiny(dataclasses.replace(PRESETS["gpt-tiny"].model, tie_weights=False,
                                                             n_segments=2, n_classes=3)),
    "gpt-post-ln-sinusoidal": _tiny(dataclasses.replace(PRESETS["gpt-tiny"].model, norm_position="post",
                                                        position="sinusoidal", bias=False)),
    "seq2seq-shared-untied-rope-swiglu": dataclasses.replace(
        _tiny(PRESETS["multi30k"].model), shared_vocab=True, tie_output=False, position="rope",
        activation="swiglu", norm="rmsnorm", tgt_vocab_size=23),
    "seq2seq-learned-no-bias": dataclasses.replace(_tiny(PRESETS["transformer-base"].model), position="learned",
                                                   bias=False, final_norm=True),
}


def _spec(spec: str):
    """'path#K:inN' -> (path, call index or None, input index or None)."""
    m = re.fullmatch(r"([\w.*]+?)(?:#(-?\d+))?(?::in(\d+))?", spec)
    path, call, arg = m.groups()
    return path, None if call is None else int(call), None if arg is None else int(arg)


def _run_with_hooks(model, config, rows):
    """Runs the model once, recording the shapes every module named in the rows saw, call by call."""
    seen = defaultdict(list)
    paths = {_spec(s)[0].replace("*", str(i)) for r in rows for s in r.modules for i in range(r.repeat)}

    def hook(path):
        def record(module, args, out):
            first = out[0] if isinstance(out, tuple) else out  # RoPE: (cos, sin)
            seen[path].append(([tuple(a.shape) if torch.is_tensor(a) else None for a in args], tuple(first.shape)))
        return record

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    B, t, s = SIZES["B"], SIZES["t"], SIZES["s"]
    with torch.no_grad():
        if isinstance(config, GPTConfig):
            segments = torch.zeros(B, t, dtype=torch.long) if config.n_segments else None
            out = model(torch.randint(0, config.vocab_size, (B, t)), segment_ids=segments)
        else:
            src, tgt = torch.randint(3, config.src_vocab_size, (B, s)), torch.randint(3, config.tgt_vocab_size, (B, t))
            out = model(src, tgt)
    for h in handles:
        h.remove()
    return seen, out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_table_matches_a_real_model(name):
    config = VARIANTS[name]
    torch.manual_seed(0)
    model = _model(config).eval()
    _check_weights(config, model)
    rows = config_shapes(config)
    seen, logits = _run_with_hooks(model, config, rows)
    checked = 0
    for r in rows:
        if r.kind != "activation":
            continue
        expected = tuple(SIZES.get(d, d) for d in r.shape)
        for spec in r.modules:
            path, call, arg = _spec(spec)
            for i in range(r.repeat):
                calls = seen[path.replace("*", str(i))]
                assert calls, f"{r.name}: {path} was never called"
                for args, out in calls if call is None else [calls[call]]:
                    assert (out if arg is None else args[arg]) == expected, (r.name, spec, i)
                    checked += 1
    assert checked > 20
    last = _row(rows, "logits[:, -1]")
    vocab = config.vocab_size if isinstance(config, GPTConfig) else config.tgt_vocab_size
    assert last.shape == ("B", vocab) and _row(rows, "logits").shape == ("B", "t", vocab)
    assert tuple(logits.shape) == (SIZES["B"], SIZES["t"], vocab)
    if isinstance(config, GPTConfig) and not config.n_segments:
        ids = torch.randint(0, vocab, (SIZES["B"], SIZES["t"]))
        assert tuple(model.next_logits(ids).shape) == (SIZES["B"], vocab)


def test_seq2seq_has_cross_attention_over_the_source():
    rows = shapes("transformer-base")
    cross = [r for r in rows if r.kind == "activation" and r.key == "cross_scores"]
    assert len(cross) == 1 and cross[0].shape == ("B", 8, "t", "s") and cross[0].repeat == 6
    assert _row(rows, "K, V").shape == ("B", "s", 512)
    assert _row(rows, "logits").shape == ("B", "t", "V_tgt")  # vocabulary 0: left to the tokenizer


# Presets that leave the vocabulary to the tokenizer and are small enough to build in a fast test at full
# size (transformer-base, 44M parameters, is checked at a tiny size above).
SYMBOLIC = [n for n, p in PRESETS.items() if n != "gpt2" and parameter_total(shapes(n))[0] < 15_000_000]


@pytest.mark.parametrize("name", SYMBOLIC)
def test_a_vocabulary_left_to_the_tokenizer_counts_symbolically(name):
    config = PRESETS[name].model
    count, symbolic = parameter_total(shapes(name))
    sizes = {"V": 97, "V_src": 97, "V_tgt": 101, "V·(V+1)": 97 * 98}  # the last: bigram's table of pairs
    if isinstance(config, GPTConfig):
        built = dataclasses.replace(config, vocab_size=97)
    else:
        built = dataclasses.replace(config, src_vocab_size=97, tgt_vocab_size=101)
    assert set(symbolic) <= set(sizes) and symbolic
    model = _model(built)
    assert count + sum(k * sizes[s] for s, k in symbolic.items()) == sum(p.numel() for p in model.parameters())


def _render(preset, lang):
    console = Console(record=True, width=200, file=io.StringIO())
    print_shapes(preset, lang, console=console)
    return console.export_text()


def test_print_shapes_in_both_languages():
    en = _render("gpt2", "en")
    for text in ("(B, 12, t, t)", "(B, 12, t, 64)", "(B, t, 3072)", "(B, 50257)", "124,439,808", "Data flow"):
        assert text in en
    zh = _render("multi30k", "zh")
    for text in ("数据流", "权重", "交叉注意力", "(B, 4, t, s)", "V_tgt", "合计"):
        assert text in zh
    with pytest.raises(ValueError):
        print_shapes("gpt2", "fr", console=Console(file=io.StringIO()))
    with pytest.raises(ValueError):
        shapes("no-such-preset")


def test_cli_explain_shapes(capsys):
    assert main(["explain", "shapes", "--preset", "shakespeare-char-fast", "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "(B, t, 344)" in out and "SwiGLU" in out and "数据流" in out
    assert main(["explain", "shapes"]) == 0  # gpt2 by default
    assert "50257" in capsys.readouterr().out
    assert main(["explain", "shapes", "--preset", "nope"]) != 0
    assert "nope" in capsys.readouterr().err


def test_the_weights_of_grouped_query_attention_and_the_recipe_options():
    """K and V have n_kv_head heads, Q/K/V-only biases, per-head q/k norms, a norm after the embeddings."""
    config = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, d_head=12,
                       bias=False, qkv_bias=True, qk_norm=True, embed_norm=True, norm="rmsnorm",
                       activation="swiglu", position="rope", tie_weights=False)
    _check_weights(config, GPT(config))
