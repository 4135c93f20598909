"""Time to target: wall time of a training recipe until validation loss reaches a target, against nanoGPT's.

    python bench/time_to_target.py                                   # the default preset, one run
    python bench/time_to_target.py --seeds 3 --nanogpt ~/src/nanoGPT  # 3 seeds, and nanoGPT's CPU recipe
    python bench/time_to_target.py --preset shakespeare-char-cpu --max-train-s 0   # nanoGPT's recipe, ours, uncapped
    python bench/time_to_target.py --preset shakespeare-char-fast --set learning_rate=3e-3
    python bench/time_to_target.py --preset shakespeare-char-fast --preset shakespeare-char-cpu --repeat 3

Trains on tiny-shakespeare (../shared/data, or --data) exactly as `glassformer train lm` does
and prints one JSON line per preset and seed: the first evaluation at or under --target (its
iteration, and seconds since training started including evaluations: median_s, min_s and
max_s over the --repeat runs, elapsed_s and train_s, the steps alone, at the median), the
final validation loss and, the stricter check, the final model's loss over every token of the
validation split (`eval_lm`). --seeds N runs seeds 1337, 1, 2, ... N-1; a last line per preset
("worst_seed") gives the slowest seed's time, and whether every seed reached the target.

--nanogpt DIR also runs nanoGPT's own train.py from a checkout of it, with its README's CPU
recipe (4 layers, 4 heads, d 128, block 64, batch 12, 2000 iterations, eval_iters 20), on the
same text: the benchmark writes the train.bin, val.bin and meta.pkl its prepare.py would (first
90% train, last 10% validation, uint16 ids of the sorted characters) into a temporary copy, so
nothing is downloaded. Its line gives the whole process's wall time (wall_s), its training
loop's time (loop_s: the sum of the per-iteration times it prints, which run from just before
its first evaluation to its last step, evaluations and checkpoints included, as our elapsed_s
does; not the interpreter's start, imports, data loading and model building) and its
evaluations. Each of our lines gives its ratio to that: "speedup", nanoGPT's loop_s over our
seconds to the target, like for like; "speedup_wall", nanoGPT's wall_s over the same seconds
(the looser figure: only nanoGPT's side counts its start-up); "speedup_command", wall_s over
our whole train_lm call (data, tokenizer, model, the loop; the imports are not in it).
All contenders take turns, one run each per repeat, so that a drift of a shared machine lands
on all of them; runs of one seed differ only in their times.

nanoGPT runs with glibc's allocator set as our trainer sets it in its own process
(glassformer.training.trainer.keep_freed_memory: MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_ in its
environment), so that neither pays for page faults the other avoids: on a 2-core VM nanoGPT's
steps took 27% less time so (300 iterations: 13.4 s against 18.4 s, 76,000 page faults against
470,000-550,000). --nanogpt-as-shipped runs it with glibc's defaults instead.

Every line also gives cpu_wait_s: the seconds during each run in which some task on the machine
waited for a CPU (Linux's /proc/pressure/cpu "some"; null where the kernel has none). Two busy
threads on two cores wait little; a large figure means another job shared the CPUs during that
run, and its time is not comparable.

Each of our runs gets --max-train-s (default 120) seconds as its time budget (`max_time`: on a
machine too slow for the recipe the schedule is shortened to fit), and reports "reached": false
if the target was not met; --max-train-s 0 lifts the budget.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timing, alternate, emit  # noqa: E402

from glassformer.training.lm import DEFAULT_PRESET, eval_lm, train_lm  # noqa: E402
from glassformer.training.trainer import MMAP_THRESHOLD, TRIM_THRESHOLD  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
SEEDS = (1337, 1, 2, 3, 4, 5, 6, 7, 8, 9)  # --seeds N takes the first N; 1337 is every preset's own
# nanoGPT's CPU recipe, as its README gives it
NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                  "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
NANOGPT_EVAL = re.compile(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
NANOGPT_ITER = re.compile(r"iter \d+: loss [\d.]+, time ([\d.]+)ms")  # every iteration (log_interval=1)


def evaluations(run: Path) -> list[dict]:
    """The run's evaluation records from its log, in order."""
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "val_loss" in r]


