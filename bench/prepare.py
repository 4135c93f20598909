"""`data prepare` on a generated corpus: MB/s (in all, and per worker) with BPE, against one process
encoding with Hugging Face `tokenizers`' `encode_batch`, and the peak memory of each.

    python bench/prepare.py --mb 1024 --workers 2

The corpus is generated (seeded words and sentences, newline-separated documents) into a
temporary directory. The BPE tokenizer is trained once, on the first 64 MB, and both contenders
encode the whole corpus with it: `prepare` (its worker processes, shards, resumable record)
and the baseline (one process reading 4 MB chunks and calling `encode_batch` on their lines,
which `tokenizers` itself spreads over threads; nothing written). Each contender runs in a
fresh process (prepare as the command a user runs, its workers spawned from it); the peak of
the resident memory summed over its whole process tree is sampled every 0.1 s. One JSON line each.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import descendants, emit  # noqa: E402

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


def tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants now, in MiB (Linux /proc)."""
    tree = descendants(root)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run_sampled(command: list[str]) -> tuple[float, float]:
    """Runs a command; (seconds, the peak of its process tree's summed resident memory, sampled every 0.1 s)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_rss_mib(process.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr.read()}")
    return seconds, peak


def run_baseline(corpus: str, tokenizer: str) -> None:
    """The baseline, in its own process: encode_batch over 4 MB of lines at a time, nothing written."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    tokens = 0
    with open(corpus, encoding="utf-8") as f:
        while True:
            lines = f.readlines(4 << 20)
            if not lines:
                break
            tokens += sum(len(e.ids) for e in tok.encode_batch(lines))
    print(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="corpus size in MB")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the baseline, in a fresh process
        corpus, tokenizer = args.child.split("|")
        run_baseline(corpus, tokenizer)
        return
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        start = time.perf_counter()
        generate(corpus, args.mb)
        generated = time.perf_counter() - start
        from glassformer.data.tokenizers import BPETokenizer

        with open(corpus, encoding="utf-8") as f:
            sample = f.read(64 << 20)
        start = time.perf_counter()
        tok = BPETokenizer.train(sample, args.vocab_size)
        trained = time.perf_counter() - start
        tok_path, hf_path = Path(tmp) / "tokenizer.json", Path(tmp) / "hf-tokenizer.json"
        tok.save(tok_path)  # what prepare reads
        tok.hf.save(str(hf_path))  # the same tokenizer in Hugging Face's format, for the baseline
        size_mb = corpus.stat().st_size / 2**20
        commands = {  # prepare as a user runs it: the command, its workers spawned from it
            "prepare": [sys.executable, "-m", "glassformer", "data", "prepare", "--data", str(corpus), "--out",
                        str(Path(tmp) / "out"), "--workers", str(args.workers), "--tokenizer-file", str(tok_path)],
            "baseline": [sys.executable, __file__, "--child", f"{corpus}|{hf_path}"],
        }
        for kind, command in commands.items():
            seconds, peak = run_sampled(command)
            processes = args.workers if kind == "prepare" else 1
            mb_s = size_mb / seconds
            emit({"bench": "data_prepare", "contender": kind, "corpus_mb": round(size_mb, 1), "processes": processes,
                  "seconds": round(seconds, 2), "mb_per_s": round(mb_s, 2),
                  "mb_per_s_per_process": round(mb_s / processes, 2), "peak_rss_tree_mib": round(peak, 1),
                  "generate_s": round(generated, 1), "bpe_train_s_on_64mb": round(trained, 1)})

if __name__ == "__main__":
    main()
