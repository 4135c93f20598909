"""glassformer.observe.analysis against independent computations: truncated copies of the model for the
logit lens, the final norm written out by hand for attribution, W_O columns zeroed in a copy for
ablation, the clean run itself for patching. Each on an RMSNorm and a LayerNorm model (RoPE and
SwiGLU among them), with every weight, bias and norm parameter randomised so none is a no-op."""

import copy
import io
import math

import pytest
import torch
from conftest import VOCAB, build_tiny_gpt, random_ids
from rich.console import Console

from glassformer.model.layers import merge_heads
from glassformer.observe.analysis import Site, ablate, attribute, logit_lens, patch, patched_logits
from glassformer.observe.trace import Trace

MODELS = {
    "layernorm-learned-gelu": dict(norm="layernorm", position="learned", activation="gelu_tanh"),
    "rmsnorm-rope-swiglu": dict(norm="rmsnorm", position="rope", activation="swiglu", bias=False),
    "layernorm-sinusoidal-relu-untied-segments": dict(norm="layernorm", position="sinusoidal", activation="relu",
                                                      tie_weights=False, n_segments=2),
    "rmsnorm-none-gelu-nobias": dict(norm="rmsnorm", position="none", activation="gelu", bias=False),
}


def model_of(name: str, **overrides):
    """A tiny GPT (3 layers, 4 heads) whose every parameter is drawn at random, biases and norms included."""
    model = build_tiny_gpt(n_layer=3, n_head=4, **{**MODELS[name], **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0) * 0.5)
    return model


def logits_of(model, ids):
    segments = torch.zeros_like(ids) if model.seg_emb is not None else None
    with torch.no_grad():
        return model(ids, segment_ids=segments)[0]


@pytest.fixture(params=list(MODELS))
def model(request):
    return model_of(request.param)


# -- logit lens -------------------------------------------------------------------------------


def test_lens_last_layer_is_the_logits(model):
    ids = random_ids(1, 9)
    lens = logit_lens(model, ids[0])  # (T,) accepted as one sequence
    assert lens.shape == (model.config.n_layer + 1, 9, VOCAB)
    # all layers' streams are unembedded in one matmul: another row count, so another summation order
    # inside the matmul may be chosen; each logit is a sum of C = 32 products of O(1) terms, a few ulps apart
    torch.testing.assert_close(lens[-1], logits_of(model, ids), rtol=1e-6, atol=1e-6)
    # other row counts, other summation orders: a few ulps
    torch.testing.assert_close(logit_lens(model, ids, positions=[2, -1]), lens[:, [2, 8]], rtol=1e-6, atol=1e-6)


def test_lens_layer_equals_a_truncated_copy(model):
    ids = random_ids(1, 7, seed=4)
    lens = logit_lens(model, ids)
    for i in range(model.config.n_layer + 1):
        truncated = copy.deepcopy(model)
        truncated.blocks = truncated.blocks[:i]  # embedding, i blocks, final norm, unembedding
        torch.testing.assert_close(lens[i], logits_of(truncated, ids), rtol=1e-5, atol=1e-5)


def test_lens_of_a_post_ln_model_reads_the_raw_stream():
    model = model_of("layernorm-learned-gelu", norm_position="post")
    ids = random_ids(1, 6)
    lens = logit_lens(model, ids)
    truncated = copy.deepcopy(model)
    truncated.blocks = truncated.blocks[:1]
    torch.testing.assert_close(lens[1], logits_of(truncated, ids), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lens[-1], logits_of(model, ids), rtol=1e-6, atol=1e-6)


def test_lens_in_chunks_equals_the_plain_lens(model, monkeypatch):
    """Chunks of rows that cut across layers (5 rows, 11 positions) read the same as one layer at a time."""
    import glassformer.observe.analysis as analysis

    ids = random_ids(1, 11, seed=7)
    monkeypatch.setattr(analysis, "LENS_ROWS", 5)
    torch.testing.assert_close(logit_lens(model, ids), analysis.logit_lens_reference(model, ids), rtol=1e-6, atol=1e-6)


# -- attribution ------------------------------------------------------------------------------


