"""The notebook views: self-contained HTML fragments that carry the library's numbers, escape every
label, never collide with each other and fetch nothing; and, where nbclient and ipykernel are
installed, a small notebook executed in a real Jupyter kernel whose outputs hold each view."""

import dataclasses
import html
import json
import re

import numpy as np
import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.data.tokenizers import CharTokenizer
from glassformer.explain.labels import token_labels
from glassformer.explain.render import notebook
from glassformer.explain.walkthrough import gpt_walkthrough, walkthrough_data

TEXT = "<b>the fox</b>"
HOSTILE = '</script><script>alert("x")</script>'  # a label that would run if written as markup


def tiny(n_layer: int = 2, n_head: int = 3, std: float = 0.4):
    """A small GPT with weights large enough that attention is far from uniform, and its tokenizer."""
    tok = CharTokenizer.train("<b>the quick brown fox</b>")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=n_layer, n_head=n_head, n_embd=24))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    return model.eval(), tok


def reference_probs(model, tok, text: str) -> np.ndarray:
    """Attention probabilities (n_layer, n_head, T, T) recomputed in NumPy float64: softmax of the
    walkthrough's masked, scaled scores (None = −∞), an independent path from the view's Trace."""
    steps = {s["id"]: s for s in walkthrough_data(gpt_walkthrough(model, tok, text), 0)["steps"]}
    c = model.config
    out = []
    for layer in range(c.n_layer):
        heads = []
        for h in range(c.n_head):
            masked = np.array([[-np.inf if x is None else x for x in row]
                               for row in steps[f"dec.{layer}.self.h{h}.masked"]["values"]], dtype=np.float64)
            e = np.exp(masked - masked.max(axis=-1, keepdims=True))
            heads.append(e / e.sum(axis=-1, keepdims=True))
        out.append(heads)
    return np.array(out)


def view_data(fragment: str) -> tuple[str, dict]:
    """The root element's id and the data a fragment's script draws."""
    uid = re.search(r'<div class="gfnb" id="([^"]+)">', fragment).group(1)
    call = fragment.split(f'(document.getElementById("{uid}"), ', 1)[1]
    data = json.loads(call.rsplit(");\n})();", 1)[0])
    return uid, data


def test_the_attention_view_carries_the_weights_the_model_computes():
    model, tok = tiny()
    view = notebook.attention(model, tok, TEXT)
    _, data = view_data(view._repr_html_())
    probs = np.array(data["probs"])
    expected = reference_probs(model, tok, TEXT)
    assert probs.shape == expected.shape == (2, 3, len(TEXT), len(TEXT))
    # float32 model against a float64 recomputation (~1e-7), then 6 decimals kept (5e-7)
    np.testing.assert_allclose(probs, expected, atol=2e-6, rtol=0)
    assert expected[..., -1, :].max(axis=-1).min() > 3 / len(TEXT)  # every head's last row is far from uniform
    assert data["view"] == "attention" and data["lang"] == "en"
    assert data["tokens"] == token_labels(tok, tok.encode(TEXT))


def test_a_long_text_shows_its_last_tokens_and_says_so():
    model, tok = tiny()
    view = notebook.attention(model, tok, "the quick brown fox " * 8)  # 160 tokens, block_size 32: the last 32
    long = dataclasses.replace(view, probs=view.probs.repeat(1, 1, 5, 5), tokens=view.tokens * 5)  # 160 of them
    _, data = view_data(long._repr_html_())
    n = notebook.VIEW_TOKENS
    assert np.array(data["probs"]).shape == (2, 3, n, n) and data["tokens"] == long.tokens[-n:]
    np.testing.assert_allclose(data["probs"], long.probs[..., -n:, -n:].double().numpy(), atol=6e-7, rtol=0)
    assert f"The last {n} of 160 tokens" in data["note"]["en"] and "160" in data["note"]["zh"]
    _, short = view_data(view._repr_html_())
    assert short["note"] is None and len(short["tokens"]) == 32


def test_labels_reach_the_page_only_as_data():
    model, tok = tiny()
    view = dataclasses.replace(notebook.attention(model, tok, TEXT), tokens=[HOSTILE] * len(TEXT))
    fragment = view._repr_html_()
    # one script element (the view's own); the label is inside its JSON with < > & escaped
    assert fragment.lower().count("<script") == 1 and fragment.lower().count("</script") == 1
    assert "alert" in fragment and HOSTILE not in fragment and "<b>" not in fragment
    assert view_data(fragment)[1]["tokens"][0] == HOSTILE
    lens = notebook.lens(model, tok, TEXT)._repr_html_()  # tokens and vocabulary through the same path
    assert lens.lower().count("<script") == 1 and "<b>" not in lens and view_data(lens)[1]["grids"][0]["cols"][0] == "<"


def test_two_views_never_share_an_id_and_keep_their_names_to_themselves():
    model, tok = tiny()
    view = notebook.attention(model, tok, TEXT)
    first, second = view._repr_html_(), view._repr_html_()  # the same object shown twice in one notebook
    lens = notebook.lens(model, tok, TEXT)._repr_html_()
    ids = [i for page in (first, second, lens) for i in re.findall(r'\bid="([^"]+)"', page)]
    assert len(ids) == 3 and len(set(ids)) == 3
    for page in (first, second, lens):
        script = page.split("<script>", 1)[1]
        # everything the script declares lives inside one function: the page's globals stay as they were
        assert script.lstrip().startswith('"use strict";\n(function () {')
        assert script.rstrip().endswith("})();\n</script>")


