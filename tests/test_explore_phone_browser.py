"""The explorer on a phone (390 × 844, touch, as tests/browser.py's chromium(mobile=True) emulates
one): nothing is cut off on any block or tab of the articles' example and of a GPT as wide as a
trained one, nor on the `glassformer explain --html` page; the tip stays on screen and a tap shows
it; a diagram block scrolls to its steps; Large text labels heatmaps at a readable size; a refused
input greys the view it leaves; the page says when it has no font for Chinese.
Skipped, with the reason, where Selenium, Chromium or chromedriver is missing or cannot start."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from glassformer.checkpoint import load
from glassformer.explain.render.html import write_html
from glassformer.explain.walkthrough import gpt_walkthrough

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from browser import Server, char_gpt, chromium, errors, settle, shown_error, tab  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

WIDTH, HEIGHT = 390, 844
SHORT = "ROMEO: hi there"
LONG = "ROMEO: is the day so young? the night is long, and so are we."  # 62 characters, 62 tokens

# Every element cut off: left of its nearest clipping ancestor once every scroller is scrolled back
# to 0 (so it can never be scrolled into view), or, with no clipping ancestor, outside the window.
# Also a scroller whose scrollLeft does not reach 0. Elements inside an svg are the svg's business.
CUT = """
const W = document.documentElement.clientWidth;
const all = [...document.querySelectorAll("body *")].filter((e) => !(e.closest("svg") && e.tagName !== "svg"));
const overflow = (e) => getComputedStyle(e).overflowX;
const scrollers = all.filter((e) => ["auto", "scroll"].includes(overflow(e)) && e.scrollWidth > e.clientWidth + 1);
for (const s of scrollers) s.scrollLeft = 0;
const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
  (typeof e.className === "string" && e.className.trim() ? "." + e.className.trim().split(/\\s+/).join(".") : "") +
  (e.closest("[data-step]") ? " of " + e.closest("[data-step]").dataset.step : "");
const bad = scrollers.filter((s) => s.scrollLeft !== 0).map((s) => "cannot scroll back: " + name(s));
for (const e of all) {
  const r = e.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  let a = e.parentElement;
  while (a !== document.body && overflow(a) === "visible") a = a.parentElement;
  if (a !== document.body) {
    const left = a.getBoundingClientRect().left + a.clientLeft;
    if (r.left < left - 1) bad.push(`${name(e)} starts at ${r.left | 0}, left of ${name(a)} at ${left | 0}`);
  } else if (r.left < -1 || r.right > W + 1) {
    bad.push(`${name(e)} spans ${Math.round(r.left)}..${Math.round(r.right)}, outside the window 0..${W}`);
  }
}
const page = document.documentElement.scrollWidth;
if (page > W + 1) bad.push(`the page is ${page} px wide`);
return bad;
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained GPT as wide as a small trained one: 1 layer, 4 heads, d 128, 64 positions."""
    return char_gpt(tmp_path_factory.mktemp("phone") / "gpt-d128", block_size=64, n_layer=1, n_head=4, n_embd=128)


@pytest.fixture(scope="module")
def builtin_server():
    server = Server()  # trains the articles' tiny model for a moment while the GPT tests run
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gpt_server(checkpoint):
    server = Server("--model", str(checkpoint))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def phone():
    d = chromium(WIDTH, HEIGHT, mobile=True)
    yield d
    d.quit()


def open_page(d, server, model: str = "") -> None:
    d.get(server.url + (f"?model={model}" if model else ""))
    settle(d)
    assert d.execute_script("return document.documentElement.clientWidth") == WIDTH


def type_text(d, text: str) -> None:
    d.execute_script("const t = document.getElementById('gx-text'); t.value = arguments[0];"
                     "t.dispatchEvent(new Event('input'))", text)
    settle(d)


# Every step card drawn (the page draws those in or near the view, the rest as they are scrolled near).
DRAW_ALL = "document.querySelectorAll('#gx-panels section.step.pending').forEach(fillCard)"


def every_view_uncut(d) -> dict[str, list[str]]:
    """The cut-off elements of every block's steps and of every tab, by view."""
    found = {}
    for box in d.execute_script("return [...document.querySelectorAll('#gx-diagram g.box:not(.empty)')]"
                                ".map((g) => g.dataset.box)"):
        d.execute_script("state.tab = 'steps'; state.box = arguments[0]; render()", box)
        settle(d)  # the page then asks for the block's steps whole, and draws them again
        d.execute_script(DRAW_ALL)
        found[box] = d.execute_script(CUT)
    for name in d.execute_script("return tabs()"):
        tab(d, name)
        found[name] = d.execute_script(CUT)
    return {view: bad[:5] for view, bad in found.items() if bad}


