"""Translation decoding speed: sentences/s, greedy and beam 5, batched with the decoder's KV cache.

    python bench/translate.py --model runs/m30k --src test_2016_flickr.de.gz [--limit 500] [--threads 1]

Without --model it times a randomly initialised model of the `multi30k` preset (decoding
then runs to the maximum length, which is slower than a trained model's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from glassformer import PRESETS, Seq2Seq  # noqa: E402
from glassformer.tokenizers import BPETokenizer  # noqa: E402
from glassformer.translation import load_translator, read_lines, translate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained translation checkpoint")
    parser.add_argument("--src", required=True, help="source sentences, one per line (plain or .gz)")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sentences = read_lines(args.src)[: args.limit]
    if args.model:
        model, src_tok, tgt_tok = load_translator(args.model, "cpu")
    else:
        src_tok = tgt_tok = BPETokenizer.train("\n".join(sentences), vocab_size=2000)
        cfg = dataclasses.replace(PRESETS["multi30k"].model, src_vocab_size=src_tok.vocab_size,
                                  tgt_vocab_size=src_tok.vocab_size, shared_vocab=True, pad_id=src_tok.pad_id,
                                  bos_id=src_tok.bos_id, eos_id=src_tok.eos_id)
        torch.manual_seed(0)
        model = Seq2Seq(cfg).eval()
    for beam in (1, 5):
        translate(model, src_tok, tgt_tok, sentences[:8], beam=beam)  # warm-up: first-call costs out of the timing
        start = time.perf_counter()
        translate(model, src_tok, tgt_tok, sentences, beam=beam)
        seconds = time.perf_counter() - start
        emit({"bench": "translate", "model": args.model or "random multi30k preset",
              "mode": "greedy" if beam == 1 else f"beam {beam}", "beam": beam,
              "sentences": len(sentences), "sentences_per_s": round(len(sentences) / seconds, 1)})


if __name__ == "__main__":
    main()
