"""Request latency of `glassformer explore`'s API: what the page waits for after a keystroke.

    python bench/explore_latency.py
    python bench/explore_latency.py --repeat 9 --threads 1

Two models: (a) the articles' walkthrough model on its first sentence (target: the page updated
within 300 ms of a keystroke, so the server's part well under, 150 ms), and (b) a 6-layer,
6-head, d 384 GPT with random weights and a character vocabulary on 64 tokens (target 2 s).
"run (steps view)" is what the page asks on its Steps tab: the first layer's self-attention steps
(head 0) and their operands whole (`whole`), the rest as corners, no logit lens (`lens`: false).
Each request goes through Starlette's TestClient (the app, JSON encoding and the ASGI call; no
socket). The endpoints take turns, after one warm-up each; prints one JSON line per model and
endpoint with the median, min and max seconds, the server's own time (its `ms` field, median,
first run left out), the response's size and, for /api/run, the max_values the server used
(it lowers the one asked for until the run sends at most 250,000 values: explore/api.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import string
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit  # noqa: E402

from glassformer import GPT, GPTConfig  # noqa: E402
from glassformer.data.tokenizers import CharTokenizer  # noqa: E402
from glassformer.explain.walkthrough import CORPUS, Subject, builtin_subject  # noqa: E402


def client_for(subject: Subject, name: str):
    from starlette.testclient import TestClient

    from glassformer.explore import Explorer, make_app

    return TestClient(make_app(Explorer(subject, name)), base_url="http://127.0.0.1")


def gpt_subject(tokens: int) -> tuple[Subject, str]:
    """The 6-layer / 6-head / d 384 GPT over printable characters, and a text of `tokens` characters."""
    tok = CharTokenizer.train(string.printable)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=max(tokens, 64), n_layer=6, n_head=6,
                          n_embd=384)).eval()
    text = ("ROMEO: wherefore art thou Romeo? Deny thy father and refuse thy name. " * 4)[:tokens]
    return Subject(model, tok, tok), text


def steps_view(client, text: str) -> list[str]:
    """The ids the page's Steps tab names on opening a GPT: layer 0's self-attention, head 0, with operands."""
    steps = client.post("/api/run", json={"text": text, "whole": [], "lens": False}).json()["walkthrough"]["steps"]
    shown = [s for s in steps if s["id"].startswith("dec.0.self.") and (".h" not in s["id"] or ".h0." in s["id"])]
    return sorted({s["id"] for s in shown} | {i for s in shown for i in s["inputs"]})


def measure(model: str, client, requests: dict[str, tuple[str, dict]], repeat: int) -> None:
    sizes, used, server_ms = {}, {}, {name: [] for name in requests}

    def call(name: str):
        endpoint, body = requests[name]

        def run():
            response = client.post(f"/api/{endpoint}", json=body)
            response.raise_for_status()
            sizes[name] = len(response.content)
            data = json.loads(response.content)
            server_ms[name].append(data["ms"])
            if "walkthrough" in data:
                used[name] = data["walkthrough"]["max_values"]

        return run

    timings = alternate({name: call(name) for name in requests}, repeat=repeat)
    for name, timing in timings.items():
        emit({"bench": "explore_latency", "model": model, "request": name, **timing.fields(),
              "server_ms_median": round(statistics.median(server_ms[name][1:]), 1), "bytes": sizes[name],
              **({"max_values_used": used[name]} if name in used else {})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per endpoint")
    parser.add_argument("--tokens", type=int, default=64, help="the GPT's text length")
    parser.add_argument("--max-values", type=int, default=4096, help="/api/run's max_values (the page asks 4096)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    articles = client_for(builtin_subject(), "the articles' example")
    text = CORPUS[0]
    measure("articles-walkthrough", articles, {
        "run": ("run", {"text": text, "max_values": args.max_values}),
        "run+edit": ("run", {"text": text, "max_values": args.max_values,
                             "edits": [{"name": "encoder.0.self_attn.q_proj.weight", "index": [0, 0], "value": 1.0}]}),
        "next (greedy translation)": ("next", {"text": text}),
        "beam 3": ("beam", {"text": text, "beam": 3}),
    }, args.repeat)

    subject, text = gpt_subject(args.tokens)
    gpt = client_for(subject, "gpt-6x384")
    edit = [{"name": "blocks.0.self_attn.q_proj.weight", "index": [0, 0], "value": 1.0}]
    measure(f"gpt-6L-d384-{args.tokens}tok", gpt, {
        "run": ("run", {"text": text, "max_values": args.max_values}),
        "run (steps view)": ("run", {"text": text, "max_values": args.max_values, "lens": False,
                                     "whole": steps_view(gpt, text)}),
        "run+edit": ("run", {"text": text, "max_values": args.max_values, "edits": edit}),
        "step (all values)": ("step", {"text": text, "id": "dec.0.self.h0.probs"}),
        "sample": ("sample", {"text": text, "temperature": 0.8, "top_k": 20, "top_p": 0.9}),
        "next": ("next", {"text": text, "temperature": 0.8, "seed": 1}),
    }, args.repeat)


if __name__ == "__main__":
    main()