# ---------------------------------------------------------------------------------------------
# Nothing cut off


def test_phone_cuts_nothing_off_a_wide_gpt(phone, gpt_server, checkpoint, tmp_path):
    d = phone
    open_page(d, gpt_server)
    type_text(d, LONG)
    assert shown_error(d) == ""
    assert every_view_uncut(d) == {}
    # The same on the self-contained walkthrough page of the same model (a shorter text: the same widths).
    model, tok = load(checkpoint)
    page = write_html(gpt_walkthrough(model, tok, SHORT), tmp_path / "walkthrough.html")
    d.get(page.as_uri())
    assert d.execute_script("return document.querySelectorAll('figure.operand').length") > 20
    assert d.execute_script(CUT) == []
    assert errors(d) == []


def test_phone_cuts_nothing_off_the_articles_example(phone, builtin_server):
    d = phone
    open_page(d, builtin_server, "articles")  # the command opens on the village GPT
    assert every_view_uncut(d) == {}
    assert errors(d) == []


# ---------------------------------------------------------------------------------------------
# Touch and scrolling


def tip_box(d) -> dict:
    return d.execute_script("const t = document.getElementById('gf-tip'); const r = t.getBoundingClientRect();"
                            "return {hidden: t.hidden, text: t.textContent, left: r.left, right: r.right,"
                            " top: r.top, bottom: r.bottom}")


def test_phone_tip_stays_on_screen_and_a_tap_shows_it(phone, gpt_server):
    d = phone
    open_page(d, gpt_server)
    type_text(d, SHORT)
    d.execute_script("state.tab = 'steps'; state.box = 'dec-self'; render()")
    settle(d)  # the page then asks for the block's steps whole, and draws them again
    d.execute_script("showStep('dec.0.self.h0.q')")  # cards are drawn as they come into view
    # The result Q (15 × 32, a heatmap wider than the window) brought to 10 px above the window's
    # bottom; the pointer at its right-most visible edge, 16 px above the window's bottom: a tip
    # placed right of and below it would not fit.
    heat = d.find_element(By.CSS_SELECTOR, 'figure.result[data-step="dec.0.self.h0.q"] .band-plot canvas')
    box = d.execute_script("""
        const c = arguments[0];
        window.scrollBy(0, c.getBoundingClientRect().bottom - (innerHeight - 10));
        const r = c.getBoundingClientRect();
        let shown = Math.min(r.right, innerWidth);  // its right-most visible edge: clipped by every scroller around it
        for (let e = c.parentElement; e; e = e.parentElement) {
          if (getComputedStyle(e).overflowX !== "visible") shown = Math.min(shown, e.getBoundingClientRect().right);
        }
        return {left: r.left, top: r.top, width: r.width, height: r.height, right: shown};""", heat)
    time.sleep(0.2)  # the scroll's event hides any tip; let it pass before hovering
    x, y = box["right"] - 6, HEIGHT - 16
    assert box["top"] < y, f"Q is not at the bottom: {box}"
    d.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})  # a mouse, there
    tip = tip_box(d)
    assert not tip["hidden"] and tip["text"].startswith("dec.0.self.h0.q[")
    assert tip["text"].count("\n") >= 2  # the value and what it came from: a tall tip, flipped above the pointer
    assert x + 14 + (tip["right"] - tip["left"]) > WIDTH and tip["bottom"] <= y  # moved left, and above
    assert 0 <= tip["left"] and tip["right"] <= WIDTH and 0 <= tip["top"] and tip["bottom"] <= HEIGHT, tip
    d.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 1, "y": 1})

    # A tap (a touch gesture, not a mouse) on K's heatmap shows the tapped cell's tip.
    d.execute_script("document.getElementById('gf-tip').hidden = true")
    k = d.execute_script("""
        const c = document.querySelector('figure.result[data-step="dec.0.self.h0.k"] .band-plot canvas');
        c.scrollIntoView({block: 'center'});
        const r = c.getBoundingClientRect();
        return {left: r.left, top: r.top, width: r.width, height: r.height, n: c.height, m: c.width};""")
    time.sleep(0.2)
    x, y = k["left"] + 0.3 * k["width"], k["top"] + 0.55 * k["height"]
    d.execute_cdp_cmd("Input.synthesizeTapGesture", {"x": x, "y": y, "gestureSourceType": "touch"})
    time.sleep(0.2)
    r, c = int((y - k["top"]) / k["height"] * k["n"]), int((x - k["left"]) / k["width"] * k["m"])
    tip = tip_box(d)
    assert not tip["hidden"] and tip["text"].startswith(f"dec.0.self.h0.k[{r}, {c}] = "), tip["text"]
    assert 0 <= tip["left"] and tip["right"] <= WIDTH and 0 <= tip["top"] and tip["bottom"] <= HEIGHT, tip


