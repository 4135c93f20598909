"""The HTML walkthrough: its data embedded safely and whole, nothing fetched, and drawn by a real browser."""

import dataclasses
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.data.tokenizers import CharTokenizer, WordTokenizer
from glassformer.explain.narration import LABELS
from glassformer.explain.render.html import (
    PAGE_MAX_VALUES,
    SCRIPTS,
    asset,
    page,
    page_words,
    render_html,
    script_json,
    write_html,
)
from glassformer.explain.walkthrough import (
    CORPUS,
    Subject,
    train_walkthrough_model,
    walkthrough_data,
    write_json,
)
from glassformer.model.config import Seq2SeqConfig
from glassformer.model.seq2seq import Seq2Seq

NASTY = '<script>alert(1)</script> & "x"'
CHROMIUM = Path("/usr/bin/chromium")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # the one URL in the page: a name for createElementNS, never fetched


class Page(HTMLParser):
    """What a test needs from a page: scripts, step sections, diagram boxes, links and visible text."""

    def __init__(self, html: str):
        super().__init__()
        self.lang = None
        self.scripts: dict[str, str] = {}  # id (or "" for the inline program) -> its text
        self.steps: list[str] = []
        self.step_boxes: dict[str, str] = {}  # step id -> the diagram box it sits in
        self.boxes: dict[str, str] = {}  # diagram box id -> its class
        self.links: list[str] = []
        self.current: list[str] = []  # contents links marked current
        self.figures: dict[str, int] = {}  # step id -> operand and result figures in its section
        self.diagrams = 0
        self.ids: set[str] = set()
        self.titled_cells: list[str] = []  # what hovering a cell of a number table shows
        self.text: list[str] = []
        self._in: str | None = None  # "script" or "style" while inside one
        self._script_id = ""
        self._step: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "html":
            self.lang = a.get("lang")
        if tag in ("script", "style"):
            self._in, self._script_id = tag, a.get("id", "")
            if tag == "script":
                self.scripts.setdefault(self._script_id, "")
        if tag == "section" and "step" in cls:
            self.steps.append(a["id"])
            self.step_boxes[a["id"]] = a.get("data-box")
            self._step = a["id"]
            self.figures[a["id"]] = 0
        if tag == "figure" and "operand" in cls and self._step:
            self.figures[self._step] += 1
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "td" and "title" in a:
            self.titled_cells.append(a["title"])
        if tag == "svg" and "diagram" in cls:
            self.diagrams += 1
        if tag == "g" and "data-box" in a:
            self.boxes[a["data-box"]] = a.get("class") or ""
        if tag == "a" and "current" in cls:
            self.current.append(a.get("href", ""))
        self.links += [a[k] for k in ("src", "href") if k in a]

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[self._script_id] += data
        elif self._in is None:
            self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


@pytest.fixture(scope="module")
def builtin():
    """The articles' model and dialogue with two heads, untrained (training adds nothing here), reading
    markup; with the beam search's tree."""
    model, tok = train_walkthrough_model(heads=2, steps=0)
    subject = Subject(model, tok, tok, CORPUS)
    return dataclasses.replace(subject.walkthrough(NASTY), generation=subject.generation(NASTY, beam=2))


@pytest.fixture(scope="module")
def gpt():
    """A random pre-LN GPT with RMSNorm, SwiGLU and RoPE reading markup: its character tokens are '<', '&', '"'..."""
    tok = CharTokenizer.train('abcdefghijklmnopqrstuvwxyz <>/&"')
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16, norm="rmsnorm",
                       norm_position="pre", activation="swiglu", position="rope", bias=False)
    subject = Subject(GPT(config).eval(), tok, tok)
    text = '<i>a&"b"</i> x'
    return dataclasses.replace(subject.walkthrough(text), generation=subject.generation(text, n=3, top_k=5))


@pytest.fixture(scope="module")
def seq2seq_pre():
    """A random pre-LN Seq2Seq with final norms, RMSNorm, GELU, RoPE and a tied output: every other diagram branch."""
    tok = WordTokenizer.train("the cat sat on the mat\na dog ran")
    config = Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, shared_vocab=True,
                           block_size=16, n_encoder_layers=2, n_decoder_layers=1, n_head=2, d_model=16, dropout=0.0,
                           norm="rmsnorm", norm_position="pre", activation="gelu", position="rope",
                           pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(0)
    subject = Subject(Seq2Seq(config).eval(), tok, tok)
    return dataclasses.replace(subject.walkthrough("the cat sat"), generation=subject.generation("the cat sat"))


