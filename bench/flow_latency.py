"""Latency of the explorer's /api/flow (the Flow tab's request) on a GPT-2-small-shaped model.

    python bench/flow_latency.py
    python bench/flow_latency.py --tokens 64 --repeat 5 --threads 1

A GPT with GPT-2 small's shape (12 layers, 12 heads, d 768, vocabulary 50,257, random weights)
read through a character tokenizer (the ids it sends are characters; the unembedding still
multiplies by all 50,257 rows, so the work is GPT-2's). Each request goes through Starlette's
TestClient (the app, JSON encoding, the ASGI call; no socket). Prints one JSON line per request
kind with the median, min and max seconds and the response's size, beside /api/sample (one forward
pass and the sampler's stages, the Next-token tab's request) for comparison: the flow's cost is that
forward plus recording and sending, and the forward is what a loaded machine slows. The kinds take
turns, so a busy moment of the machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import string
import time

import torch

from glassformer import GPT, GPTConfig
from glassformer.data.tokenizers import CharTokenizer
from glassformer.explain.walkthrough import Subject


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch's threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from starlette.testclient import TestClient

    from glassformer.explore import Explorer, make_app

    tok = CharTokenizer.train(string.printable)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)).eval()
    text = ("ROMEO: wherefore art thou Romeo? Deny thy father and refuse thy name. " * 8)[:args.tokens]
    client = TestClient(make_app(Explorer(Subject(model, tok, tok), "gpt2-small-shaped")), base_url="http://127.0.0.1")

    def request(body, endpoint="flow"):
        def call():
            response = client.post(f"/api/{endpoint}", json=body)
            assert response.status_code == 200, response.text
            return len(response.content)
        return call

    kinds = {"sample (one forward)": request({"text": text}, "sample"), "flow": request({"text": text}),
             "flow, output only": request({"text": text, "temperature": 0.7, "output_only": True}),
             "flow, position 10": request({"text": text, "position": 10})}
    times = {name: [] for name in kinds}
    sizes = {}
    for name, run in kinds.items():  # one warm-up each
        run()
    for _ in range(args.repeat):
        for name, run in kinds.items():
            start = time.perf_counter()
            sizes[name] = run()
            times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(json.dumps({"model": "gpt2-small-shaped", "tokens": args.tokens, "request": name,
                          "median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
                          "max_s": round(max(seconds), 3), "bytes": sizes[name], "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
