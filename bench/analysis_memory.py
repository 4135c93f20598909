"""Peak memory of the analysis tools: recording only the sites they read vs recording everything.

    python bench/analysis_memory.py
    python bench/analysis_memory.py --workloads lens-last patch --tokens 256

A 124M GPT (PRESETS["gpt2"].model, random weights) reads 512 tokens. Each workload runs twice,
each time in a fresh process, since a peak RSS (ru_maxrss) belongs to a whole process:
  names:  glassformer.observe.analysis as it is, recording with Trace(model, names=...)
  all:    the contender, the same workload with glassformer.observe.analysis.record replaced by one
          that opens the all-recording Trace(model) and then reads the same names from it
Workloads:
  lens       logit_lens at every position: its output alone, (13, 512, 50257) float32, is 1.3 GB
  lens-last  logit_lens at the last position
  patch      patch() on inputs differing in their last token: the residual stream after the
             embedding and after each block at the last position (13 patched runs), heads off
Prints one JSON line per (workload, recorder), in MiB: the RSS with the model built (model_rss_mb,
about 0.5 GB of weights), the peak RSS during the workload (peak_rss_mb: the peak is reset after
the build, whose initialisation temporaries peak higher, build_peak_mb), and the workload's
addition (added_mb); and its seconds. About 4 minutes on a 2-core CPU.

Measured on a 2-core x86-64 CPU, torch 2.13 (peak RSS in MiB, names / all): lens 2068 / 3462
(the lens's own 1285 MiB output and the 702 MiB process with the model set its floor, 1987),
lens-last 759 / 2260, patch 1127 / 2481.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from glassformer.model.config import PRESETS  # noqa: E402
from glassformer.model.gpt import GPT  # noqa: E402
from glassformer.observe import analysis  # noqa: E402
from glassformer.observe.trace import Trace  # noqa: E402

WORKLOADS = ("lens", "lens-last", "patch")
RECORDERS = ("names", "all")
LIMIT_MB = 2048  # the bound for the lens and patch workloads, read as 2 GiB


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM its peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def reset_peak() -> bool:
    """Resets the process's peak RSS to its current RSS (Linux 4.0+), so that building the model
    (whose initialisation makes temporaries) does not set the peak; False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def record_everything(model, ids, names):
    """analysis.record with the all-recording Trace: every intermediate kept, the named ones returned."""
    with Trace(model) as trace:
        hidden = model.hidden(ids, segment_ids=analysis.segments(model, ids))[0]
    return hidden, {name: trace[name] for name in names}


def child(workload: str, recorder: str, tokens: int) -> dict:
    """Runs one workload in this process and returns its figures."""
    if recorder == "all":
        analysis.record = record_everything
    torch.manual_seed(0)
    model = GPT(PRESETS["gpt2"].model).eval()
    clean = torch.randint(0, model.config.vocab_size, (tokens,), generator=torch.Generator().manual_seed(1))
    corrupt = clean.clone()
    corrupt[-1] = (corrupt[-1] + 1) % model.config.vocab_size
    build_peak_mb, model_mb, reset = status_mb("VmHWM"), status_mb("VmRSS"), reset_peak()
    start = time.perf_counter()
    if workload == "lens":
        shape = tuple(analysis.logit_lens(model, clean).shape)
    elif workload == "lens-last":
        shape = tuple(analysis.logit_lens(model, clean, positions=[-1]).shape)
    else:
        shape = tuple(analysis.patch(model, clean, corrupt, positions=[tokens - 1], heads=False).resid.shape)
    seconds = time.perf_counter() - start
    peak_mb = status_mb("VmHWM") if reset else max(build_peak_mb, status_mb("VmHWM"))
    return {"model_rss_mb": round(model_mb, 1), "peak_rss_mb": round(peak_mb, 1),
            "added_mb": round(peak_mb - model_mb, 1), "build_peak_mb": round(build_peak_mb, 1),
            "peak_reset": reset, "seconds": round(seconds, 2), "output_shape": list(shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "RECORDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.tokens)), flush=True)
        return
    for workload in args.workloads:
        for recorder in RECORDERS:
            done = subprocess.run([sys.executable, __file__, "--tokens", str(args.tokens), "--child", workload,
                                   recorder], capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            emit({"bench": "analysis_memory", "workload": workload, "recorder": recorder, "model": "gpt2-124M",
                  "tokens": args.tokens, **figures, "under_2gib": figures["peak_rss_mb"] < LIMIT_MB})


if __name__ == "__main__":
    main()
