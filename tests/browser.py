"""What every browser test of the explorer shares: `glassformer explore` started as the user
starts it, and Debian's headless Chromium driven by Selenium through Debian's chromedriver.

    from browser import Server, chromium, settle
    server = Server("--model", str(path))      # or Server() for the built-in models
    d = chromium(1440, 900)                    # or the `driver` fixture (conftest.py), 1366 × 768
    d.get(server.url); settle(d)

`chromium` skips the calling test, with the reason, where Selenium, Chromium or chromedriver is
missing or cannot start."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class Server:
    """`python -m glassformer explore --no-browser --port 0 ...`; `url` waits for the address it prints."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "glassformer", "explore", "--no-browser", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._url = None

    @property
    def url(self) -> str:
        if self._url is None:
            line = self.process.stdout.readline()
            found = re.search(r"(http://\S+)", line)
            if not found:
                self.stop()
                raise AssertionError(f"glassformer explore printed {line!r}, not its address")
            self._url = found.group(1)
        return self._url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


CHARACTERS = "abcdefghijklmnopqrstuvwxyz ,.!?:ROMEO\n"  # what the browser tests type, <unk> for the rest


def char_gpt(path, **config):
    """An untrained GPT (seed 0) over CHARACTERS saved to `path`, its GPTConfig fields given (block_size,
    n_layer, n_head, n_embd); returns `path`. The browser tests' checkpoints, each its own size."""
    import torch

    from glassformer import GPT, GPTConfig
    from glassformer.checkpoint import save
    from glassformer.data.tokenizers import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer(sorted(set(CHARACTERS)))
    save(GPT(GPTConfig(vocab_size=tok.vocab_size, **config)), path, tok)
    return path


def chromium(width: int = 1366, height: int = 768, mobile: bool = False):
    """A headless Chromium window of width × height CSS pixels (mobile: a phone's user agent and
    touch, device pixel ratio 3); the test is skipped where it cannot start."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--disable-gpu"):
        options.add_argument(arg)
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0, "touch": True}})
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    except Exception as e:  # noqa: BLE001 - any reason the browser cannot start is a skip, with its reason
        pytest.skip(f"headless Chromium could not start: {str(e).splitlines()[0]}")


def settle(d, timeout: float = 15.0) -> None:
    """Waits until the page has asked and drawn everything (past its 80 ms debounce)."""
    time.sleep(0.15)
    end, quiet = time.time() + timeout, 0
    while time.time() < end:
        quiet = quiet + 1 if d.execute_script("return document.body.dataset.busy") == "0" else 0
        if quiet >= 3:
            return
        time.sleep(0.05)
    raise AssertionError("the page did not settle")


def errors(d) -> list[str]:
    """The browser console's errors since the last call."""
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def shown_error(d) -> str:
    return d.execute_script("const e = document.getElementById('gx-error'); return e.hidden ? '' : e.textContent")


def tab(d, name: str) -> None:
    from selenium.webdriver.common.by import By

    d.find_element(By.CSS_SELECTOR, f'#gx-tabs button[data-tab="{name}"]').click()
    settle(d)
