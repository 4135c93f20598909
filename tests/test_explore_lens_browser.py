"""The Steps tab at a real width and the dot-product lens, in headless Chromium at 1440 × 900 on a
1-layer d 128 GPT (X 25 × 128 and W_Qᵀ 128 × 32 beside Q 25 × 32): rows of the operands line up with
the result's, hover lights the operand row and column a cell is made of, a click opens the lens
whose numbers (read from the page) multiply and sum to the cell's value, which is the library's own;
an edit made in the lens is outlined in the operand and said where it lies outside the weight's
table; a 60-character input hovered all over draws without a console error."""

import math
import time

import numpy as np
import pytest

from glassformer.checkpoint import load
from glassformer.explain.walkthrough import gpt_walkthrough

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from browser import Server, char_gpt, chromium, errors, settle, shown_error, tab  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

TEXT = "ROMEO: wherefore art thou"  # 25 characters, 25 tokens
LONG = "ROMEO: wherefore art thou romeo, deny thy father and refuse!"  # 60
Q = "dec.0.self.h0.q"
ROW, COL = 13, 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return char_gpt(tmp_path_factory.mktemp("lens") / "d128", block_size=64, n_layer=1, n_head=4, n_embd=128)


@pytest.fixture(scope="module")
def driver():
    d = chromium(1440, 900)
    yield d
    d.quit()


def number(text: str) -> float:
    return -math.inf if text == "null" else float(text)


def plot(d, role: str):
    return d.find_element(By.CSS_SELECTOR, f'[id="gx-step-{Q}"] figure[data-role="{role}"] .band-plot')


def hover(d, element, r: int, c: int, row_px: float, col_px: float) -> None:
    """The mouse on the middle of cell (r, c) of a band."""
    box = element.rect
    ActionChains(d).move_to_element_with_offset(element, (c + 0.5) * col_px - box["width"] / 2,
                                                (r + 0.5) * row_px - box["height"] / 2).perform()


def lit(d, element) -> list[dict]:
    return d.execute_script("return [...arguments[0].querySelectorAll('.lit')].map((e) => "
                            "({top: e.offsetTop, left: e.offsetLeft, width: e.offsetWidth, height: e.offsetHeight}))",
                            element)