def frozen_norm_logit(model, x, u, scale):
    """u · norm(x) with the norm's scale fixed at `scale`, written out."""
    norm = model.final_norm
    if model.config.norm == "layernorm":
        y = norm.weight * (x - x.mean()) / scale + (norm.bias if norm.bias is not None else 0.0)
    else:
        y = norm.weight * x / scale
    return float(u @ y)


def test_attributions_and_remaining_terms_sum_to_the_logit(model):
    ids, target = random_ids(1, 8, seed=2), 7
    result = attribute(model, ids, target)
    assert result.heads.shape == (model.config.n_layer, model.config.n_head)
    assert result.ffn.shape == (model.config.n_layer,)
    assert result.logit == pytest.approx(float(logits_of(model, ids)[-1, target]), abs=1e-6)
    assert result.total() == pytest.approx(result.logit, abs=1e-4)
    expected = {"token_embedding"} | ({"position_embedding"} if model.pos_emb is not None else set())
    expected |= {"segment_embedding"} if model.seg_emb is not None else set()
    expected |= {"o_proj_bias", "norm_shift"} if model.config.bias else set()
    assert set(result.remaining) == expected
    assert "frozen" in repr(result) and f"{result.logit:.4f}" in repr(result)
    layer, head, value = result.top(1)[0]
    assert abs(value) == pytest.approx(max(float(result.heads.abs().max()), float(result.ffn.abs().max())))
    assert value == float(result.ffn[layer] if head is None else result.heads[layer, head])


def test_a_heads_contribution_is_the_logit_change_with_the_frozen_scale(model):
    ids, target, layer, head = random_ids(1, 8, seed=3), 11, 1, 2
    result = attribute(model, ids, target)
    with torch.no_grad(), Trace(model) as trace:
        logits_of(model, ids)
    x = trace["final_norm.in"][0, -1]
    u = model.lm_head.weight[target].detach()
    norm = model.final_norm
    if model.config.norm == "layernorm":
        scale = torch.sqrt(x.var(unbiased=False) + norm.eps)
    else:
        scale = torch.sqrt((x * x).mean() + norm.eps)
    with torch.no_grad():
        assert frozen_norm_logit(model, x, u, scale) == pytest.approx(result.logit, abs=1e-4)
        # the head's vector in the residual stream: W_O applied with and without that head's output
        out = trace[f"blocks.{layer}.self_attn.core.out"]
        without = out.clone()
        without[:, head] = 0.0
        o_proj = model.blocks[layer].self_attn.o_proj
        c = (o_proj(merge_heads(out)) - o_proj(merge_heads(without)))[0, -1]
        change = frozen_norm_logit(model, x, u, scale) - frozen_norm_logit(model, x - c, u, scale)
        assert float(result.heads[layer, head]) == pytest.approx(change, abs=1e-4)
        ffn_out = trace[f"blocks.{layer}.ffn.down"][0, -1]
        change = frozen_norm_logit(model, x, u, scale) - frozen_norm_logit(model, x - ffn_out, u, scale)
        assert float(result.ffn[layer]) == pytest.approx(change, abs=1e-4)


def test_attribute_refuses_a_post_ln_model_in_one_line():
    model = model_of("layernorm-learned-gelu", norm_position="post")
    with pytest.raises(ValueError, match="pre-LN") as error:
        attribute(model, random_ids(1, 5), 3)
    assert "\n" not in str(error.value)


# -- ablation ---------------------------------------------------------------------------------


def test_no_heads_ablated_is_the_model(model):
    ids = random_ids(1, 9)
    assert torch.equal(ablate(model, ids), logits_of(model, ids))


def test_zero_ablation_equals_zeroed_w_o_columns(model):
    ids, heads = random_ids(1, 9, seed=5), [(0, 1), (2, 3), (2, 0)]
    edited = copy.deepcopy(model)
    d = model.config.head_dim
    with torch.no_grad():
        for layer, head in heads:
            edited.blocks[layer].self_attn.o_proj.weight[:, head * d:(head + 1) * d] = 0.0
    torch.testing.assert_close(ablate(model, ids, heads), logits_of(edited, ids), rtol=1e-5, atol=1e-5)
    assert not model.blocks[0].self_attn.core._forward_hooks  # the hooks are gone