def plain(data: dict) -> dict:
    """Data as it reads back from JSON (lists for tuples)."""
    return json.loads(json.dumps(data))


# ---------------------------------------------------------------------------------------------
# The page as a string


@pytest.mark.parametrize("name", ["builtin", "gpt"])
def test_embedded_data_reads_back_as_the_walkthrough_data(name, request):
    walkthrough = request.getfixturevalue(name)
    parsed = Page(render_html(walkthrough))
    assert json.loads(parsed.scripts["walkthrough-data"]) == plain(walkthrough_data(walkthrough, PAGE_MAX_VALUES))
    words = json.loads(parsed.scripts["page-words"])
    assert words["zh"]["walkthrough"] == LABELS["walkthrough"]["zh"]
    small = Page(render_html(walkthrough, max_values=50))
    data = json.loads(small.scripts["walkthrough-data"])
    assert data == plain(walkthrough_data(walkthrough, 50))
    assert any(step.get("truncated") for step in data["steps"])


def test_user_text_and_tokens_are_escaped(builtin, gpt):
    for walkthrough in (builtin, gpt):
        html = render_html(walkthrough)
        # Only the page's own three scripts open and close; no user text does.
        assert html.count("<script") == 3 and html.count("</script") == 3
        assert "alert(1)" not in html.replace("\\u003cscript\\u003ealert(1)", "")
        assert "<i>" not in html and "</i>" not in html
    html = render_html(builtin)
    assert '\\u003cscript\\u003ealert(1)\\u003c/script\\u003e \\u0026 \\"x\\"' in html
    assert json.loads(Page(html).scripts["walkthrough-data"])["source"] == NASTY  # exactly what was given
    tokens = json.loads(Page(render_html(gpt)).scripts["walkthrough-data"])["steps"][0]["cols"]
    assert {"<", "&", '"', "/"} <= set(tokens)
    assert script_json(["</script><!--"]) == '["\\u003c/script\\u003e\\u003c!--"]'


def test_the_script_writes_text_never_markup():
    js = "".join(asset(name) for name in SCRIPTS)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in js
    assert "textContent" in js


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_page_is_self_contained(builtin, gpt, lang):
    for walkthrough in (builtin, gpt):
        html = render_html(walkthrough, lang)
        assert "http://" not in html.replace(SVG_NAMESPACE, "") and "https://" not in html
        for fetching in ("fetch(", "XMLHttpRequest", "import(", "WebSocket", "EventSource", "url(", "@import",
                         "<link", "<img", "<iframe", " src="):
            assert fetching not in html
        parsed = Page(html)
        assert parsed.links == []  # the script makes its own links, all within the page
        assert set(parsed.scripts) == {"walkthrough-data", "page-words", ""}


def test_chinese_page_and_unknown_language(builtin):
    page = Page(render_html(builtin, "zh"))
    assert page.lang == "zh"
    assert LABELS["walkthrough"]["zh"] in page.all_text  # the title, before any script runs
    with pytest.raises(ValueError):
        render_html(builtin, "fr")


def test_write_html(builtin, tmp_path):
    path = write_html(builtin, tmp_path / "out" / "walkthrough.html", lang="zh")
    assert path.read_text(encoding="utf-8") == render_html(builtin, "zh")


def test_page_of_a_saved_json_file(gpt, tmp_path):
    write_json(gpt, tmp_path / "walkthrough.json", max_values=PAGE_MAX_VALUES)
    data = json.loads((tmp_path / "walkthrough.json").read_text(encoding="utf-8"))
    assert page(data, "zh") == render_html(gpt, "zh")


def test_both_languages_have_every_word():
    words = page_words()
    assert words["en"].keys() == words["zh"].keys()