def test_steps_at_d128_align_light_and_the_lens_recomputes_the_cell(driver, checkpoint):
    d = driver
    model, tok = load(checkpoint)
    server = Server("--model", str(checkpoint))
    try:
        d.get(server.url)
        settle(d)
        box = d.find_element(By.ID, "gx-text")
        box.clear()
        box.send_keys(TEXT)
        settle(d)
        tab(d, "steps")  # a GPT opens on its Flow tab
        assert len(d.find_elements(By.CSS_SELECTOR, "#gx-tokens .chip")) == 25
        # Cards are drawn as they come near the view: the block's last one waits until scrolled to.
        last = "const s = [...document.querySelectorAll('#gx-panels section.step')].pop();"
        assert d.execute_script(last + "return s.classList.contains('pending') && !s.querySelector('figure')")
        d.execute_script(last + "s.scrollIntoView()")
        for _ in range(40):  # the IntersectionObserver's callback comes with a later frame
            if d.execute_script(last + "return !s.classList.contains('pending') && !!s.querySelector('figure')"):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the last card, scrolled to, was not drawn")
        d.execute_script("showStep(arguments[0])", Q)  # scrolled to, drawn with what is near it

        # Rows: X (the normed input, 25 × 128) and Q (25 × 32) share the row height and the top edge.
        x, q, wt = plot(d, "left"), plot(d, "result"), plot(d, "right")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", q)
        geo = d.execute_script("""
            const fig = (role) => document.querySelector(`[id="gx-step-${arguments[0]}"] figure[data-role="${role}"]`);
            const out = {};
            for (const role of ["left", "right", "result"]) {
              const f = fig(role), p = f.querySelector(".band-plot").getBoundingClientRect();
              out[role] = {top: p.top, left: p.left, width: p.width, height: p.height, rowPx: Number(f.dataset.rowPx)};
            }
            return out;""", Q)
        left, right, result = geo["left"], geo["right"], geo["result"]
        assert left["rowPx"] == result["rowPx"] >= 9, "rows tall enough for their labels"
        assert left["height"] == pytest.approx(result["height"], abs=1) == 25 * result["rowPx"]
        for i in (0, ROW, 24):  # row i of X beside row i of Q
            assert abs((left["top"] + i * left["rowPx"]) - (result["top"] + i * result["rowPx"])) <= 1
        # Columns: W_Qᵀ (128 × 32) above Q, each of its 32 columns over the same column of Q.
        assert abs(right["left"] - result["left"]) <= 1 and abs(right["width"] - result["width"]) <= 1
        assert right["top"] + right["height"] <= result["top"]
        col_px = result["width"] / 32

        # Hover Q[ROW, COL]: row ROW of X and column COL of W_Qᵀ light up; hover X[ROW, 7]: row ROW of Q.
        hover(d, q, ROW, COL, result["rowPx"], col_px)
        (row,) = lit(d, x)
        assert abs(row["top"] - (ROW + 0.5) * left["rowPx"] + row["height"] / 2) <= 1
        assert row["width"] >= left["width"] - 1
        (col,) = lit(d, wt)
        assert abs(col["left"] - (COL + 0.5) * col_px + col["width"] / 2) <= 1
        assert col["height"] >= right["height"] - 1
        tip = d.find_element(By.ID, "gf-tip").get_attribute("textContent")
        assert tip.startswith(f"{Q}[{ROW}, {COL}] = ")
        hover(d, x, ROW, 7, left["rowPx"], left["width"] / 128)
        (row,) = lit(d, q)
        assert abs(row["top"] - (ROW + 0.5) * result["rowPx"] + row["height"] / 2) <= 1

        # Click Q[ROW, COL]: the lens lists X's row, W_Q's row, their 128 products, the sum and the bias.
        hover(d, q, ROW, COL, result["rowPx"], col_px)
        ActionChains(d).click().perform()
        settle(d)
        lens = d.find_element(By.CSS_SELECTOR, f'[id="gx-step-{Q}"] .lens')
        read = lambda css: [number(e.get_attribute("data-value")) for e in lens.find_elements(By.CSS_SELECTOR, css)]  # noqa: E731
        a, b, products = read("tr.left td"), read("tr.right td"), read("tr.products td")
        (value,) = read(".lens-value")
        (bias,) = read(".lens-fact.bias")
        assert len(a) == len(b) == len(products) == 128
        assert np.allclose(np.array(a) * np.array(b), products, rtol=1e-12, atol=0)
        # float32 rounding of a 128-term dot product: ≤ 128 · 6e-8 of Σ|a·b|, well inside 1e-5 of it.
        assert abs(sum(products) + bias - value) <= 1e-5 * (sum(abs(p) for p in products) + abs(bias)) + 1e-7
        # ... and the value is the library's, whose rows the lens showed.
        walk = gpt_walkthrough(model, tok, TEXT)
        assert value == pytest.approx(float(walk.step(Q).values[ROW, COL]), abs=1e-7)
        assert np.array_equal(np.float32(a), walk.step("dec.0.self.norm").values[ROW])
        assert np.array_equal(np.float32(b), walk.step(f"{Q}.weight").values[COL])
        # The words are there in both languages (the numbers are the same).
        assert "products" in lens.text
        d.find_element(By.CSS_SELECTOR, '#gx-langs button[data-lang="zh"]').click()
        assert "乘积" in d.find_element(By.CSS_SELECTOR, f'[id="gx-step-{Q}"] .lens').text
        d.find_element(By.CSS_SELECTOR, '#gx-langs button[data-lang="en"]').click()

        # Edit W_Q[20, 100] from the lens of a W_Qᵀ cell (outside the weight table's 24 × 16 window).
        wt = plot(d, "right")
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", wt)
        hover(d, wt, 100, 20, right["height"] / 128, col_px)
        ActionChains(d).click().perform()
        settle(d)
        lens = d.find_element(By.CSS_SELECTOR, f'[id="gx-step-{Q}"] .lens')
        assert "blocks.0.self_attn.q_proj.weight[20, 100]" in lens.text
        field = lens.find_element(By.CSS_SELECTOR, "input.lens-edit-value")
        field.clear()
        field.send_keys("4")
        lens.find_element(By.CSS_SELECTOR, ".lens-edit button").click()
        settle(d)
        assert "blocks.0.self_attn.q_proj.weight[20, 100] = 4" in d.find_element(By.ID, "gx-edits").text
        marks = d.execute_script("""
            return [...document.querySelectorAll(`[id="gx-step-${arguments[0]}"] figure[data-role="right"] .edit-mark`)]
              .map((m) => { const r = m.getBoundingClientRect(), p = m.parentElement.getBoundingClientRect();
                            const s = getComputedStyle(m);
                            return {w: r.width, h: r.height, x: r.left - p.left + r.width / 2,
                                    y: r.top - p.top + r.height / 2, border: s.borderTopWidth, display: s.display}; });
            """, Q)
        (m,) = marks
        row_w = right["height"] / 128
        assert m["w"] >= 12 and m["h"] >= 12 and m["border"] == "2px" and m["display"] != "none"
        assert abs(m["x"] - 20.5 * col_px) <= 1 and abs(m["y"] - 100.5 * row_w) <= 1
        d.execute_script("showStep('dec.0.self.h0.q.weight')")
        outside = d.find_element(By.CSS_SELECTOR, '[id="gx-step-dec.0.self.h0.q.weight"] .edit-outside').text
        assert "[20, 100]" in outside and "24 × 16" in outside
        assert d.find_elements(By.CSS_SELECTOR, f'[id="gx-step-{Q}"] figure[data-role="result"].has-changed')

        # A 60-character input: every band hovered, corner to corner, draws no error.
        box.clear()
        box.send_keys(LONG)
        settle(d)
        d.execute_script("document.querySelectorAll('#gx-panels section.step.pending').forEach(fillCard)")  # every card
        hovered = d.execute_script("""
            let n = 0;
            for (const plot of document.querySelectorAll(".band-plot, table.matrix, canvas.heat")) {
              const r = plot.getBoundingClientRect();
              for (const [fx, fy] of [[0.01, 0.01], [0.99, 0.99], [0.5, 0.95], [0.99, 0.01]]) {
                const init = {bubbles: true, clientX: r.left + fx * r.width, clientY: r.top + fy * r.height};
                const target = document.elementFromPoint(init.clientX, init.clientY) || plot;
                plot.dispatchEvent(new MouseEvent("mousemove", init));
                target.dispatchEvent(new MouseEvent("mouseover", init));
                n++;
              }
              plot.dispatchEvent(new MouseEvent("mouseleave", {}));
            }
            return n;""")
        assert hovered > 40
        time.sleep(0.1)
        assert shown_error(d) == ""
        assert errors(d) == []
    finally:
        server.stop()
