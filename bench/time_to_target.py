"""Time to target: wall time of a training recipe until validation loss reaches a target.

    python bench/time_to_target.py --preset shakespeare-char-cpu
    python bench/time_to_target.py --preset shakespeare-char-fast
    python bench/time_to_target.py --preset shakespeare-char-fast --set learning_rate=3e-3

Trains on tiny-shakespeare (../shared/data, or --data) exactly as `glassformer train lm` does
and prints one JSON line: the first evaluation at or under --target (its iteration, seconds
since training started including evaluations, and seconds of steps alone), the run's final
validation loss and, the stricter check, the final model's loss over every token of the
validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from glassformer.lm import eval_lm, train_lm  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shakespeare-char-fast")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--target", type=float, default=1.88)
    parser.add_argument("--out", help="run directory to keep (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "run")
        start = time.perf_counter()
        final = train_lm(out, data=args.data, preset=args.preset, overrides=args.overrides, progress=False)
        command_s = time.perf_counter() - start
        evals = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "val_loss" in r]
        hit = next((r for r in evals if r["val_loss"] <= args.target), None)
        full = eval_lm(out, args.data)  # the best checkpoint, over the whole validation split
    emit({"bench": "time_to_target", "preset": args.preset, "overrides": args.overrides, "target": args.target,
          "reached": hit is not None, "iter": hit and hit["iter"], "elapsed_s": hit and hit["elapsed_s"],
          "train_s": hit and hit["train_s"], "final_iter": evals[-1]["iter"], "final_val_loss": final["val_loss"],
          "run_elapsed_s": evals[-1]["elapsed_s"], "command_s": round(command_s, 2),
          "full_split_val_loss": round(full["val_loss"], 4)})


if __name__ == "__main__":
    main()
