"""Screenshots of the explorer for the documentation (docs/guides/explore.md shows them).

    python docs/screenshots.py                 # `glassformer explore` with no model: its two built-in ones
    python docs/screenshots.py runs/demo       # and a checkpoint of yours, in a third set

Starts `glassformer explore` as a user starts it, drives Debian's headless Chromium through
chromedriver with Selenium (as tests/browser.py does) at 1440 × 900 and at 390 × 844 (a phone,
touch and a phone's user agent), and writes one PNG per tab and window size:

    docs/images/explore-{set}-{desktop|phone}-{tab}.png

`set` is "village" (the village GPT, which `glassformer explore` with no argument opens on),
"articles" (the articles' translation example, the page's other built-in model: /?model=articles)
and "checkpoint" for the directory given; `tab` is each of the page's tabs (flow, steps,
attention, next, lens, analyses or translate). The phone's set adds `-top` (the text, the tokens
and the diagram, as the page opens); its tabs are shown scrolled to the tab bar, as a reader who
scrolled down sees them. Not part of the test suite (it takes a few minutes); the page's layout
at both sizes is tested in tests/test_explore_phone_browser.py and tests/test_explore_browser.py.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images"
STEPS_CARD = "dec.0.self.h0.out"  # the desktop Steps shot scrolls to it (where the model has it): weights · V
SIZES = {"desktop": (1440, 900, False), "phone": (390, 844, True)}


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """`glassformer explore --no-browser --port 0 ...` and the address it prints."""
    process = subprocess.Popen([sys.executable, "-m", "glassformer", "explore", "--no-browser", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    found = re.search(r"(http://\S+)", line)
    if not found:
        process.terminate()
        raise SystemExit(f"glassformer explore printed {line!r}, not its address")
    return process, found.group(1)


def browser(width: int, height: int, phone: bool):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    if phone:  # pixel ratio 2: sharp enough to read, half the file of a real phone's 3
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": True}})
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = webdriver.ChromeService(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


def settle(d, timeout: float = 30.0) -> None:
    """Until the page has asked for and drawn everything (its busy flag down for 0.3 s)."""
    time.sleep(0.2)
    end, quiet = time.time() + timeout, 0
    while time.time() < end:
        quiet = quiet + 1 if d.execute_script("return document.body.dataset.busy") == "0" else 0
        if quiet >= 6:
            return
        time.sleep(0.05)
    raise SystemExit("the page did not settle")


def shoot(url: str, name: str, size: str) -> list[Path]:
    """Every tab of the page at `url` in one window size; returns the files written."""
    width, height, phone = SIZES[size]
    d = browser(width, height, phone)
    written = []
    try:
        d.get(url)
        settle(d)
        d.execute_script("document.activeElement && document.activeElement.blur()")  # no caret in the text box

        def save(view: str) -> None:
            path = OUT / f"explore-{name}-{size}-{view}.png"
            time.sleep(0.3)  # smooth scrolls and the diagram's last redraw
            d.save_screenshot(str(path))
            written.append(path)

        if phone:
            save("top")
        for tab in d.execute_script("return tabs()"):
            d.execute_script("document.querySelector(`#gx-tabs button[data-tab='${arguments[0]}']`).click()", tab)
            settle(d)
            if phone:
                d.execute_script("document.getElementById('gx-main').scrollIntoView({block: 'start'})")
            if tab == "steps" and not phone:  # a GPT: its first head's output, weights · V
                d.execute_script(f"if (document.getElementById('gx-step-{STEPS_CARD}')) showStep('{STEPS_CARD}')")
            save(tab)
    finally:
        d.quit()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a directory glassformer.load reads (a second set of images)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    # (set, the server's arguments, the page's ?model=): one server serves both built-in models.
    sets = [("village", (), "village"), ("articles", (), "articles")]
    if args.checkpoint:
        sets.append(("checkpoint", ("--model", args.checkpoint), ""))
    servers: dict[tuple, tuple] = {}
    try:
        for name, server_args, model in sets:
            if server_args not in servers:
                servers[server_args] = start_server(*server_args)
            url = servers[server_args][1]
            if model:
                url += ("&" if "?" in url else "?") + "model=" + model
            for size in SIZES:
                for path in shoot(url, name, size):
                    print(path.relative_to(OUT.parent.parent))
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
