"""Figures: loss curves and attention heatmaps, drawn headless into real PNG files."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from glassformer import GPT, PRESETS, GPTConfig, Seq2Seq
from glassformer.data.tokenizers import CharTokenizer, WordTokenizer
from glassformer.plots import MAX_TICK_TOKENS, attention_figure, attention_maps, plot_attention, plot_loss

PNG = b"\x89PNG\r\n\x1a\n"


def heatmap_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]  # the colour bar draws no image


def assert_real_png(path, min_bytes=10_000):
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > min_bytes
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.05  # not one flat colour


@pytest.fixture(scope="module")
def gpt():
    tok = CharTokenizer.train("hello world, how are you?\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=3, n_embd=24)).eval()
    return model, tok


@pytest.fixture(scope="module")
def seq2seq():
    tok = WordTokenizer.train("when you play the game of thrones\nyou win or you die")
    cfg = dataclasses.replace(PRESETS["walkthrough"].model, src_vocab_size=tok.vocab_size,
                              tgt_vocab_size=tok.vocab_size, shared_vocab=True, n_head=2, n_encoder_layers=2,
                              n_decoder_layers=1, block_size=8, pad_id=tok.pad_id, bos_id=tok.bos_id,
                              eos_id=tok.eos_id)
    torch.manual_seed(0)
    return Seq2Seq(cfg).eval(), tok


def test_gpt_attention_png(gpt, tmp_path):
    model, tok = gpt
    text = "hello world,\nhow are you?"
    maps = attention_maps(model, tok, text)
    assert [m.name for m in maps] == ["layer 1", "layer 2"]
    for m in maps:
        assert m.probs.shape == (3, len(text), len(text))
        np.testing.assert_allclose(m.probs.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.triu(m.probs[0], k=1) == 0)  # causal: nothing from the future
        assert m.queries == [tok.token(i) for i in tok.encode(text)]
    fig = attention_figure(maps)
    axes = heatmap_axes(fig)
    assert len(axes) == 2 * 3
    assert [t.get_text() for t in axes[0].get_xticklabels()][:6] == list("hello") + ["␣"]
    path = plot_attention(model, tok, text, tmp_path / "figs" / "attention.png")
    assert path == tmp_path / "figs" / "attention.png"
    assert_real_png(path)


def test_seq2seq_attention_png(seq2seq, tmp_path):
    model, tok = seq2seq
    maps = attention_maps(model, tok, "when you play the game")
    assert [m.name for m in maps] == ["encoder 1 self-attention", "encoder 2 self-attention",
                                      "decoder 1 masked self-attention", "decoder 1 cross-attention"]
    src, tgt = maps[0].keys, maps[2].keys
    assert src[-1] == tok.token(tok.eos_id) and tgt[0] == tok.token(tok.bos_id)
    assert maps[3].probs.shape == (2, len(tgt), len(src))  # target queries attend to source keys
    assert maps[3].queries == tgt and maps[3].keys == src
    assert len(heatmap_axes(attention_figure(maps))) == (2 + 2 * 1) * 2
    assert_real_png(plot_attention(model, tok, "when you play the game", tmp_path / "attention.png"))


def test_long_text_drops_the_token_labels(gpt):
    model, tok = gpt
    text = ("hello how are you " * 3)[: MAX_TICK_TOKENS + 4]
    axes = heatmap_axes(attention_figure(attention_maps(model, tok, text)))
    assert len(axes[0].get_xticks()) == 0 and len(axes[0].get_yticks()) == 0


def test_plot_loss(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"iter": i, "train_loss": 3.0 / (i + 1)} for i in range(20)] + [{"iter": 19, "val_loss": 0.4}]
    log.write_text("\n".join(json.dumps(r) for r in records) + '\n{"iter": 2', encoding="utf-8")
    assert_real_png(plot_loss(log, tmp_path / "loss.png"), min_bytes=5_000)
    log.write_text('{"iter": 0}\n', encoding="utf-8")
    with pytest.raises(ValueError):
        plot_loss(log, tmp_path / "empty.png")


def test_figures_and_the_walkthrough_do_not_import_training():
    import subprocess
    import sys

    code = ("import sys, glassformer.plots, glassformer.explain.walkthrough; "
            "print(sorted(m for m in sys.modules if m in ('glassformer.training.trainer', "
            "'glassformer.training.translation', 'glassformer.training.lm')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
