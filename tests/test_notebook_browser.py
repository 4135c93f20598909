"""The notebook views in headless Chromium, from a plain HTML file holding their fragments as a notebook
holds them: toggling a head removes its lines, hovering a token prints the model's weights, the
heatmaps use matrices.js's palette, labels stay text, and two views keep to themselves."""

import dataclasses
import re

import numpy as np
import pytest
from browser import chromium
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from test_notebook import HOSTILE, TEXT, reference_probs, tiny

from glassformer.explain.render import notebook
from glassformer.explain.render.html import asset
from glassformer.observe.analysis import attribute

LAYER = 1  # the second layer: the view opens on the first, so the selector must work


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(driver, load, reference, attribution): load() opens a fresh copy of the page: two attention views of one
    text (the second with every label hostile), the logit lens and an attribution; reference: the
    attention probabilities recomputed in NumPy; attribution: the Attribution drawn."""
    model, tok = tiny()
    view = notebook.attention(model, tok, TEXT)
    hostile = dataclasses.replace(view, tokens=[HOSTILE] * len(view.tokens))
    attribution = attribute(model, tok.encode(TEXT), tok.encode("x")[0])
    fragments = [view._repr_html_(), hostile._repr_html_(), notebook.lens(model, tok, TEXT)._repr_html_(),
                 notebook.attribution_html(attribution)]
    path = tmp_path_factory.mktemp("notebook") / "views.html"
    path.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                    + "\n".join(f'<div class="cell">{f}</div>' for f in fragments) + "</body></html>", encoding="utf-8")
    d = chromium(1280, 1000)

    def load():
        d.get(path.as_uri())
        roots = d.find_elements(By.CSS_SELECTOR, "div.gfnb")
        assert len(roots) == 4 and all(r.find_elements(By.CSS_SELECTOR, ".gfnb-top") for r in roots)
        return roots

    yield d, load, reference_probs(model, tok, TEXT), attribution
    d.quit()


def errors(d) -> list:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def lines_shown(d, root) -> list[tuple[int, int, int, float]]:
    """(head, query, key, opacity) of every line drawn and not hidden in the view: the segments of
    each head's paths (rows told apart by the tokens' y) and a hovered token's own lines."""
    return [tuple(x) for x in d.execute_script("""
        const root = arguments[0], out = [];
        const row = new Map([...root.querySelectorAll('text.gfnb-token[data-q]')]
          .map((t) => [+t.getAttribute('y') - 4, +t.dataset.q]));
        for (const p of root.querySelectorAll('svg.gfnb-headview path.gfnb-all')) {
          if (getComputedStyle(p).display === 'none') continue;
          for (const m of p.getAttribute('d').matchAll(/M[^,]+,([^L]+)L[^,]+,([^M]+)/g))
            out.push([+p.dataset.head, row.get(+m[1]), row.get(+m[2]), +p.getAttribute('stroke-opacity')]);
        }
        for (const l of root.querySelectorAll('svg.gfnb-headview line'))
          if (getComputedStyle(l).display !== 'none')
            out.push([+l.dataset.head, +l.dataset.q, +l.dataset.k, +l.getAttribute('stroke-opacity')]);
        return out;""", root)]


def choose_layer(root, layer):
    from selenium.webdriver.support.ui import Select

    Select(root.find_element(By.CSS_SELECTOR, ".gfnb-controls select")).select_by_value(str(layer))


def test_a_head_toggled_off_loses_its_lines_in_its_own_view_only(page):
    d, load, probs, _ = page
    first, second, _, _ = load()
    assert d.execute_script("return [typeof start, typeof WORDS, typeof colour, typeof headView]") == ["undefined"] * 4
    ids = d.execute_script("return [...document.querySelectorAll('[id]')].map((e) => e.id)")
    assert len(ids) == 4 and len(set(ids)) == 4 and all(i.startswith("gfnb-") for i in ids)  # one a view, no more
    # layer 1: one line for each weight of at least MIN_LINE (notebook.js), its opacity the weight in 20 steps
    lines = lines_shown(d, first)
    assert sorted((h, q, k) for h, q, k, _ in lines) == [tuple(x) for x in np.argwhere(probs[0] >= 0.002).tolist()]
    for h, q, k, opacity in lines:
        assert abs(opacity - max(round(probs[0, h, q, k] * 20) / 20, 0.02)) < 1e-9
    first.find_element(By.CSS_SELECTOR, 'input[data-head="1"]').click()
    assert {h for h, _, _, _ in lines_shown(d, first)} == {0, 2}
    assert len(first.find_elements(By.CSS_SELECTOR, "canvas[data-head]")) == 2  # its heatmap goes too
    assert {h for h, _, _, _ in lines_shown(d, second)} == {0, 1, 2}  # the other view is untouched
    first.find_element(By.CSS_SELECTOR, 'input[data-head="1"]').click()
    assert {h for h, _, _, _ in lines_shown(d, first)} == {0, 1, 2}
    assert errors(d) == []


