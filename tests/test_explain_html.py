"""The HTML walkthrough: escaped, self-contained, in both languages, and shown whole by a real browser."""

import dataclasses
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.explain.html import diagram, locate, render_html, step_ids, write_html
from glassformer.explain.narration import SECTIONS, label, narrate
from glassformer.explain.walkthrough import builtin_walkthrough, gpt_walkthrough
from glassformer.tokenizers import CharTokenizer

NASTY = '<script>alert(1)</script> & "x"'
CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """What a test needs from a page: step sections, heatmaps, links, cells and text."""

    def __init__(self, html: str):
        super().__init__()
        self.steps: list[str] = []
        self.heatmaps = 0
        self.links: list[str] = []
        self.classes: list[str] = []
        self.text: list[str] = []
        self.lang = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "section" and a.get("class") == "step":
            self.steps.append(a["id"])
        if tag == "figure" and a.get("class") == "heatmap":
            self.heatmaps += 1
        self.links += [a[k] for k in ("src", "href") if k in a]
        self.classes.append(a.get("class") or "")

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def section(html: str, step_id: str) -> str:
    """The markup of one step's section."""
    start = html.index(f'<section class="step" id="{step_id}">')
    return html[start:html.index("</section>", start)]


@pytest.fixture(scope="module")
def builtin():
    return dataclasses.replace(builtin_walkthrough(heads=2), source=NASTY)


@pytest.fixture(scope="module")
def gpt():
    """A random GPT reading markup: its character tokens are '<', '&', '"' and so on."""
    tok = CharTokenizer.train('abcdefghijklmnopqrstuvwxyz <>/&"')
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    return gpt_walkthrough(model, tok, '<i>a&"b"</i> x')


# ---------------------------------------------------------------------------------------------
# The page as a string


@pytest.mark.parametrize("name", ["builtin", "gpt"])
def test_every_step_is_a_section_with_a_unique_id(name, request):
    walkthrough = request.getfixturevalue(name)
    page = Page(render_html(walkthrough))
    assert len(page.steps) == len(walkthrough.steps)
    assert len(set(page.steps)) == len(page.steps)
    assert page.steps == step_ids(walkthrough.steps)
    assert page.heatmaps == sum(step.heatmap for step in walkthrough.steps)
    for step in walkthrough.steps:
        title, explanation, _ = narrate(step.kind, "en", step.layer, step.head)
        assert title in page.all_text and explanation in page.all_text


def test_repeated_kinds_get_numbered_ids(builtin):
    ids = step_ids(builtin.steps)
    assert "encoder-l1-residual" in ids and "encoder-l1-residual-2" in ids
    assert "decoder-l1-residual-3" in ids  # self-attention, cross-attention, feed-forward


def test_user_text_and_tokens_are_escaped(builtin, gpt):
    for walkthrough in (builtin, gpt):
        html = render_html(walkthrough)
        assert "<script" not in html and "alert(1)</script>" not in html
        assert "<i>" not in html
    html = render_html(builtin)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;" in html
    assert NASTY in Page(html).all_text  # read back as text, exactly what was given
    gpt_page = render_html(gpt)
    assert "<th>&lt;</th>" in gpt_page and "<th>&amp;</th>" in gpt_page and "<th>&#34;</th>" in gpt_page


def test_page_is_self_contained(builtin, gpt):
    for walkthrough in (builtin, gpt):
        for lang in ("en", "zh"):
            html = render_html(walkthrough, lang)
            assert "http://" not in html and "https://" not in html
            assert "url(" not in html and "@import" not in html and "<link" not in html
            assert all(link.startswith("#") for link in Page(html).links)  # only links within the page
            assert "<script" not in html  # no script, so nothing to fail in the console


def test_chinese_page(builtin):
    html = render_html(builtin, "zh")
    page = Page(html)
    assert page.lang == "zh"
    assert label("walkthrough", "zh") in page.all_text
    for name in ("input", "encoder", "decoder", "output"):
        assert SECTIONS[name]["zh"] in page.all_text
        assert f">{SECTIONS[name]['en']}<" not in html
    for step in builtin.steps:
        title, explanation, _ = narrate(step.kind, "zh", step.layer, step.head)
        assert title in page.all_text and explanation in page.all_text
    assert narrate("embedding", "en")[1] not in page.all_text
    assert "Noto Sans CJK SC" in html and "Microsoft YaHei" in html  # CJK fonts by name, none fetched
    with pytest.raises(ValueError):
        render_html(builtin, "fr")


def test_large_matrix_shows_top_left_corner_and_statistics(gpt):
    html = render_html(gpt)
    ids = step_ids(gpt.steps)
    i = next(i for i, s in enumerate(gpt.steps) if s.kind == "ffn_hidden")
    m = gpt.steps[i].matrix
    assert m.shape[1] > 16
    part = section(html, ids[i])
    assert label("corner", "en") in part
    assert label("stats", "en", mean=m.mean(), std=m.std(), min=m.min(), max=m.max()) in part
    first_row = part[part.index("<tbody>"):].split("</tr>")[0]
    assert first_row.count("<td") == 16 + 1  # the corner's 16 columns and a "…" column
    assert f"{m.shape[0]} × {m.shape[1]}" in part  # the shape of the whole matrix
    small = section(html, ids[next(i for i, s in enumerate(gpt.steps) if s.kind == "q")])
    assert label("corner", "en") not in small


