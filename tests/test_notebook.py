"""The inline displays run in a real Jupyter kernel: a small notebook executed with nbclient,
whose outputs must hold each object's rendered HTML and its plain-text repr."""

import html

import nbformat
import pytest
from nbclient import NotebookClient

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
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS.values()]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return {name: cell.outputs for name, cell in zip(CELLS, nb.cells)}


@pytest.mark.parametrize("name, html_marker, text_marker", [
    ("attention", "layer 2, head 2", "AttentionView(2 layers × 2 heads over 6 tokens"),
    ("lens", "logit lens", "LensView(3 layers × 6 positions"),
    ("walkthrough", "<iframe srcdoc=", "Walkthrough(gpt, "),
    ("trace", "blocks.1.self_attn.core.probs", "Trace(GPT, "),
    ("patching", "activation patching", "Patching(metric=logit_diff"),
    ("attribution", "direct logit attribution", "Attribution(target="),
])
def test_each_object_displays_inline_as_html_and_text(outputs, name, html_marker, text_marker):
    result = [o for o in outputs[name] if o.output_type == "execute_result"]
    assert len(result) == 1, outputs[name]
    data = result[0]["data"]
    assert html_marker in data["text/html"] and text_marker in data["text/plain"]
    page = html.unescape(data["text/html"]).replace("http://www.w3.org/2000/svg", "")  # a name, not a fetch
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert "<b>fox" not in data["text/html"].replace(html.escape("<b>fox"), "")  # the text is escaped


def test_the_walkthrough_frame_holds_the_whole_page(outputs):
    frame = [o for o in outputs["walkthrough"] if o.output_type == "execute_result"][0]["data"]["text/html"]
    page = html.unescape(frame.split('srcdoc="', 1)[1].split('" style=', 1)[0])
    assert page.startswith("<!DOCTYPE html>") and 'id="walkthrough-data"' in page