def weights_shown(d, root, attribute: str) -> dict[tuple[int, int], float]:
    """The numbers written beside the tokens on hover: (head, other token) -> weight."""
    found = d.execute_script("""return [...arguments[0].querySelectorAll('text.gfnb-weight')]
        .map((t) => [+t.dataset.head, +t.getAttribute(arguments[1]), t.textContent]);""", root, attribute)
    return {(h, i): float(text.replace("−", "-")) for h, i, text in found}


def test_hovering_a_token_keeps_its_lines_and_prints_the_models_weights(page):
    d, load, probs, _ = page
    first, _, _, _ = load()
    choose_layer(first, LAYER)
    T = probs.shape[-1]
    q = T - 1
    ActionChains(d).move_to_element(first.find_element(By.CSS_SELECTOR, f'rect.gfnb-hit[data-q="{q}"]')).perform()
    shown = lines_shown(d, first)
    assert shown and {query for _, query, _, _ in shown} == {q}
    drawn = {(h, k) for h in range(3) for k in range(T) if probs[LAYER, h, q, k] >= 0.002}  # MIN_LINE in notebook.js
    assert {(h, k) for h, _, k, _ in shown} == drawn
    for h, _, k, opacity in shown:  # a hovered token's lines: exactly as opaque as their weights
        assert abs(opacity - probs[LAYER, h, q, k]) <= 1e-6
    numbers = weights_shown(d, first, "data-k")
    # every weight but those that are 0 in the view's 6 decimals (a masked key, or under 5e-7)
    keys = {(h, k) for h in range(3) for k in range(T)}
    assert {x for x in keys if probs[LAYER, x[0], q, x[1]] >= 1e-6} <= set(numbers) <= keys
    for (h, k), x in numbers.items():  # printed with 3 decimals: half a unit of the last place, and float32
        assert abs(x - probs[LAYER, h, q, k]) <= 5e-4 + 1e-6, (h, k, x)
    # the other way: a key's lines come from every query that attends to it
    ActionChains(d).move_to_element(first.find_element(By.CSS_SELECTOR, 'rect.gfnb-hit[data-k="0"]')).perform()
    assert {(key, query) for _, query, key, _ in lines_shown(d, first)} == {
        (0, i) for i in range(T) if probs[LAYER, :, i, 0].max() >= 0.002}
    numbers = weights_shown(d, first, "data-q")
    assert {x for x in keys if probs[LAYER, x[0], x[1], 0] >= 1e-6} <= set(numbers) <= keys
    for (h, i), x in numbers.items():
        assert abs(x - probs[LAYER, h, i, 0]) <= 5e-4 + 1e-6
    ActionChains(d).move_to_element(first.find_element(By.CSS_SELECTOR, ".gfnb-top b")).perform()  # off the token:
    assert len(lines_shown(d, first)) == int((probs[LAYER] >= 0.002).sum())  # every line again, no numbers
    assert weights_shown(d, first, "data-k") == {}
    assert errors(d) == []


