"""Translation decoding speed: sentences/s, greedy and beam 5, batched with the decoder's KV cache.

    python bench/translate.py                      # a random multi30k-preset model, 64 test_2016 sentences
    python bench/translate.py --model runs/m30k --src test_2016_flickr.de.gz --limit 500 [--threads 1]

Without --model it times a randomly initialised model of the `multi30k` preset with a BPE
vocabulary learned from the sentences themselves: no training needed, but decoding then runs
to the maximum length, which is slower than a trained model's. Greedy and beam 5 take turns,
one pass over the sentences each per repeat, after a warm-up on 8 sentences; prints one JSON
line per mode with the median, min and max seconds of a pass and sentences/s at the median.
The default takes about 15 s on a quiet 2-core CPU (2 minutes on one busy with other jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit  # noqa: E402

from glassformer import PRESETS, Seq2Seq  # noqa: E402
from glassformer.data.tokenizers import BPETokenizer  # noqa: E402
from glassformer.training.translation import load_translator, read_lines, translate  # noqa: E402

SRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
BEAMS = {"greedy": 1, "beam 5": 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained translation checkpoint (default: a random multi30k model)")
    parser.add_argument("--src", default=str(SRC), help="source sentences, one per line (plain or .gz)")
    parser.add_argument("--limit", type=int, default=64, help="the first LIMIT sentences (default: one batch)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.src).exists():
        sys.exit(f"bench/translate.py: no source sentences at {args.src}; pass --src FILE")
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

    def run(beam: int):
        return lambda: translate(model, src_tok, tgt_tok, sentences, beam=beam)

    for beam in BEAMS.values():
        translate(model, src_tok, tgt_tok, sentences[:8], beam=beam)  # warm-up: first-call costs out of the timing
    timings = alternate({mode: run(beam) for mode, beam in BEAMS.items()}, repeat=args.repeat, warmup=0)
    for mode, timing in timings.items():
        emit({"bench": "translate", "model": args.model or "random multi30k preset", "mode": mode,
              "beam": BEAMS[mode], "sentences": len(sentences), **timing.fields(),
              "sentences_per_s": round(len(sentences) / timing.median, 1)})


if __name__ == "__main__":
    main()