def test_mean_ablation_over_one_position_changes_nothing(model):
    ids = random_ids(1, 1)
    torch.testing.assert_close(ablate(model, ids, [(0, 0), (1, 3)], mode="mean"), logits_of(model, ids))
    assert not torch.allclose(ablate(model, random_ids(1, 6), [(0, 0)], mode="mean"),
                              logits_of(model, random_ids(1, 6)))


def test_ablate_checks_its_arguments(model):
    with pytest.raises(ValueError, match="head 9"):
        ablate(model, random_ids(1, 4), [(0, 9)])
    with pytest.raises(ValueError, match="mode"):
        ablate(model, random_ids(1, 4), [(0, 0)], mode="resample")


# -- patching ---------------------------------------------------------------------------------


def clean_and_corrupt(T: int = 7):
    clean = random_ids(1, T, seed=6)
    corrupt = clean.clone()
    corrupt[0, -1] = (corrupt[0, -1] + 1) % VOCAB  # the inputs differ at the last position only
    return clean, corrupt


def test_patching_a_whole_residual_layer_gives_the_clean_logits(model):
    clean, corrupt = clean_and_corrupt()
    for layer in range(model.config.n_layer + 1):
        torch.testing.assert_close(patched_logits(model, clean, corrupt, Site("resid", layer)),
                                   logits_of(model, clean), rtol=1e-5, atol=1e-5)


def test_patching_metric_is_one_where_the_clean_run_returns_and_zero_at_no_op_sites(model):
    clean, corrupt = clean_and_corrupt()
    result = patch(model, clean, corrupt, head_positions=True)
    assert result.resid.shape == (model.config.n_layer + 1, 7)
    assert result.heads.shape == (model.config.n_layer, model.config.n_head)
    # the last position carries the whole difference: patched there at any layer, the clean run returns
    torch.testing.assert_close(result.resid[:, -1], torch.ones(model.config.n_layer + 1), rtol=0, atol=1e-4)
    # earlier positions are the same in both runs (causal attention): patching them changes nothing
    torch.testing.assert_close(result.resid[:, :-1], torch.zeros(model.config.n_layer + 1, 6), rtol=0, atol=1e-4)
    torch.testing.assert_close(result.head_positions[..., :-1], torch.zeros(3, 4, 6), rtol=0, atol=1e-4)
    clean_logits, corrupt_logits = logits_of(model, clean)[-1], logits_of(model, corrupt)[-1]
    assert result.target == int(clean_logits.argmax())
    assert result.clean == pytest.approx(float(clean_logits[result.target] - clean_logits[result.foil]), abs=1e-5)
    assert result.corrupt == pytest.approx(float(corrupt_logits[result.target] - corrupt_logits[result.foil]),
                                           abs=1e-5)
    # a head grid entry is its site's own patched run, normalised
    logits = patched_logits(model, clean, corrupt, Site("head", 1, 2))[-1]
    expected = (float(logits[result.target] - logits[result.foil]) - result.corrupt) / (result.clean - result.corrupt)
    assert float(result.heads[1, 2]) == pytest.approx(expected, abs=1e-4)
    data = result.to_dict()
    assert len(data["resid"]) == model.config.n_layer + 1 and len(data["head_positions"]) == model.config.n_layer


def test_patching_from_the_patched_layer_equals_whole_runs_with_hooks(model):
    """patch() starts each run at its site's block with only the last position unembedded; every grid
    entry must equal the whole patched run's (patched_logits: the model's forward with a hook) metric.
    The inputs differ in a middle token, so early layers and later positions carry real effects."""
    clean = random_ids(1, 7, seed=11)
    corrupt = clean.clone()
    corrupt[0, 3] = (corrupt[0, 3] + 1) % VOCAB
    result = patch(model, clean, corrupt, head_positions=True, batch_size=3)

    def normalised(logits):
        value = float(logits[-1, result.target] - logits[-1, result.foil])
        return (value - result.corrupt) / (result.clean - result.corrupt)

    # float32 runs whose batch shapes differ: logit differences agree to ~1e-5 absolute (O(1) logits,
    # sums of 32 terms); the metric divides them by (clean - corrupt), so the bound is scaled by it
    tol = 1e-4 / abs(result.clean - result.corrupt) + 1e-4
    for layer in range(model.config.n_layer + 1):
        for position in range(7):
            expected = normalised(patched_logits(model, clean, corrupt, Site("resid", layer, position=position)))
            assert float(result.resid[layer, position]) == pytest.approx(expected, abs=tol)
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            expected = normalised(patched_logits(model, clean, corrupt, Site("head", layer, head)))
            assert float(result.heads[layer, head]) == pytest.approx(expected, abs=tol)
    for layer, head, position in ((0, 1, 3), (1, 2, 5), (2, 3, 6)):
        expected = normalised(patched_logits(model, clean, corrupt, Site("head", layer, head, position)))
        assert float(result.head_positions[layer, head, position]) == pytest.approx(expected, abs=tol)
    assert result.resid[:, 3].abs().max() > 0.01  # the patched token's own column is no no-op