def test_heatmaps_use_matrices_js_palette_and_tip_the_value(page):
    d, load, probs, result = page
    first, _, lens, attribution = load()
    choose_layer(first, LAYER)
    # matrices.js's own colour(), as a global of this test page only (with the tip its pages have)
    d.execute_script("const tip = document.createElement('div'); tip.id = 'gf-tip'; tip.hidden = true;"
                     "document.body.appendChild(tip);"
                     "const s = document.createElement('script'); s.textContent = arguments[0];"
                     "document.head.appendChild(s);", asset("matrices.js"))
    h = 2
    canvas = first.find_element(By.CSS_SELECTOR, f'canvas[data-head="{h}"]')
    side = int(canvas.get_attribute("data-cell"))
    T = probs.shape[-1]
    cells = [(r, c) for r in range(T) for c in range(r + 1)][::7]
    drawn = d.execute_script("""
        const [canvas, side, cells] = arguments, ctx = canvas.getContext('2d');
        const at = (r, c) => ctx.getImageData(c * side + side / 2, r * side + side / 2, 1, 1).data;
        return cells.map(([r, c]) => [...at(r, c)].slice(0, 3));
    """, canvas, side, cells)
    wanted = d.execute_script("return arguments[0].map((x) => colour({ probabilities: true }, x));",
                              [float(probs[LAYER, h, r, c]) for r, c in cells])
    # the page rounds to 6 decimals: each channel moves by < 0.001 before it is rounded to an integer
    assert np.abs(np.array(drawn) - np.array(wanted)).max() <= 1, (drawn, wanted)
    assert len({tuple(x) for x in wanted}) > 3  # the cells are not all one colour
    r, c = T - 1, 3
    ActionChains(d).move_to_element_with_offset(canvas, c * side + side // 2 - canvas.size["width"] // 2,
                                                r * side + side // 2 - canvas.size["height"] // 2).perform()
    tip = first.find_element(By.CSS_SELECTOR, ".gfnb-tip")
    assert tip.is_displayed()
    value = float(re.search(r"probability: ([0-9.e−-]+)", tip.text).group(1).replace("−", "-"))
    assert abs(value - probs[LAYER, h, r, c]) <= 5e-7 + 1e-6
    # the lens's cells: the same palette, over the probability each cell's top token has
    td = lens.find_element(By.CSS_SELECTOR, "tbody tr td")
    ActionChains(d).move_to_element(td).perform()
    p = float(lens.find_element(By.CSS_SELECTOR, ".gfnb-tip").text.split("\n")[1].split()[-1])
    rgb = [int(x) for x in re.findall(r"\d+", td.value_of_css_property("background-color"))[:3]]
    expected = d.execute_script("return colour({ probabilities: true }, arguments[0]);", p)
    assert np.abs(np.array(rgb) - np.array(expected)).max() <= 1
    # a signed grid (attribution: layer × head, then the feed-forward): diverging around 0 over its largest |value|
    table = np.concatenate([result.heads.numpy(), result.ffn.numpy()[:, None]], axis=1).astype(np.float64)
    cells = attribution.find_elements(By.CSS_SELECTOR, "tbody td")
    assert len(cells) == table.size
    rgb = [[int(x) for x in re.findall(r"\d+", td.value_of_css_property("background-color"))[:3]] for td in cells]
    expected = d.execute_script("return arguments[0].map((x) => colour({ scale: arguments[1] }, x));",
                                table.ravel().tolist(), float(np.abs(table).max()))
    assert np.abs(np.array(rgb) - np.array(expected)).max() <= 1
    assert errors(d) == []


def test_hostile_labels_show_as_text_and_the_language_switches(page):
    d, load, _, _ = page
    _, second, _, _ = load()
    tokens = [t.text for t in second.find_elements(By.CSS_SELECTOR, "text.gfnb-token")]
    assert tokens and set(tokens) == {HOSTILE}
    assert d.execute_script("return document.querySelectorAll('script').length") == 4  # the views' own, no more
    assert second.find_element(By.CSS_SELECTOR, 'input[data-head="0"]').find_element(By.XPATH, "..").text == "head 1"
    second.find_element(By.CSS_SELECTOR, '.gfnb-langs button[data-lang="zh"]').click()
    assert second.find_element(By.CSS_SELECTOR, 'input[data-head="0"]').find_element(By.XPATH, "..").text == "第 1 头"
    assert second.find_element(By.CSS_SELECTOR, "select option").text == "第 1 层"
    first = d.find_elements(By.CSS_SELECTOR, "div.gfnb")[0]  # the other view keeps its language
    assert first.find_element(By.CSS_SELECTOR, "select option").text == "Layer 1"
    assert errors(d) == []


def test_a_view_draws_as_jupyterlab_inserts_it(page):
    """JupyterLab sets an output's HTML with innerHTML (where scripts do not run), re-creates each
    script element in place, and attaches the output: the view must draw from there."""
    d, load, probs, _ = page
    load()
    model, tok = tiny()
    fragment = notebook.attention(model, tok, TEXT)._repr_html_()
    drawn = d.execute_script("""
        const host = document.createElement('div');
        host.innerHTML = arguments[0];
        for (const old of [...host.getElementsByTagName('script')]) {
          const clone = document.createElement('script');
          for (const a of old.attributes) clone.setAttribute(a.name, a.value);
          clone.textContent = old.textContent;
          old.parentNode.replaceChild(clone, old);
        }
        const segments = () => [...host.querySelectorAll('svg.gfnb-headview path')]
          .reduce((n, p) => n + p.getAttribute('d').split('M').length - 1, 0);
        const before = segments();
        document.body.appendChild(host);
        return [before, segments()];""", fragment)
    assert drawn == [0, int((probs[0] >= 0.002).sum())]  # nothing while detached; layer 1's lines once attached
    assert errors(d) == []