def test_mask_shows_minus_infinity_in_grey(builtin):
    html = render_html(builtin)
    i = next(i for i, s in enumerate(builtin.steps) if s.kind == "mask")
    part = section(html, step_ids(builtin.steps)[i])
    masked = int(np.isneginf(builtin.steps[i].matrix).sum())
    assert masked > 0
    assert part.count('<td class="ninf">−∞</td>') == masked
    assert ">0<" in part  # allowed positions show a plain 0


def test_probabilities_get_a_sequential_scale_and_others_a_diverging_one(builtin):
    html = render_html(builtin)
    ids = step_ids(builtin.steps)
    probs = section(html, ids[next(i for i, s in enumerate(builtin.steps) if s.kind == "probs")])
    assert '<figure class="heatmap">' in probs
    reds = section(html, ids[next(i for i, s in enumerate(builtin.steps) if s.kind == "embedding")])
    colours = set(re.findall(r"background:#([0-9a-f]{6})", reds))
    assert any(int(c[:2], 16) > int(c[4:], 16) for c in colours)  # positive: red
    assert any(int(c[:2], 16) < int(c[4:], 16) for c in colours)  # negative: blue
    assert not any(int(c[:2], 16) > int(c[4:], 16) for c in re.findall(r"background:#([0-9a-f]{6})", probs))


def test_each_step_sits_in_a_box_of_the_diagram(builtin, gpt):
    seq2seq = diagram("seq2seq", builtin.config, "en")
    boxes = locate(builtin.steps, seq2seq=True, pre_norm=False)
    assert all(box in seq2seq.at for box in boxes)
    where = dict(zip(step_ids(builtin.steps), boxes))
    assert where["encoder-l1-h1-probs"] == "enc-self"
    assert where["decoder-l1-h1-probs"] == "dec-self"
    assert where["decoder-l1-h1-probs-2"] == "dec-cross"  # the second probs of a decoder layer
    assert where["decoder-l1-ln_out-2"] == "dec-addnorm-cross"
    assert where["encoder-memory"] == "memory" and where["output-logits"] == "linear"

    decoder_only = diagram("gpt", gpt.config, "en")
    assert not any("cross" in box for box in decoder_only.at) and "memory" not in decoder_only.at
    boxes = locate(gpt.steps, seq2seq=False, pre_norm=True)
    assert all(box in decoder_only.at for box in boxes)
    where = dict(zip(step_ids(gpt.steps), boxes))
    assert where["decoder-l1-ln_out"] == "dec-norm-self"  # pre-norm: the norm before attention
    assert where["decoder-l1-ln_out-2"] == "dec-norm-ffn"
    assert where["decoder-l1-residual-2"] == "dec-add-ffn"
    html = render_html(gpt)
    assert "Cross-" not in html and "Masked self-" in html


def test_write_html(builtin, tmp_path):
    path = write_html(builtin, tmp_path / "out" / "walkthrough.html", lang="zh")
    assert path.read_text(encoding="utf-8") == render_html(builtin, "zh")


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


def test_console_check_sees_a_broken_script(tmp_path):
    """The check below would be empty praise if the browser did not report a broken page."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>no_such_function();</script>", encoding="utf-8")
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("no_such_function" in line for line in console_messages(result.stderr))


@pytest.mark.parametrize("name", ["builtin", "gpt"])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_browser_shows_every_step_without_console_errors(name, lang, request, tmp_path):
    walkthrough = request.getfixturevalue(name)
    path = write_html(walkthrough, tmp_path / f"{name}-{lang}.html", lang=lang)
    result = chromium(tmp_path, "--dump-dom", path.as_uri())
    assert console_messages(result.stderr) == []
    dom = Page(result.stdout)
    assert dom.lang == lang
    assert len(dom.steps) == len(walkthrough.steps)
    assert dom.heatmaps == sum(step.heatmap for step in walkthrough.steps)
    text = dom.all_text
    assert label("walkthrough", lang) in text and walkthrough.source in text
    for step in walkthrough.steps:
        assert narrate(step.kind, lang, step.layer, step.head)[0] in text


def test_screenshot_is_not_blank(builtin, tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    path = write_html(builtin, tmp_path / "walkthrough.html")
    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, "--window-size=1280,4000", f"--screenshot={shot}", path.as_uri())
    assert console_messages(result.stderr) == []
    assert shot.stat().st_size > 50_000
    with image_module.open(shot) as image:
        assert image.size == (1280, 4000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # text, tables and diagrams, not a blank or single-colour page
