"""The course's pages in headless Chromium, as the docs build wrote them (site/, which the README's
test command builds just before the tests; skipped, saying so, where it has not been built): each
chapter in both languages, at a laptop's width and a phone's, typesets its formulas with the
site's own MathJax, logs no error, and cuts nothing off."""

import functools
import http.server
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from browser import chromium

from glassformer.learn import build

SITE = Path(__file__).resolve().parents[1] / "site"
PAGES = [(c.name, lang) for c in build.CHAPTERS for lang in build.LANGS]


@pytest.fixture(scope="module")
def site():
    if not (SITE / "learn" / "index.html").is_file():
        pytest.skip("the site is not built: python -m mkdocs build --strict (the README's test command does)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module", params=[(1440, 900, False), (390, 844, True)], ids=["desktop", "phone"])
def driver(request):
    width, height, mobile = request.param
    d = chromium(width, height, mobile=mobile)
    d.width = width
    yield d
    d.quit()


def typeset(d, timeout: float = 20.0) -> None:
    """Waits until MathJax has typeset every formula of the page."""
    end = time.time() + timeout
    while time.time() < end:
        left = d.execute_script("return document.querySelectorAll('script[type^=\"math/tex\"]').length - "
                                "document.querySelectorAll('.MathJax, .MathJax_Display').length")
        done = d.execute_script("return !!(window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0)")
        if left <= 0 and done:
            return
        time.sleep(0.2)
    raise AssertionError("MathJax did not typeset the page's formulas")


@pytest.mark.parametrize("name,lang", PAGES)
def test_a_chapter_reads_well(site, driver, name, lang):
    d = driver
    d.get(f"{site}/learn/{lang}/{name}/")
    typeset(d)
    errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    title = build.chapter(name).title[lang]
    assert d.execute_script("return document.querySelector('article h1').textContent").startswith(title)
    formulas = d.execute_script("return document.querySelectorAll('script[type^=\"math/tex\"]').length")
    assert formulas > 0
    # No formula left as raw TeX, and no MathJax error box.
    assert d.execute_script("return document.querySelectorAll('.MathJax_Error, merror').length") == 0
    # Nothing wider than the window: long lines scroll inside their own blocks.
    assert d.execute_script("return document.documentElement.scrollWidth") <= d.width + 1
    # The notebook to download is there.
    link = d.execute_script(
        "return [...document.querySelectorAll('article a')].find(a => a.href.endsWith('.ipynb')).href")
    assert link.endswith(f"/learn/{lang}/{name}.ipynb")
    with urllib.request.urlopen(link) as response:
        assert response.status == 200 and b'"cells"' in response.read()
