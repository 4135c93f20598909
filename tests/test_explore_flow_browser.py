"""The Flow and Analyses tabs in a real browser (tests/browser.py: `glassformer explore` started as a
user starts it, headless Chromium through Selenium): the flow draws on opening, its numbers are the
model's (a Trace and the softmax on the same ids), it follows a typed change, a sampling slider and a
clicked token, a click on an element opens its steps; attribution and patching draw their heatmaps
with the library's numbers, and a corrupt text of another length is refused in words. No console
errors but the refusal's own 422. Skipped, with the reason, where the browser cannot start."""

import time

import pytest
import torch

from glassformer.checkpoint import load
from glassformer.observe import analysis
from glassformer.observe.trace import Trace

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from browser import Server, char_gpt, chromium, errors, settle, tab  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny untrained GPT (2 layers, 2 heads, d 16) on characters."""
    return char_gpt(tmp_path_factory.mktemp("flow") / "tiny-gpt", block_size=32, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture(scope="module")
def page(checkpoint):
    server = Server("--model", str(checkpoint))
    d = chromium(1440, 900)
    try:
        d.get(server.url)
        wait_flow(d, "ROMEO:")
        yield d
    finally:
        d.quit()
        server.stop()


def wait_flow(d, text: str, timeout: float = 15.0) -> dict:
    """Waits until the flow drawn is the one of `text` (flow.js marks the request it drew) -> that request."""
    import json

    settle(d)
    end = time.time() + timeout
    while time.time() < end:
        drawn = d.execute_script("return document.body.dataset.flow || ''")
        if drawn and json.loads(drawn)["text"] == text:
            settle(d)
            time.sleep(0.4)  # the strips' animation (320 ms)
            return json.loads(drawn)
        time.sleep(0.05)
    raise AssertionError(f"the flow of {text!r} was not drawn")


def expected(checkpoint, text: str, position: int = -1, temperature: float = 1.0):
    """The model's residual norms after each block and its next-token probabilities at `position`."""
    model, tok = load(checkpoint)
    ids = tok.encode(text)
    with torch.no_grad(), Trace(model) as trace:
        logits = model(torch.tensor([ids]))[0, position]
    norms = [float(trace[f"blocks.{i}"][0, position].double().norm()) for i in range(model.config.n_layer)]
    return model, ids, norms, torch.softmax(logits.double() / temperature, -1)


def shown(d):
    """The flow's residual norms (one a layer) and its probability bars (id -> p), as the page holds them."""
    bars_css = ".frow[data-layer] .nbar.resid"  # the residual stream's norm after each layer
    norms = [float(x.get_attribute("data-norm")) for x in d.find_elements(By.CSS_SELECTOR, bars_css)]
    bars = {int(r.get_attribute("data-id")): float(r.get_attribute("data-p"))
            for r in d.find_elements(By.CSS_SELECTOR, "#gx-flow-out .out-row") if r.is_displayed()}
    return norms, bars


def check(d, checkpoint, text, position=-1, temperature=1.0):
    _, _, norms, probs = expected(checkpoint, text, position, temperature)
    got_norms, bars = shown(d)
    assert got_norms == pytest.approx(norms, rel=1e-6)  # float32 sums: the server may use another thread count
    assert len(bars) == 10
    for i, p in bars.items():
        assert p == pytest.approx(float(probs[i]), abs=2e-6)
    assert max(bars, key=bars.get) == int(probs.argmax())
    return got_norms, bars


