"""`data prepare` on a generated corpus: MB/s (in all, and per worker) with BPE, against one process
encoding with Hugging Face `tokenizers`' `encode_batch`, and the peak memory of each.

    python bench/prepare.py --mb 1024 --workers 2

The corpus is generated (seeded words and sentences, newline-separated documents) into a
temporary directory. The BPE tokenizer is trained once, on the first 64 MB, and both contenders
encode the whole corpus with it: `prepare` (its worker processes, shards, resumable record)
and the baseline (one process reading 4 MB chunks and calling `encode_batch` on their lines,
which `tokenizers` itself spreads over threads; nothing written). Each contender runs in a
fresh process so that its peak RSS (the process and its children) is its own. One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

WORDS = ("the a of to and in that it was he for on are with as his they be at one have this from or had by word "
         "but what some we can out other were all there when up use your how said an each she which do their time "
         "if will way about many then them write would like so these her long make thing see him two has look more "
         "day could go come did number sound no most people my over know water than call first who may down side "
         "been now find village river baker mill lantern harvest winter").split()


def generate(path: Path, mb: int, seed: int = 0) -> None:
    """Documents of 5-40 sentences of 4-16 seeded words, one per line, until the file holds `mb` MB."""
    rng = random.Random(seed)
    target = mb << 20
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            doc = " ".join(" ".join(rng.choices(WORDS, k=rng.randint(4, 16))).capitalize() + "."
                           for _ in range(rng.randint(5, 40)))
            written += f.write(doc + "\n")


def peak_mib() -> float:
    """Peak RSS of this process plus its largest child, in MiB (Linux reports KiB)."""
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (self_peak + children) / 1024


def run_prepare(corpus: str, out: str, tokenizer: str, workers: int) -> dict:
    from glassformer.prepare import prepare

    start = time.perf_counter()
    record = prepare([corpus], out, "bpe", workers=workers, progress=False, tokenizer_file=tokenizer)
    seconds = time.perf_counter() - start
    tokens = sum(s["tokens"] for split in record["shards"].values() for s in split)
    return {"seconds": seconds, "tokens": tokens, "peak_mib": peak_mib()}


def run_baseline(corpus: str, tokenizer: str) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    start, tokens = time.perf_counter(), 0
    with open(corpus, encoding="utf-8") as f:
        while True:
            lines = f.readlines(4 << 20)
            if not lines:
                break
            tokens += sum(len(e.ids) for e in tok.encode_batch(lines))
    return {"seconds": time.perf_counter() - start, "tokens": tokens, "peak_mib": peak_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="corpus size in MB")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one contender, in a fresh process: its result as JSON on stdout
        kind, corpus, tokenizer, out = args.child.split("|")
        result = run_prepare(corpus, out, tokenizer, args.workers) if kind == "prepare" else \
            run_baseline(corpus, tokenizer)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        start = time.perf_counter()
        generate(corpus, args.mb)
        generated = time.perf_counter() - start
        from glassformer.tokenizers import BPETokenizer

        with open(corpus, encoding="utf-8") as f:
            sample = f.read(64 << 20)
        start = time.perf_counter()
        tok = BPETokenizer.train(sample, args.vocab_size)
        trained = time.perf_counter() - start
        tok_path, hf_path = Path(tmp) / "tokenizer.json", Path(tmp) / "hf-tokenizer.json"
        tok.save(tok_path)  # what prepare reads
        tok.hf.save(str(hf_path))  # the same tokenizer in Hugging Face's format, for the baseline
        size_mb = corpus.stat().st_size / 2**20
        for kind in ("prepare", "baseline"):
            child = "|".join([kind, str(corpus), str(tok_path if kind == "prepare" else hf_path),
                              str(Path(tmp) / f"out-{kind}")])
            done = subprocess.run([sys.executable, __file__, "--child", child, "--workers", str(args.workers)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {kind} run failed:\n{done.stderr}")
            result = json.loads(done.stdout.splitlines()[-1])
            mb_s = size_mb / result["seconds"]
            emit({"bench": "data_prepare", "contender": kind, "corpus_mb": round(size_mb, 1),
                  "workers": args.workers if kind == "prepare" else 1, "seconds": round(result["seconds"], 2),
                  "mb_per_s": round(mb_s, 2), "mb_per_s_per_process": round(
                      mb_s / (args.workers if kind == "prepare" else 1), 2), "tokens": result["tokens"],
                  "peak_rss_mib": round(result["peak_mib"], 1), "generate_s": round(generated, 1),
                  "bpe_train_s_on_64mb": round(trained, 1)})


if __name__ == "__main__":
    main()
