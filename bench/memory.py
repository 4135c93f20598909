"""Resident memory of a glassformer command over its whole run: one JSON line per sample, then a summary.

    nice -n 5 python bench/memory.py --interval 30 -- train translation --train-src train.de.gz ... --out /tmp/m30k

Everything after `--` is the command's arguments (it runs as `python -m glassformer ARGS` in a
child process, its output going to this script's stderr). Every `--interval` seconds the resident
memory (VmRSS) and its high-water mark (VmHWM) are read from /proc/PID/status for the child and
all its descendants (summed: `data prepare`'s workers, a compile worker) and printed as a JSON line.
The last line is the summary: the resident memory at the first sample, at 0.5, 1, 2, 5 and 10
minutes (the sample nearest each mark), the peak (the kernel's own maximum for the
child, from wait4, and the largest sampled high-water mark), the end, and the slope in MB per
minute fitted by least squares over the second half of the run: the allocator settles in the
first half, so a slope well above zero there is growth, not warm-up. MB here is 2**20 bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import descendants, emit  # noqa: E402

MARKS_MIN = (0.5, 1, 2, 5, 10)  # the minutes the summary reports the resident memory at
POLL_S = 0.2  # how often the child's exit is checked between samples


def tree_memory_mb(root: int) -> tuple[float, float, int]:
    """(VmRSS, VmHWM, processes) summed over `root` and its descendants, in MB; processes that ended are skipped."""
    rss_kb = hwm_kb = count = 0
    for pid in descendants(root):
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        if "VmRSS" not in fields:  # a zombie: no memory any more
            continue
        rss_kb += int(fields["VmRSS"].split()[0])
        hwm_kb += int(fields["VmHWM"].split()[0])
        count += 1
    return rss_kb / 1024, hwm_kb / 1024, count


def slope_mb_per_min(samples: list[dict]) -> float | None:
    """The least-squares slope of resident memory against time over the second half of the run, in MB/min;
    None with fewer than two samples there."""
    if not samples:
        return None
    half = samples[-1]["t_s"] / 2
    points = [(s["t_s"] / 60, s["rss_mb"]) for s in samples if s["t_s"] >= half]
    if len(points) < 2:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / spread


def at_mark(samples: list[dict], minutes: float) -> float | None:
    """The resident memory of the sample nearest to `minutes`; None when the run ended before it."""
    if not samples or samples[-1]["t_s"] < minutes * 60:
        return None
    return min(samples, key=lambda s: abs(s["t_s"] - minutes * 60))["rss_mb"]


def summary(samples: list[dict], peak_kernel_mb: float, seconds: float, returncode: int, label: str) -> dict:
    """The summary line's fields (see the module docstring)."""
    rss = [s["rss_mb"] for s in samples]
    record = {"label": label, "summary": True, "returncode": returncode, "seconds": round(seconds, 1),
              "samples": len(samples), "start_mb": rss[0] if rss else None, "end_mb": rss[-1] if rss else None,
              "peak_sampled_mb": max((s["hwm_mb"] for s in samples), default=None),
              "peak_mb": round(peak_kernel_mb, 1)}
    for minutes in MARKS_MIN:
        record[f"rss_{minutes:g}min_mb"] = at_mark(samples, minutes)
    slope = slope_mb_per_min(samples)
    record["slope_second_half_mb_per_min"] = None if slope is None else round(slope, 2)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [--interval S] [--label NAME] -- GLASSFORMER-ARGS ...")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--label", default="", help="a name for this run, repeated in every line")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the glassformer command's arguments, after --")
    args = parser.parse_args(argv)
    command = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not command:
        parser.error("give the glassformer command's arguments after --")
    if not args.interval > 0:
        parser.error(f"--interval must be a positive number of seconds; got {args.interval}")

    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "glassformer", *command], stdout=sys.stderr)
    samples: list[dict] = []
    status, usage = None, None
    next_sample = start + args.interval
    while status is None:
        pid, raw_status, raw_usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            status, usage = raw_status, raw_usage
            break
        now = time.monotonic()
        if now >= next_sample:
            rss, hwm, count = tree_memory_mb(child.pid)
            sample = {"label": args.label, "t_s": round(now - start, 1), "rss_mb": round(rss, 1),
                      "hwm_mb": round(hwm, 1), "processes": count}
            samples.append(sample)
            emit(sample)
            next_sample += args.interval
        time.sleep(POLL_S)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here by wait4; Popen must not wait again
    # ru_maxrss: the largest resident set of the child itself, in KiB on Linux (its children are not in it).
    emit(summary(samples, usage.ru_maxrss / 1024, time.monotonic() - start, child.returncode, args.label))
    return 0 if child.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