def test_flow_draws_and_follows_the_input(page, checkpoint):
    d = page
    assert d.find_element(By.CSS_SELECTOR, "#gx-tabs button.on").get_attribute("data-tab") == "flow"
    assert len(d.find_elements(By.CSS_SELECTOR, "#gx-flow canvas.strip")) >= 2 * 6  # Q, K, V, out, MLP, resid a layer
    before = check(d, checkpoint, "ROMEO:")
    # A typed change: the numbers change, and are the new text's
    box = d.find_element(By.ID, "gx-text")
    box.send_keys(" hi")
    wait_flow(d, "ROMEO: hi")
    after = check(d, checkpoint, "ROMEO: hi")
    assert after[0] != before[0]
    # The temperature slider: the probabilities at the end follow it
    d.execute_script("const s = document.getElementById('gx-flow-temperature'); s.value = 0.5;"
                     "s.dispatchEvent(new Event('input'));")
    time.sleep(0.2)
    wait_flow(d, "ROMEO: hi")
    check(d, checkpoint, "ROMEO: hi", temperature=0.5)
    d.execute_script("const s = document.getElementById('gx-flow-temperature'); s.value = 1;"
                     "s.dispatchEvent(new Event('input'));")
    # A clicked token: the flow follows position 2, its query attends to positions 0..2
    d.find_elements(By.CSS_SELECTOR, "#gx-tokens .chip")[2].click()
    time.sleep(0.2)
    wait_flow(d, "ROMEO: hi")
    assert d.find_element(By.CSS_SELECTOR, "#gx-flow-chips .chip.followed").text == "M"
    attention = d.find_element(By.CSS_SELECTOR, ".frow[data-layer='0'] canvas.attn-map")
    assert attention.get_attribute("data-rows") == "[3,3]"
    check(d, checkpoint, "ROMEO: hi", position=2)
    assert errors(d) == []


def test_an_element_opens_its_steps(page):
    d = page
    tab(d, "flow")
    d.find_element(By.CSS_SELECTOR, ".frow[data-layer='1'] canvas.attn-map").click()
    settle(d)
    assert d.execute_script("return [state.tab, state.box, state.layer]") == ["steps", "dec-self", 1]
    assert d.find_element(By.CSS_SELECTOR, "#gx-tabs button.on").get_attribute("data-tab") == "steps"
    head = d.execute_script("return state.head")
    # the clicked head's attention weights: drawn, and scrolled to
    top = d.execute_script(f"const c = document.getElementById('gx-step-dec.1.self.h{head}.probs');"
                           "return c && c.getBoundingClientRect().top - document.getElementById('gx-main')"
                           ".getBoundingClientRect().top")
    assert top is not None and 0 <= top < 200
    tab(d, "flow")
    d.find_element(By.CSS_SELECTOR, ".frow[data-layer='0'] canvas.strip.mlp").click()
    settle(d)
    assert d.execute_script("return [state.tab, state.box, state.layer]") == ["steps", "dec-ffn", 0]
    assert errors(d) == []


def test_attribution_and_patching_render(page, checkpoint):
    d = page
    text = d.execute_script("return state.text")
    tab(d, "analyses")
    end = time.time() + 15
    while time.time() < end and not d.find_elements(By.ID, "gx-patch-resid"):
        time.sleep(0.1)
    settle(d)
    assert d.find_element(By.ID, "gx-attr-heatmap").size["width"] > 0
    model, tok = load(checkpoint)
    ids = tok.encode(text)
    with torch.no_grad():
        top = int(model(torch.tensor([ids]))[0, -1].argmax())
    largest = analysis.attribute(model, ids, top).top(1)[0]
    first = d.find_element(By.CSS_SELECTOR, "#gx-attr-top tr")
    assert (int(first.get_attribute("data-layer")), first.get_attribute("data-head")) == \
        (largest[0], "mlp" if largest[1] is None else str(largest[1]))
    assert float(first.get_attribute("data-value")) == pytest.approx(largest[2], rel=1e-6)
    resid = d.find_element(By.ID, "gx-patch-resid")
    assert resid.size["width"] > 0 and d.find_element(By.ID, "gx-patch-heads").size["width"] > 0
    corrupt = d.find_element(By.ID, "gx-corrupt").get_attribute("value")
    assert len(tok.encode(corrupt)) == len(ids) and corrupt != text  # the default: one token changed
    # A corrupt text of another length: the library refuses, and the page says so
    field = d.find_element(By.ID, "gx-corrupt")
    field.clear()
    field.send_keys(text + "zz", Keys.ENTER)
    settle(d)
    refusal = d.find_element(By.ID, "gx-patch-refused").text
    assert f"got {len(ids)} and {len(ids) + 2} tokens" in refusal and "same number of tokens" in refusal
    logged = errors(d)
    assert all("/api/patch" in e and "422" in e for e in logged), logged
