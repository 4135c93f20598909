"""Time to target: wall time of a training recipe until validation loss reaches a target.

    python bench/time_to_target.py                                   # shakespeare-char-fast, one run
    python bench/time_to_target.py --preset shakespeare-char-cpu --max-train-s 0   # nanoGPT's recipe, uncapped
    python bench/time_to_target.py --preset shakespeare-char-fast --set learning_rate=3e-3
    python bench/time_to_target.py --preset shakespeare-char-fast --preset shakespeare-char-cpu --repeat 3

Trains on tiny-shakespeare (../shared/data, or --data) exactly as `glassformer train lm` does
and prints one JSON line per preset: the first evaluation at or under --target (its iteration,
and seconds since training started including evaluations: median_s, min_s and max_s over the
--repeat runs, elapsed_s and train_s, the steps alone, at the median), the final validation
loss and, the stricter check, the final model's loss over every token of the validation split.
Several presets take turns, one run each per repeat, so that a drift of a shared machine lands
on all of them; every run starts from the same seed, so only the times differ between repeats.

The default, shakespeare-char-fast once (800 iterations), takes about 30 s on a quiet 2-core
CPU. So that it ends within 3 minutes on a busy one too, each run stops after --max-train-s
(default 120) seconds of training steps, and then reports "reached": false if the target was
not met by then; --max-train-s 0 lifts the cap (shakespeare-char-cpu, 2000 iterations, takes
75-160 s of training on the same CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, alternate, emit  # noqa: E402

from glassformer.lm import eval_lm, train_lm  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def evaluations(run: Path) -> list[dict]:
    """The run's evaluation records from its log, in order."""
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "val_loss" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", dest="presets", action="append", metavar="PRESET",
                        help="a training preset; give several to compare them (default: shakespeare-char-fast)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--target", type=float, default=1.88)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each preset")
    parser.add_argument("--max-train-s", type=float, default=120.0,
                        help="stop a run after this many seconds of training steps; 0: no cap (default 120)")
    parser.add_argument("--out", help="keep the runs under this directory, as PRESET-N (default: a temporary one)")
    args = parser.parse_args()
    presets = args.presets or ["shakespeare-char-fast"]
    overrides = [f"max_time={args.max_train_s}", *args.overrides]  # a --set max_time=... wins
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        runs: dict[str, list[Path]] = {preset: [] for preset in presets}

        def train(preset: str):
            def run():
                out = root / f"{preset}-{len(runs[preset])}"
                runs[preset].append(out)
                train_lm(out, data=args.data, preset=preset, overrides=overrides, progress=False)
            return run

        commands = alternate({preset: train(preset) for preset in presets}, repeat=args.repeat, warmup=0)
        for preset, command in commands.items():
            logs = [evaluations(out) for out in runs[preset]]
            hits = [next((r for r in evals if r["val_loss"] <= args.target), None) for evals in logs]
            reached = all(hits)
            first, last = hits[0], logs[0][-1]  # the first run's; the same seed gives every run the same losses
            to_target = (Timing.of([h["elapsed_s"] for h in hits]).fields() if reached else
                         {"median_s": None, "min_s": None, "max_s": None, "runs": len(hits)})
            full = eval_lm(runs[preset][0], args.data)  # the best checkpoint, over the whole validation split
            emit({"bench": "time_to_target", "preset": preset, "overrides": args.overrides, "target": args.target,
                  "max_train_s": args.max_train_s, "reached": reached, "iter": first and first["iter"], **to_target,
                  "elapsed_s": to_target["median_s"],
                  "train_s": round(statistics.median(h["train_s"] for h in hits), 3) if reached else None,
                  "final_iter": last["iter"], "final_val_loss": last["val_loss"],
                  "run_elapsed_s": statistics.median(evals[-1]["elapsed_s"] for evals in logs),
                  "command_s": round(command.median, 2), "full_split_val_loss": round(full["val_loss"], 4)})


if __name__ == "__main__":
    main()