# ---------------------------------------------------------------------------------------------
# The page in a real browser


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def console_messages(stderr: str) -> list[str]:
    """What the page said in the browser's console (Chromium logs it as "...:CONSOLE...] ...")."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def browse(tmp_path: Path, html: str, *flags: str) -> Page:
    """The page as the browser has drawn it, after checking that its console stayed silent."""
    path = tmp_path / "page.html"
    path.write_text(html, encoding="utf-8")
    result = chromium(tmp_path, *flags, "--dump-dom", path.as_uri())
    assert console_messages(result.stderr) == []
    return Page(result.stdout)


def with_script(html: str, code: str) -> str:
    """The page with a script of a test's own run after the page's."""
    return html.replace("</body>", f"<script>{code}</script></body>")


def test_console_check_sees_a_broken_script(tmp_path):
    """The checks below would be empty praise if the browser did not report a broken page."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>no_such_function();</script>", encoding="utf-8")
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("no_such_function" in line for line in console_messages(result.stderr))


@pytest.mark.parametrize("name, lang", [("builtin", "en"), ("gpt", "zh"), ("seq2seq_pre", "en")])
def test_browser_draws_every_step_without_console_errors(name, lang, request, tmp_path):
    walkthrough = request.getfixturevalue(name)
    dom = browse(tmp_path, render_html(walkthrough, lang))
    assert dom.lang == lang
    assert dom.steps == [step.id for step in walkthrough.steps]  # one section per step, in order
    text = dom.all_text
    assert walkthrough.source in text and LABELS["walkthrough"][lang] in text
    data = walkthrough_data(walkthrough, PAGE_MAX_VALUES)
    for step in data["steps"]:
        assert step["title"][lang] in text and step["explanation"][lang] in text
        if step["op"] in ("linear", "matmul", "add", "softmax", "mask", "layer_norm", "rms_norm"):
            assert dom.figures[step["id"]] == len(step["inputs"]) + 1  # the operands beside the result
    other = "zh" if lang == "en" else "en"
    assert data["steps"][3]["explanation"][other] not in text
    # One diagram, drawn from the config, with the first step's box lit.
    assert dom.diagrams == 1
    assert ("dec-cross" in dom.boxes) == (walkthrough.model_kind == "seq2seq")
    assert ("dec-norm-self" in dom.boxes) == (walkthrough.config.get("norm_position") == "pre")
    assert ("dec-final" in dom.boxes) == any(step.sublayer == "final" for step in walkthrough.steps)
    assert set(dom.step_boxes.values()) <= set(dom.boxes)  # every step sits in a box of the diagram
    assert dom.titled_cells and all(re.fullmatch(r".* · .*: .+", t) for t in dom.titled_cells)
    # Generation token by token, after the steps.
    assert "gf-generation" in dom.ids and walkthrough.generation.output_text in text
    assert [box for box, cls in dom.boxes.items() if "here" in cls] == [
        "enc-tokens" if walkthrough.model_kind == "seq2seq" else "dec-tokens"]


def test_language_switch_and_following_the_reader(gpt, tmp_path):
    """Switched to Chinese, and a diagram box clicked, the page speaks Chinese, goes to the box's
    first step and lights the box and that step's contents entry.

    (Headless Chromium draws no frames for --dump-dom, so the IntersectionObserver that follows
    scrolling never fires here; following a link takes the same path from the hashchange event.)"""
    target = "dec.0.self.norm.rms"  # the first step of the first norm (pre-LN) box
    html = with_script(render_html(gpt, "en"), "document.querySelector('#gf-langs button[data-lang=zh]').click();"
                                               "document.querySelector('g[data-box=dec-norm-self]').dispatchEvent("
                                               "new MouseEvent('click', {bubbles: true}));")
    dom = browse(tmp_path, html, "--virtual-time-budget=2000")
    assert dom.lang == "zh"
    data = walkthrough_data(gpt, PAGE_MAX_VALUES)
    for step in data["steps"]:
        assert step["title"]["zh"] in dom.all_text
    assert data["steps"][3]["explanation"]["en"] not in dom.all_text
    assert [box for box, cls in dom.boxes.items() if "here" in cls] == ["dec-norm-self"]
    assert dom.current == [f"#{target}"]


def test_screenshot_is_not_blank(builtin, tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    path = write_html(builtin, tmp_path / "walkthrough.html")
    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, "--window-size=1400,900", f"--screenshot={shot}", path.as_uri())
    assert console_messages(result.stderr) == []
    with image_module.open(shot) as image:
        assert image.size == (1400, 900)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        sidebar = rgb.crop((0, 0, 300, 400)).getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # text, tables and the diagram, not a blank or single-colour page
    assert any(r > 200 and 120 < g < 200 and b < 80 for _, (r, g, b) in sidebar)  # the lit diagram box (amber)