def test_patching_with_logprob_and_a_function_metric():
    model = model_of("rmsnorm-rope-swiglu")
    clean, corrupt = clean_and_corrupt()
    by_name = patch(model, clean, corrupt, target=5, metric="logprob", positions=[6], heads=False)
    assert by_name.clean == pytest.approx(float(torch.log_softmax(logits_of(model, clean)[-1], -1)[5]), abs=1e-5)
    assert math.isnan(float(by_name.resid[0, 0])) and math.isnan(float(by_name.heads[0, 0]))

    def logprob_of_5(logits):
        return torch.log_softmax(logits[-1], -1)[5]

    by_function = patch(model, clean, corrupt, metric=logprob_of_5, positions=[6], heads=False)
    torch.testing.assert_close(by_function.resid[:, 6], by_name.resid[:, 6], rtol=0, atol=1e-4)


def test_patching_refuses_inputs_of_different_lengths_in_one_line(model):
    with pytest.raises(ValueError, match="same length") as error:
        patch(model, random_ids(1, 5), random_ids(1, 6))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="both"):
        patch(model, random_ids(1, 5), random_ids(1, 5))


# -- recording only what is asked for ---------------------------------------------------------


def test_trace_with_names_records_only_those_and_the_same_values():
    model = model_of("layernorm-learned-gelu")
    ids = random_ids(2, 6)
    wanted = ["blocks.0.in", "blocks.2", "blocks.1.self_attn.core.out", "blocks.1.self_attn.core.scores"]
    with torch.no_grad(), Trace(model) as everything:
        model(ids)
    with torch.no_grad(), Trace(model, names=wanted) as some:
        model(ids)
    assert sorted(some.names()) == sorted(wanted)
    for name in wanted:
        assert torch.equal(some[name], everything[name])
    with torch.no_grad(), Trace(model, names=lambda name: name.endswith(".probs")) as probs:
        model(ids)
    assert probs.names() == [f"blocks.{i}.self_attn.core.probs" for i in range(3)]
    assert len(everything.names()) > 50 and "blocks.0.self_attn.core.probs" in everything


# -- printed views ----------------------------------------------------------------------------


class SpaceTokenizer:
    """Tokens are the words between spaces; some look like rich markup or hold an escape character."""

    def __init__(self, words):
        self.words = list(words)

    @property
    def vocab_size(self):
        return len(self.words)

    def encode(self, text):
        return [self.words.index(w) for w in text.split()]

    def token(self, i):
        return self.words[i]


@pytest.fixture
def word_model():
    tok = SpaceTokenizer(["the", "cat", "sat", "on", "mat", "a", "[bold]", "[red]x[/red]", "\x1b[2J", "."])
    model = build_tiny_gpt(n_layer=2, n_head=2, vocab_size=tok.vocab_size)
    return model, tok


