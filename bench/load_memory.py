"""Peak memory of glassformer.load for each checkpoint format it reads, against the weights' bytes.

    python bench/load_memory.py                      # this tree
    python bench/load_memory.py --before 407d1e2     # and the tree at a git revision, in the same run

Random-weight checkpoints are written to a temporary directory (about 2.2 GB of files):
  glassformer   a glassformer checkpoint (model.safetensors + manifest.json) of PRESETS["gpt2"].model, 124M
  gpt2          the same model as a Hugging Face GPT-2 directory (Conv1D weights transposed), model.safetensors
  gpt2-bin      the same as pytorch_model.bin
  llama         a 106M Llama (8 layers, d 768, vocabulary 32000, untied), float32
  qwen2-bf16    a 106M Qwen2 (Q/K/V biases, tied), stored in bfloat16 and loaded as float32 on a CPU
                without native bf16 (glassformer.hf.families.pick_dtype): the model is twice the file
Each load runs in a fresh process, `--repeat` times, tree after tree (a peak RSS belongs to a process).
The process imports torch and glassformer's loading modules first; its RSS then is the baseline,
and the peak is reset (/proc/self/clear_refs) before glassformer.load. One JSON line per (tree,
format), the medians: baseline_mb, peak_mb (VmHWM), after_mb (VmRSS with the model loaded),
weights_mb (the loaded parameters' bytes, a tied matrix once), file_mb, and ratio = (peak - baseline)
/ weights: the memory the load adds at its peak per byte of weights (the target: at most 1.2).

Measured (--before 407d1e2 --repeat 2, 2-core x86-64, torch 2.13; ratio, this tree / 407d1e2):
glassformer 1.016 / 3.557 (peak 709 / 1915 MiB), gpt2 1.027 / 3.237, gpt2-bin 1.026 / 3.242,
llama 1.026 / 1.284, qwen2-bf16 1.068 / 1.703 (kept in bf16: this CPU multiplies bf16 natively).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

MB = 1 << 20


def status_kb(key: str) -> int:
    """A line of /proc/self/status in kB (VmRSS: now, VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def child(path: str) -> None:
    """Loads `path` once and prints the memory figures as JSON (run in a fresh process)."""
    import torch  # noqa: F401  the baseline holds torch and the loading modules, as any user's process does

    import glassformer.checkpoint
    import glassformer.hf.families  # noqa: F401
    import glassformer.hf.gpt2  # noqa: F401

    baseline = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from now
    start = time.perf_counter()
    model, _ = glassformer.checkpoint.load(path)
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # a tied matrix once
    print(json.dumps({"baseline_kb": baseline, "peak_kb": status_kb("VmHWM"), "after_kb": status_kb("VmRSS"),
                      "weights_bytes": weights, "seconds": seconds}))


def write_checkpoints(out: Path) -> dict[str, Path]:
    """The random-weight checkpoints of the module docstring, written by this tree's glassformer."""
    import torch

    from glassformer.checkpoint import export_hf, save
    from glassformer.hf.gpt2 import tensors_to_hf
    from glassformer.model.config import PRESETS, GPTConfig
    from glassformer.model.gpt import GPT

    torch.manual_seed(0)
    dirs = {}
    gpt2 = GPT(PRESETS["gpt2"].model).eval()
    dirs["glassformer"] = save(gpt2, out / "glassformer")
    dirs["gpt2"] = export_hf(gpt2, out / "gpt2")
    (out / "gpt2-bin").mkdir()
    (out / "gpt2-bin" / "config.json").write_bytes((out / "gpt2" / "config.json").read_bytes())
    torch.save(tensors_to_hf(gpt2), out / "gpt2-bin" / "pytorch_model.bin")
    dirs["gpt2-bin"] = out / "gpt2-bin"
    del gpt2
    family = dict(vocab_size=32000, block_size=1024, n_layer=8, n_head=12, n_embd=768, d_ff=2048, dropout=0.0,
                  bias=False, norm="rmsnorm", norm_position="pre", activation="swiglu", position="rope")
    llama = GPT(GPTConfig(**family, tie_weights=False)).eval()
    dirs["llama"] = export_hf(llama, out / "llama")
    del llama
    qwen2 = GPT(GPTConfig(**family, tie_weights=True, qkv_bias=True)).to(torch.bfloat16).eval()
    dirs["qwen2-bf16"] = export_hf(qwen2, out / "qwen2-bf16")
    return dirs


def tree_at(revision: str, out: Path) -> Path:
    """The glassformer package of a git revision, extracted into `out` (for PYTHONPATH)."""
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "glassformer"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--before", help="also measure the glassformer of this git revision")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per (tree, format)")
    parser.add_argument("--formats", nargs="*", help="formats to measure (default all)")
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    from common import emit

    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_checkpoints(Path(tmp) / "checkpoints")
        trees = {"this tree": ROOT}
        if args.before:
            trees[f"glassformer@{args.before}"] = tree_at(args.before, Path(tmp) / "before")
        for name, directory in dirs.items():
            if args.formats and name not in args.formats:
                continue
            file_bytes = sum(f.stat().st_size for f in directory.iterdir() if f.suffix in (".safetensors", ".bin"))
            runs: dict[str, list[dict]] = {tree: [] for tree in trees}
            for _ in range(args.repeat):
                for tree, root in trees.items():  # taking turns
                    env = {**os.environ, "PYTHONPATH": str(root)}
                    result = subprocess.run([sys.executable, __file__, "--child", str(directory)], env=env,
                                            capture_output=True, text=True, check=True)
                    runs[tree].append(json.loads(result.stdout.strip().splitlines()[-1]))
            for tree, results in runs.items():
                def median(key):
                    return statistics.median(r[key] for r in results)

                weights = results[0]["weights_bytes"]
                emit({"bench": "load_memory", "tree": tree, "format": name,
                      "baseline_mb": round(median("baseline_kb") / 1024),
                      "peak_mb": round(median("peak_kb") / 1024), "after_mb": round(median("after_kb") / 1024),
                      "weights_mb": round(weights / MB), "file_mb": round(file_bytes / MB),
                      "ratio": round((median("peak_kb") - median("baseline_kb")) * 1024 / weights, 3),
                      "seconds": round(median("seconds"), 2), "runs": len(results)})


if __name__ == "__main__":
    main()