def test_phone_diagram_block_scrolls_to_its_steps(phone, gpt_server):
    d = phone
    open_page(d, gpt_server)
    tab(d, "steps")  # a GPT opens on its Flow tab
    d.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.1)
    first = "return document.querySelector('#gx-panels .step').getBoundingClientRect().top"
    assert d.execute_script(first) > HEIGHT, "the steps start below the window: the test needs them out of view"
    d.find_element(By.CSS_SELECTOR, '#gx-diagram g.box[data-box="dec-ffn"]').click()
    end, seen = time.time() + 5, []
    while time.time() < end and (len(seen) < 4 or len(set(seen[-4:])) > 1):  # a smooth scroll, until it rests
        seen.append(d.execute_script("return window.scrollY"))
        time.sleep(0.08)
    where = d.execute_script("""
        const step = document.querySelector('#gx-panels .step');
        const title = step.querySelector('h3').getBoundingClientRect();
        return {id: step.id, top: title.top, bottom: title.bottom,
                tabs: document.getElementById('gx-tabs').getBoundingClientRect().bottom};""")
    assert where["id"].startswith("gx-step-dec.0.ffn."), where
    assert seen[-1] > 100 and where["tabs"] <= where["top"] and where["bottom"] <= HEIGHT, (seen[-1], where)
    # A card scrolled to (a link, the browser's find) comes to rest below the sticky tabs, not under them.
    last = d.execute_script("const s = [...document.querySelectorAll('#gx-panels .step')].pop(); s.scrollIntoView();"
                            "return [s.querySelector('h3').getBoundingClientRect().top,"
                            " document.getElementById('gx-tabs').getBoundingClientRect().bottom]")
    assert last[1] <= last[0], f"the tab bar (bottom {last[1]}) covers the card's title (top {last[0]})"


# ---------------------------------------------------------------------------------------------
# Large text, a refused input, the Chinese font


# The font size of the smallest text the elements under `selector` hold themselves (svg text aside).
SMALLEST_TEXT = """
let least = Infinity;
for (const e of document.querySelectorAll(arguments[0] + " *")) {
  if (e.closest("svg") || ![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  if (e.getBoundingClientRect().width) least = Math.min(least, parseFloat(getComputedStyle(e).fontSize));
}
return least;
"""