def nanogpt_workdir(checkout: Path, text: str, root: Path) -> Path:
    """A directory nanoGPT's train.py runs in: its files linked, data/shakespeare_char/ written as
    its prepare.py writes it (first 90% of the characters train, the rest validation)."""
    work = root / "nanogpt"
    data = work / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    for name in ("train.py", "model.py", "configurator.py", "config"):
        if not (checkout / name).exists():
            raise SystemExit(f"--nanogpt {checkout}: no {name}; give a nanoGPT checkout")
        (work / name).symlink_to((checkout / name).resolve())
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    split = int(len(text) * 0.9)
    ids = np.array([stoi[ch] for ch in text], dtype=np.uint16)
    ids[:split].tofile(data / "train.bin")
    ids[split:].tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return work


def cpu_wait() -> float | None:
    """Seconds so far that some task waited for a CPU (Linux pressure stall information); None without it."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(some.rsplit("total=", 1)[1]) / 1e6


def waits_of(run, waits: list):
    """`run`, also appending the CPU wait (cpu_wait) during it to `waits`."""
    def timed():
        before = cpu_wait()
        run()
        after = cpu_wait()
        waits.append(None if before is None or after is None else round(after - before, 2))
    return timed


def run_nanogpt(work: Path, evals: list[list[tuple[int, float]]], loops: list[float], as_shipped: bool) -> None:
    """One run of nanoGPT's train.py with its CPU recipe; appends its (iteration, val loss) evaluations,
    and its training loop's seconds: the sum of the times it prints per iteration, each from the end of
    the one before (the first from just before the loop), so evaluations and checkpoints are in it.
    as_shipped: glibc's allocator defaults; otherwise the thresholds our trainer sets (keep_freed_memory)."""
    env = {**os.environ, "PYTHONPATH": ""}
    if not as_shipped:
        env.update(MALLOC_TRIM_THRESHOLD_=str(TRIM_THRESHOLD), MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    result = subprocess.run([sys.executable, "train.py", *NANOGPT_RECIPE], cwd=work, capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed:\n{result.stderr[-2000:]}")
    evals.append([(int(m[1]), float(m[3])) for m in NANOGPT_EVAL.finditer(result.stdout)])
    loops.append(sum(float(ms) for ms in NANOGPT_ITER.findall(result.stdout)) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", dest="presets", action="append", metavar="PRESET",
                        help=f"a training preset; give several to compare them (default: {DEFAULT_PRESET})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--target", type=float, default=1.88)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender")
    parser.add_argument("--seeds", type=int, default=1, choices=range(1, len(SEEDS) + 1), metavar="N",
                        help=f"seeds per preset: the first N of {', '.join(map(str, SEEDS))} (default 1)")
    parser.add_argument("--nanogpt", metavar="DIR", help="a nanoGPT checkout: also run its train.py's CPU recipe")
    parser.add_argument("--nanogpt-as-shipped", action="store_true",
                        help="run nanoGPT with glibc's allocator defaults, not the thresholds our trainer sets")
    parser.add_argument("--max-train-s", type=float, default=120.0,
                        help="each run's time budget (max_time) in seconds; 0: none (default 120)")
    parser.add_argument("--out", help="keep our runs under this directory, as PRESET-sSEED-N (default: a temporary)")
    args = parser.parse_args()
    presets = args.presets or [DEFAULT_PRESET]
    seeds = SEEDS[:args.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        runs: dict[tuple[str, int], list[Path]] = {(p, s): [] for p in presets for s in seeds}

        def train(preset: str, seed: int):
            def run():
                out = root / f"{preset}-s{seed}-{len(runs[preset, seed])}"
                runs[preset, seed].append(out)
                # a --set seed=... or max_time=... given by hand wins
                overrides = [f"max_time={args.max_train_s}", f"seed={seed}", *args.overrides]
                train_lm(out, data=args.data, preset=preset, overrides=overrides, progress=False)
            return run

        waits: dict[str, list] = {f"{p} seed {s}": [] for p, s in runs} | {"nanogpt": []}
        contenders = {f"{p} seed {s}": waits_of(train(p, s), waits[f"{p} seed {s}"]) for p, s in runs}
        nano_evals: list[list[tuple[int, float]]] = []
        nano_loops: list[float] = []
        if args.nanogpt:
            work = nanogpt_workdir(Path(args.nanogpt), Path(args.data).read_text(encoding="utf-8"), Path(tmp))
            nanogpt = functools.partial(run_nanogpt, work, nano_evals, nano_loops, args.nanogpt_as_shipped)
            contenders = {"nanogpt": waits_of(nanogpt, waits["nanogpt"]), **contenders}
        timings = alternate(contenders, repeat=args.repeat, warmup=0)
        nano = None
        if args.nanogpt:
            nano = {"wall_s": timings["nanogpt"].median, "loop_s": statistics.median(nano_loops)}
            last = nano_evals[0][-1]
            emit({"bench": "time_to_target", "contender": "nanogpt", "recipe": " ".join(NANOGPT_RECIPE),
                  **timings["nanogpt"].fields(), "wall_s": round(nano["wall_s"], 2),
                  "loop_s": round(nano["loop_s"], 2), "loop_s_runs": [round(s, 2) for s in nano_loops],
                  "cpu_wait_s": waits["nanogpt"], "allocator": "glibc defaults" if args.nanogpt_as_shipped else
                  f"MALLOC_TRIM_THRESHOLD_={TRIM_THRESHOLD} MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}",
                  "final_iter": last[0],
                  "final_val_loss": last[1], "reached": any(loss <= args.target for _, loss in nano_evals[0]),
                  "evaluations": nano_evals[0]})
        for preset in presets:
            records = [report(preset, seed, runs[preset, seed], timings[f"{preset} seed {seed}"], args, nano)
                       | {"cpu_wait_s": waits[f"{preset} seed {seed}"]} for seed in seeds]
            for record in records:
                emit(record)
            # a seed that missed the target, or else the slowest one
            worst = next((r for r in records if not r["reached"]), None) or max(records, key=lambda r: r["elapsed_s"])
            if len(seeds) > 1:
                emit({"bench": "time_to_target", "contender": "worst_seed", "preset": preset, "seeds": list(seeds),
                      **{k: worst[k] for k in ("seed", "reached", "iter", "elapsed_s", "command_s",
                                               "full_split_val_loss", "speedup", "speedup_wall",
                                               "cpu_wait_s")}})


def report(preset: str, seed: int, runs: list[Path], command: Timing, args, nano: dict | None) -> dict:
    """One preset and seed's JSON line from its runs' logs; `nano` holds nanoGPT's wall_s and loop_s."""
    logs = [evaluations(out) for out in runs]
    hits = [next((r for r in evals if r["val_loss"] <= args.target), None) for evals in logs]
    reached = all(hits)
    first, last = hits[0], logs[0][-1]  # the first run's; the same seed gives every run the same losses
    to_target = (Timing.of([h["elapsed_s"] for h in hits]).fields() if reached else
                 {"median_s": None, "min_s": None, "max_s": None, "runs": len(hits)})
    full = eval_lm(runs[0], args.data)  # the best checkpoint, over the whole validation split
    elapsed = to_target["median_s"]
    return {"bench": "time_to_target", "contender": "glassformer", "preset": preset, "seed": seed,
            "overrides": args.overrides, "target": args.target, "max_train_s": args.max_train_s, "reached": reached,
            "iter": first and first["iter"], **to_target, "elapsed_s": elapsed,
            "train_s": round(statistics.median(h["train_s"] for h in hits), 3) if reached else None,
            "final_iter": last["iter"], "final_val_loss": last["val_loss"],
            "run_elapsed_s": statistics.median(evals[-1]["elapsed_s"] for evals in logs),
            "command_s": round(command.median, 2), "full_split_val_loss": round(full["val_loss"], 4),
            "speedup": round(nano["loop_s"] / elapsed, 2) if nano and elapsed else None,
            "speedup_wall": round(nano["wall_s"] / elapsed, 2) if nano and elapsed else None,
            "speedup_command": round(nano["wall_s"] / command.median, 2) if nano else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


if __name__ == "__main__":
    main()
