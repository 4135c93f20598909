"""`glassformer explore` in headless Chromium: first load, keystroke -> drawn, slider -> drawn.

    python bench/explore_browser.py                         # the default GPT, a 2-layer d 128 GPT, GPT-2-small's shape
    python bench/explore_browser.py --before /work/main     # ... and the same models served by another checkout
    python bench/explore_browser.py --models village,d128 --repeat 5

Each contender is a server started here as a user starts it (`python -m glassformer explore
--no-browser --port 0`, with --model for a directory made here: random weights, a character
vocabulary, GPT-2-small's shape has vocabulary 50257 as PRESETS["gpt2"]) and its own Chromium
window (1440 × 900, Selenium). The text is 64 characters (64 tokens). Measured from inside the page,
the same way for every checkout: the action (a keystroke: the input's value changed and its
`input` event, as typing does; a slider: the temperature moved on the Next-token tab), then the
page's requests, then the frame after the last answer is drawn (requestAnimationFrame, then a
task: the paint is done); a request that follows within 250 ms counts too. Keystrokes are timed on
the Steps tab (layer 1's self-attention), as issue 29 measured them. First load is navigation
start to that frame after the page's first requests. Contenders take turns within each repeat;
prints one JSON line per contender and measure: median, min, max in seconds (bench/common.py).
Targets (issue 29): keystroke and slider at most 0.3 s for the default GPT and the d 128 GPT, 1.5 s
for GPT-2's shape; first load under 1 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import string
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, emit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEXT = ("NORA: Good evening, Mira. What will you buy today? MIRA: Six pears" * 2)[:64]

# Counts the page's requests (its fetch calls, started and answered), once per page load.
COUNT = """
if (!window.__requests) {
  const fetch = window.fetch.bind(window);
  window.__requests = { started: 0, ended: 0 };
  window.fetch = (...args) => { window.__requests.started++;
    return fetch(...args).finally(() => { window.__requests.ended++; }); };
}
return window.__requests.started;
"""
# Waits, inside the page, for the requests an action started (more than arguments[1] in all), then
# for the page to be idle (dataset.busy) and the paint after it (requestAnimationFrame, then a
# task); a request that starts within 250 ms starts the wait again. Resolves with the milliseconds
# from arguments[0] (performance.now() when the action was done); -1 where nothing was asked within
# arguments[2] milliseconds.
WAIT = """
const t0 = arguments[0], n0 = arguments[1], most = arguments[2], done = arguments[arguments.length - 1];
const r = window.__requests;
const idle = () => r.started > n0 && r.ended === r.started && document.body.dataset.busy !== "1";
let painted = null, asked = r.started;
function tick() {
  if (r.started !== asked) { asked = r.started; painted = null; }
  if (!idle()) painted = null;
  else if (painted === null) {
    painted = -1;
    const mine = asked;
    requestAnimationFrame(() => setTimeout(() => {
      if (painted === -1 && mine === asked) painted = performance.now();
    }, 0));
  }
  if (painted > 0 && performance.now() - painted > 250) { done(painted - t0); return; }
  if (performance.now() - t0 > most) { done(-1); return; }
  setTimeout(tick, 1);
}
tick();
"""
TYPE = """
const box = document.getElementById("gx-text"), text = arguments[0];
const t0 = performance.now();
box.value = text;
box.dispatchEvent(new Event("input", {bubbles: true}));
return t0;
"""
SLIDE = """
const s = document.getElementById("gx-temperature");
const t0 = performance.now();
s.value = arguments[0];
s.dispatchEvent(new Event("input", {bubbles: true}));
return t0;
"""
FIRST_LOAD = """
const done = arguments[arguments.length - 1];
const busy = () => document.body.dataset.busy === "1";
let last = null, quietSince = null;
function tick() {
  const started = document.body.dataset.busy !== undefined;
  if (!started || busy()) { last = null; quietSince = null; }
  else if (last === null) {
    requestAnimationFrame(() => setTimeout(() => { last = performance.now(); quietSince = last; }, 0));
    last = -1;
  }
  if (last > 0 && performance.now() - quietSince > 250) { done(last); return; }
  setTimeout(tick, 2);
}
tick();
"""


def make_models(folder: Path, wanted: list[str]) -> dict[str, Path]:
    """Random-weight GPTs with a character vocabulary, saved as checkpoints: d128 and gpt2 (its shape)."""
    import torch

    from glassformer import GPT, GPTConfig, save
    from glassformer.data.tokenizers import CharTokenizer
    from glassformer.model.config import PRESETS

    tok = CharTokenizer.train(string.printable)
    configs = {"d128": GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=4, n_embd=128),
               "gpt2": PRESETS["gpt2"].model}
    out = {}
    for name in wanted:
        if name in configs:
            torch.manual_seed(0)
            out[name] = save(GPT(configs[name]), folder / name, tok)
    return out


class Contender:
    """One server and its Chromium window."""

    def __init__(self, name: str, args: list[str], checkout: Path):
        env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}
        self.name = name
        # cwd: `python -m` reads the package from the working directory first.
        self.process = subprocess.Popen([sys.executable, "-m", "glassformer", "explore", "--no-browser", "--port", "0",
                                         *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                        cwd=checkout)
        line = self.process.stdout.readline()
        found = re.search(r"(http://\S+)", line)
        if not found:
            self.stop()
            raise RuntimeError(f"{name}: glassformer explore printed {line!r}")
        self.url = found.group(1)
        self.driver = chromium()
        self.driver.set_script_timeout(120)
        self.times: dict[str, list[float]] = {"first_load": [], "keystroke": [], "slider": []}

    def first_load(self) -> None:
        self.driver.get(self.url)
        self.times["first_load"].append(self.driver.execute_async_script(FIRST_LOAD) / 1000)

    def tab(self, name: str) -> None:
        n0 = self.driver.execute_script(COUNT)
        t0 = self.driver.execute_script(f'document.querySelector(\'#gx-tabs button[data-tab="{name}"]\').click();'
                                        "return performance.now()")
        self.driver.execute_async_script(WAIT, t0, n0, 2000)  # a tab may ask nothing

    def keystroke(self, text: str, keep: bool = True) -> None:
        n0 = self.driver.execute_script(COUNT)
        t0 = self.driver.execute_script(TYPE, text)
        ms = self.driver.execute_async_script(WAIT, t0, n0, 60000)
        if keep:
            self.times["keystroke"].append(ms / 1000)

    def slider(self, value: float, keep: bool = True) -> None:
        n0 = self.driver.execute_script(COUNT)
        t0 = self.driver.execute_script(SLIDE, value)
        ms = self.driver.execute_async_script(WAIT, t0, n0, 60000)
        if keep:
            self.times["slider"].append(ms / 1000)

    def stop(self) -> None:
        if getattr(self, "driver", None) is not None:
            self.driver.quit()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def chromium():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900", "--disable-gpu"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed keystrokes and slider moves per contender")
    parser.add_argument("--models", default="village,d128,gpt2",
                        help="village (the default GPT), d128, gpt2; NAME@tN: served with --threads N (this checkout)")
    parser.add_argument("--before", help="another checkout (a directory) whose explorer serves the same models too")
    args = parser.parse_args()
    wanted = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_models(Path(tmp), sorted({name.split("@")[0] for name in wanted}))
        checkouts = {"": ROOT, **({"before:": Path(args.before)} if args.before else {})}
        contenders = []
        try:
            for model in wanted:
                name, _, threads = model.partition("@t")
                for tag, checkout in checkouts.items():
                    if tag and (name == "village" or threads):  # another checkout: another default, no --threads
                        continue
                    model_args = [] if name == "village" else ["--model", str(paths[name])]
                    model_args += ["--threads", threads] if threads else []
                    contenders.append(Contender(tag + model, model_args, checkout))
            for c in contenders:  # the first load of each, then the text of 64 tokens and the Steps tab
                c.first_load()
                c.keystroke(TEXT, keep=False)
                c.tab("steps")
            texts = [TEXT[:-1], TEXT]  # a backspace, then the character again: 63 and 64 tokens
            for i in range(args.repeat + 1):  # the first of each is a warm-up
                for c in contenders:
                    c.keystroke(texts[i % 2], keep=i > 0)
            for c in contenders:
                c.tab("next")
            for i in range(args.repeat + 1):
                for c in contenders:
                    c.slider([0.7, 1.3][i % 2], keep=i > 0)
            for c in contenders:  # first loads again, taking turns (the servers are warm now)
                for _ in range(2):
                    c.first_load()
            for c in contenders:
                for measure, seconds in c.times.items():
                    emit({"bench": "explore_browser", "contender": c.name, "measure": measure,
                          **Timing.of(seconds).fields(), "runs_s": [round(s, 3) for s in seconds],
                          "median_ms": round(statistics.median(seconds) * 1000)})
        finally:
            for c in contenders:
                c.stop()


if __name__ == "__main__":
    main()