def test_large_text_labels_heatmaps_readably(phone, gpt_server):
    """Large text: every label at least 12 px, the heatmaps', the bands' row labels (canvases) and
    the Flow tab's; the Flow tab's smallest text larger than without it."""
    d = phone
    open_page(d, gpt_server)
    type_text(d, LONG[:30])  # 30 tokens: at 390 px, cells of 9 px and labels of 8 px but for Large text's rule
    tab(d, "flow")
    flow_before = d.execute_script(SMALLEST_TEXT, ".flow")
    tab(d, "attention")
    # Every label the canvases write, with its font size and canvas: fillText recorded as the page calls it.
    d.execute_script("window.labels = []; const fill = CanvasRenderingContext2D.prototype.fillText;"
                     "CanvasRenderingContext2D.prototype.fillText = function (text, x, y) {"
                     "  window.labels.push([String(text), parseFloat(this.font), this.canvas.className]);"
                     "  return fill.apply(this, arguments); }")
    d.find_element(By.ID, "gx-big").click()
    settle(d)
    try:
        labels = d.execute_script("return window.labels")
        n_tokens = len(d.find_elements(By.CSS_SELECTOR, "#gx-tokens .chip"))
        n_heads = len(d.find_elements(By.CSS_SELECTOR, "#gx-panels canvas.heatmap"))
        assert n_tokens == 30 and n_heads == 4
        assert len(labels) >= 2 * n_tokens * n_heads, "every row and column of every head is labelled"
        assert min(size for _, size, _ in labels) >= 12
        assert d.execute_script(CUT) == []  # larger text, larger heatmaps: still nothing cut off
        # The self-attention's equations, drawn as bands at d 128 (W_Q's 128 rows 2 px each without
        # Large text, their labels 7 px): the bands' row labels, in their canvases.
        d.execute_script("window.labels = []; state.tab = 'steps'; state.box = 'dec-self'; render()")
        settle(d)
        d.execute_script("showStep('dec.0.self.h0.q')")  # Q = X·W_Qᵀ + b, drawn as it comes into view
        bands = [size for _, size, kind in d.execute_script("return window.labels") if kind == "labels"]
        assert len(bands) >= 3 * n_tokens and min(bands) >= 12, sorted(bands)[:5]
        tab(d, "flow")
        flow_after = d.execute_script(SMALLEST_TEXT, ".flow")
        assert flow_after >= 12 and flow_after > flow_before, (flow_before, flow_after)
    finally:
        d.find_element(By.ID, "gx-big").click()
        settle(d)


def test_a_refused_input_marks_the_view_it_leaves(phone, builtin_server):
    d = phone
    open_page(d, builtin_server, "articles")  # the command opens on the village GPT
    stale = "return [document.getElementById('gx-panels').classList.contains('stale'), (() => {" \
            " const n = document.getElementById('gx-stale'); return n && !n.hidden ? n.textContent : ''; })()]"
    assert d.execute_script(stale) == [False, ""]
    text = d.find_element(By.ID, "gx-text").get_attribute("value")
    type_text(d, "x" * 600)
    assert "600 characters" in shown_error(d)
    marked, line = d.execute_script(stale)
    assert marked and "previous text" in line
    assert float(d.execute_script("return getComputedStyle(document.getElementById('gx-panels')).opacity")) < 0.6
    type_text(d, text[:-1])
    assert shown_error(d) == "" and d.execute_script(stale) == [False, ""]
    assert d.execute_script("return state.result.walkthrough.source") == text[:-1]
    assert [m for m in errors(d) if "/api/run" not in m] == []  # only the refused request itself


def test_chinese_without_a_font_says_so(phone, gpt_server):
    """The notice shows exactly where fontconfig (which Chromium asks) has no font for Chinese."""
    if not shutil.which("fc-list"):
        pytest.skip("needs fontconfig's fc-list to know whether a Chinese font is installed")
    has_font = bool(subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout.strip())
    d = phone
    open_page(d, gpt_server)
    note = "const n = document.getElementById('gx-font-note'); return n && !n.hidden ? n.textContent : ''"
    assert d.execute_script(note) == ""
    d.find_element(By.CSS_SELECTOR, '#gx-langs button[data-lang="zh"]').click()
    shown = d.execute_script(note)
    assert (shown != "") == (not has_font), shown
    if shown:
        assert "No Chinese font" in shown and "没有中文字体" in shown
    d.find_element(By.CSS_SELECTOR, '#gx-langs button[data-lang="en"]').click()
    assert d.execute_script(note) == ""
    # The words: one layer is "1 layer" (the next token's KV cache after "next").
    tab(d, "next")
    d.find_element(By.ID, "gx-next-greedy").click()
    settle(d)
    assert d.find_element(By.CSS_SELECTOR, "#gx-last-step .cache p").text.startswith("KV cache: 1 layer, ")
    d.find_element(By.ID, "gx-undo").click()
    settle(d)
    assert errors(d) == []