def console():
    return Console(record=True, width=160, file=io.StringIO())


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_views_print_in_both_languages_and_user_text_literally(word_model, lang):
    from glassformer.explain.render import analysis_view as view

    model, tok = word_model
    out = console()
    ids = view.as_ids(tok, "[bold] the [red]x[/red] \x1b[2J", model)
    view.print_lens(logit_lens(model, ids), tok, ids, top=2, lang=lang, console=out)
    whole, last = console(), console()  # a lens of the last positions prints as the whole lens cut to them
    view.print_lens(logit_lens(model, ids), tok, ids, top=2, lang=lang, console=whole, max_positions=2)
    view.print_lens(logit_lens(model, ids, positions=[2, 3]), tok, ids, top=2, lang=lang, console=last)
    assert last.export_text() == whole.export_text()
    view.print_attribution(attribute(model, ids, tok.encode("a")[0]), tok, lang=lang, console=out)
    change = view.print_ablation(model, tok, "[bold] the", [(0, 1)], "a", lang=lang, console=out)
    result = view.patch_text(model, tok, "the cat [bold]", "the mat [bold]")
    view.print_patching(result, tok, lang=lang, console=out)
    text = out.export_text()
    assert "[bold]" in text and "[red]x[/red]" in text  # the token text, never read as markup
    assert "\\x1b[2J" in text and "\x1b" not in text  # an escape character shown escaped, never emitted
    assert ("frozen" in text) if lang == "en" else ("固定" in text)
    assert change["delta"] == pytest.approx(change["ablated"] - change["original"])
    assert result.position_labels[:2] == ["the", "cat→mat"]


def test_patching_png(word_model, tmp_path):
    from glassformer.explain.render.analysis_view import patch_text, save_patching_png

    model, tok = word_model
    result = patch_text(model, tok, "the cat sat", "the mat sat", metric="logprob")
    path = save_patching_png(result, tmp_path / "patch.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_view_checks_language_and_targets(word_model):
    from glassformer.explain.render import analysis_view as view

    model, tok = word_model
    with pytest.raises(ValueError, match="language"):
        view.print_ablation(model, tok, "the", [(0, 0)], "a", lang="fr")
    with pytest.raises(ValueError, match="one token"):
        view.target_id(tok, "the cat")
    assert view.parse_heads("1.2, 2.1") == [(0, 1), (1, 0)]


# -- the command line ---------------------------------------------------------------------------


def test_cli_lens_attribute_ablate_patch_print_and_write_data(tmp_path, capsys):
    import json

    import glassformer
    from glassformer.cli import main
    from glassformer.data.tokenizers import CharTokenizer

    tok = CharTokenizer.train("the quick brown fox jumps over the lazy dog")
    model = model_of("rmsnorm-rope-swiglu", vocab_size=tok.vocab_size)
    glassformer.save(model, tmp_path / "m", tokenizer=tok)
    base = ["explain", "--model", str(tmp_path / "m"), "--text", "the fox"]
    assert main(base + ["--lens", "--attribute", "q", "--ablate", "1.2,3.4", "--patch", "the dog",
                        "--png", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    for heading in ("Logit lens", "Direct logit attribution of 'q'", "Ablation (zero) of 1.2, 3.4",
                    "Activation patching"):
        assert heading in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "why.json"
    assert main(base + ["--lens", "--attribute", "q", "--ablate", "2.1", "--target", "x", "--patch", "the dog",
                        "--json", str(path)]) == 0
    data = json.loads(path.read_text())["analysis"]
    ids = torch.tensor(tok.encode("the fox"))
    lens = logit_lens(model, ids)
    assert [t["id"] for t in data["lens"]["top"][-1][-1]] == lens[-1, -1].topk(5).indices.tolist()
    assert data["attribution"]["logit"] == pytest.approx(float(logits_of(model, ids[None])[-1, tok.encode("q")[0]]),
                                                         abs=1e-4)
    x = tok.encode("x")[0]
    ablated = torch.log_softmax(ablate(model, ids, [(1, 0)])[-1].double(), -1)[x]
    assert data["ablation"]["ablated"] == pytest.approx(float(ablated)) and data["ablation"]["heads"] == [[1, 0]]
    assert len(data["patching"]["resid"]) == model.config.n_layer + 1
    for bad, message in ((["--ablate", "4.1"], "--ablate: no head 4.1"), (["--ablate", "x"], "--ablate: a head is"),
                         (["--attribute", "ab"], "--attribute: the target must be one token"),
                         (["--patch", "a"], "--patch: clean and corrupt"), (["--target", "x"], "--target applies"),
                         (["--lens", "--png", "a.png"], "--png applies to --patch")):
        assert main(base + bad) == 2
        assert message in capsys.readouterr().err
    assert main(["explain", "--lens"]) == 2
    assert "apply to a GPT" in capsys.readouterr().err