def test_nothing_is_fetched():
    model, tok = tiny()
    pages = [notebook.attention(model, tok, TEXT)._repr_html_(), notebook.lens(model, tok, TEXT)._repr_html_()]
    for page in pages:
        page = page.replace('"http://www.w3.org/2000/svg"', "")  # the SVG namespace: a name, never fetched
        assert not re.search(r"https?://|//cdn|\bsrc=|@import|url\(|fetch\(|XMLHttpRequest", page)


def test_the_views_speak_english_and_chinese():
    model, tok = tiny()
    _, data = view_data(notebook.attention(model, tok, TEXT, lang="zh")._repr_html_())
    assert data["lang"] == "zh" and data["title"] == {"en": "Attention", "zh": "注意力"}
    assert set(notebook.WORDS["en"]) == set(notebook.WORDS["zh"])
    with pytest.raises(ValueError):
        notebook.attention(model, tok, TEXT, lang="fr")


# ---------------------------------------------------------------------------------------------
# In a real kernel

CELLS = {
    "setup": """
import torch
from glassformer import GPT, GPTConfig
from glassformer.data.tokenizers import CharTokenizer
tok = CharTokenizer.train("<b>the quick brown fox</b>")
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16,
                      norm="rmsnorm", position="rope", activation="swiglu")).eval()
""",
    "attention": "from glassformer.explain.render import notebook\nnotebook.attention(model, tok, '<b>fox')",
    "lens": "notebook.lens(model, tok, '<b>fox')",
    "walkthrough": "from glassformer.explain.walkthrough import gpt_walkthrough\ngpt_walkthrough(model, tok, '<b>fox')",
    "trace": """
from glassformer.observe.trace import Trace
with torch.no_grad(), Trace(model) as trace:
    model(torch.tensor([tok.encode('fox')]))
trace
""",
    "patching": "from glassformer.explain.render.analysis_view import patch_text\n"
                "patch_text(model, tok, 'the fox', 'the box')",
    "attribution": "from glassformer.observe.analysis import attribute\n"
                   "attribute(model, tok.encode('the fox'), tok.encode('x')[0])",
}


@pytest.fixture(scope="module")
def outputs():
    pytest.importorskip("ipykernel", reason="ipykernel is not installed: no kernel to run a notebook in")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed: cannot execute a notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS.values()]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return {name: cell.outputs for name, cell in zip(CELLS, nb.cells)}


@pytest.mark.parametrize("name, html_marker, text_marker", [
    ("attention", '"view":"attention"', "AttentionView(2 layers × 2 heads over 6 tokens"),
    ("lens", '"title":{"en":"Logit lens"', "LensView(3 layers × 6 positions"),
    ("walkthrough", "<iframe srcdoc=", "Walkthrough(gpt, "),
    ("trace", "blocks.1.self_attn.core.probs", "Trace(GPT, "),
    ("patching", '"title":{"en":"Activation patching"', "Patching(metric=logit_diff"),
    ("attribution", '"en":"Direct logit attribution of token', "Attribution(target="),
])
def test_each_object_displays_inline_as_html_and_text(outputs, name, html_marker, text_marker):
    result = [o for o in outputs[name] if o.output_type == "execute_result"]
    assert len(result) == 1, outputs[name]
    data = result[0]["data"]
    assert html_marker in data["text/html"] and text_marker in data["text/plain"]
    page = html.unescape(data["text/html"]).replace("http://www.w3.org/2000/svg", "")  # a name, not a fetch
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "<b>fox" not in data["text/html"].replace(html.escape("<b>fox"), "")  # the text is escaped


def test_the_kernels_attention_view_is_the_one_the_library_draws(outputs):
    fragment = [o for o in outputs["attention"] if o.output_type == "execute_result"][0]["data"]["text/html"]
    _, data = view_data(fragment)
    assert data["tokens"] == list("<b>fox") and np.array(data["probs"]).shape == (2, 2, 6, 6)
    assert '<div class="gfnb" id="gfnb-' in fragment and "function headView(" in fragment


def test_the_walkthrough_frame_holds_the_whole_page(outputs):
    frame = [o for o in outputs["walkthrough"] if o.output_type == "execute_result"][0]["data"]["text/html"]
    page = html.unescape(frame.split('srcdoc="', 1)[1].split('" style=', 1)[0])
    assert page.startswith("<!DOCTYPE html>") and 'id="walkthrough-data"' in page


def test_a_static_grid_is_coloured_with_the_explorers_stops():
    """grid_html (the course's tables) colours as matrices.js does: its stops read from that file.
    The expected colours are matrices.js's stops written out here: the ends and a middle stop."""
    from glassformer.explain.render.notebook import grid_html

    html = grid_html([[1.0, -0.5, 0.0, float("-inf")]], ["r<1>"], ["a", "b", "c", "d"], signed=True, scale=1.0)
    backgrounds = re.findall(r"background:rgb\((\d+), (\d+), (\d+)\)", html)
    # POSITIVE's end, NEGATIVE's middle, white, GREY
    expected = [(178, 24, 43), (146, 197, 222), (255, 255, 255), (154, 165, 177)]
    assert [tuple(map(int, b)) for b in backgrounds] == expected
    assert "r&lt;1&gt;" in html and "<script" not in html and "−∞" in html
    probs = grid_html([[1.0, 0.0]], ["q"], ["k1", "k2"])  # unsigned: white to SEQUENTIAL's darkest
    assert re.findall(r"background:rgb\(([\d, ]+)\)", probs) == ["8, 48, 107", "255, 255, 255"]
