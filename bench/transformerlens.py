"""glassformer's analyses side by side with TransformerLens's, on the same GPT-2-shaped weights.

    python -m venv /work/venv-tl && /work/venv-tl/bin/pip install torch==2.13.0
    /work/venv-tl/bin/pip install transformer_lens==4.3.0 && /work/venv-tl/bin/pip install -e . --no-deps
    HF_HUB_OFFLINE=1 /work/venv-tl/bin/python bench/transformerlens.py --before 407d1e2

A GPT2LMHeadModel with random weights (12 layers, d 768, 12 heads, vocabulary 50257) is written
with save_pretrained to a temporary directory; TransformerLens 4.x loads it with
TransformerBridge.boot_transformers, glassformer with glassformer.load. The input: 16 random
token ids; the corrupted input differs from it in one token, at the middle position.
Workloads, each in a fresh process per contender (a peak RSS belongs to a process), contenders
taking turns (who goes first alternates):
  lens   the logit lens, all layers, all positions: (13, 16, 50257) logits. glassformer:
         analysis.logit_lens; TransformerLens: run_with_cache of the residual-stream hooks,
         cache.accumulated_resid(), then ln_final and unembed (each stream normed by its own
         statistics, as glassformer does).
  patch  residual-stream activation patching, every layer x position, metric the logit
         difference (clean top token - corrupted top token) at the last position, normalised
         (clean = 1, corrupted = 0). glassformer: analysis.patch(heads=False) (13 x 16 sites, the
         last block's output too); TransformerLens: patching.get_act_patch_resid_pre (12 x 16).
Each process loads, then runs the lens once untimed and `--repeat` times timed, or patching
`--patch-repeat` times timed (its first-call costs are negligible beside its minutes); `--rounds`
and `--patch-rounds` processes per contender. One JSON line per (workload, contender): median
seconds over all timed runs,
load_s, rss_before_load_mb (imports done), load_peak_mb (VmHWM just after loading), after_load_mb,
peak_mb (VmHWM at the end: the whole process), weights_mb; then per workload the ratio lines
(TransformerLens time / glassformer time, glassformer peak / TransformerLens peak) and the largest
absolute difference between glassformer's result and TransformerLens's (patch: the 12 x 16 grid
both compute). `--before REV` adds glassformer as it was at a git revision as a third contender.

Measured with the command above (--repeat 5 --rounds 2 --patch-rounds 1) on this project's
2-core x86-64 CPU, torch 2.13, transformer_lens 4.3.0, while other jobs held it (load average
11-14: seconds are several times an idle machine's and medians swing 2x between runs; compare
within one run only). Whole-process peak RSS in MiB, max |glassformer - TransformerLens|:
  patch  median s: TransformerLens 683, glassformer 42 (16x TL's speed), glassformer@407d1e2 300
         (2.3x); peak: TL 981, glassformer 817 (0.83x), @407d1e2 1765 (1.80x); max diff 1.7e-5
  lens   min s (medians were noise): TL 0.65, glassformer 0.64, @407d1e2 1.51; peak: TL 1043,
         glassformer 814 (0.78x), @407d1e2 1765 (1.69x); max diff 2.4e-6
The lens is one forward pass and one (13 x 16, 768) x (768, 50257) matmul in both libraries: the
same arithmetic, so glassformer matches TransformerLens's time rather than halving it.
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
MB = 1 << 20
CONTENDERS = ("transformer_lens", "glassformer")


def status_mb(key: str) -> float:
    """A line of /proc/self/status in MiB (VmRSS: now, VmHWM: the process's peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def prepare(directory: str) -> None:
    """Writes the random-weight GPT2LMHeadModel (run in a process of its own)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024))
    model.save_pretrained(directory, safe_serialization=True)


def inputs(tokens: int):
    import torch

    ids = torch.randint(0, 50257, (tokens,), generator=torch.Generator().manual_seed(1))
    corrupt = ids.clone()
    corrupt[tokens // 2] = (corrupt[tokens // 2] + 1) % 50257
    return ids, corrupt


def top_and_foil(clean_logits, corrupt_logits) -> tuple[int, int]:
    """The clean run's top token and the corrupted run's (its second where that is the same): the metric's pair."""
    target = int(clean_logits.argmax())
    best = corrupt_logits.topk(2).indices.tolist()
    return target, best[0] if best[0] != target else best[1]


def tl_workloads(directory: str, tokens: int):
    """(load, lens, patch) for TransformerLens's TransformerBridge."""
    import torch
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    ids, corrupt = inputs(tokens)
    ids, corrupt = ids[None], corrupt[None]
    state = {}

    def load():
        state["model"] = TransformerBridge.boot_transformers(directory, device="cpu")
        return sum(p.numel() * p.element_size() for p in state["model"].parameters())

    def lens():
        model = state["model"]
        with torch.inference_mode():
            _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith(("hook_resid_pre",
                                                                                    "hook_resid_post")))
            stack = cache.accumulated_resid(apply_ln=False)  # (13, 1, T, C)
            return model.unembed(model.ln_final(stack))[:, 0]  # (13, T, V)

    def patch():
        model = state["model"]
        with torch.inference_mode():
            clean_logits, cache = model.run_with_cache(ids)
            corrupt_logits = model(corrupt)
        target, foil = top_and_foil(clean_logits[0, -1], corrupt_logits[0, -1])
        m_clean = float(clean_logits[0, -1, target] - clean_logits[0, -1, foil])
        m_corrupt = float(corrupt_logits[0, -1, target] - corrupt_logits[0, -1, foil])

        def metric(logits):
            return (logits[0, -1, target] - logits[0, -1, foil] - m_corrupt) / (m_clean - m_corrupt)

        with torch.inference_mode():
            return patching.get_act_patch_resid_pre(model, corrupt, cache, metric)  # (12, T)

    return load, lens, patch


def glassformer_workloads(directory: str, tokens: int):
    """(load, lens, patch) for glassformer (whichever glassformer PYTHONPATH gives)."""
    import glassformer
    from glassformer.observe import analysis

    ids, corrupt = inputs(tokens)
    state = {}

    def load():
        assert Path(glassformer.__file__).is_relative_to(os.environ["PYTHONPATH"]), glassformer.__file__
        state["model"] = glassformer.load(directory)[0]
        return sum(p.numel() * p.element_size() for p in state["model"].parameters())

    def lens():
        return analysis.logit_lens(state["model"], ids)  # (13, T, V)

    def patch():
        return analysis.patch(state["model"], ids, corrupt, heads=False).resid[:-1]  # (12, T): TL's grid

    return load, lens, patch


def child(contender: str, workload: str, directory: str, out: str, tokens: int, repeat: int) -> None:
    import torch

    make = tl_workloads if contender == "transformer_lens" else glassformer_workloads
    load, lens, patch = make(directory, tokens)
    run = lens if workload == "lens" else patch
    record = {"rss_before_load_mb": status_mb("VmRSS")}
    start = time.perf_counter()
    weights = load()
    record.update(load_s=time.perf_counter() - start, load_peak_mb=status_mb("VmHWM"),
                  after_load_mb=status_mb("VmRSS"), weights_mb=weights / MB)
    result = run() if workload == "lens" else None  # untimed: first-call costs (patching's are negligible)
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    record.update(seconds=seconds, peak_mb=status_mb("VmHWM"))
    torch.save(result.detach().clone().float(), out)
    print(json.dumps(record))


def tree_at(revision: str, out: Path) -> Path:
    """The glassformer package of a git revision, extracted into `out` (for PYTHONPATH)."""
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "glassformer"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5, help="timed lens runs per process")
    parser.add_argument("--patch-repeat", type=int, default=1, help="timed patching runs per process")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per contender for the lens")
    parser.add_argument("--patch-rounds", type=int, default=1, help="fresh processes per contender for patching")
    parser.add_argument("--workloads", nargs="*", default=["lens", "patch"])
    parser.add_argument("--before", help="also run glassformer as it was at this git revision")
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare)
    if args.child:
        contender, workload, directory, out = args.child
        return child(contender, workload, directory, out, args.tokens,
                     args.repeat if workload == "lens" else args.patch_repeat)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import emit

    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        directory = str(Path(tmp) / "gpt2")
        subprocess.run([sys.executable, __file__, "--prepare", directory], check=True, capture_output=True)
        roots = {"transformer_lens": ROOT, "glassformer": ROOT}
        if args.before:
            roots[f"glassformer@{args.before}"] = tree_at(args.before, Path(tmp) / "before")
        for workload in args.workloads:
            runs: dict[str, list[dict]] = {name: [] for name in roots}
            for r in range(args.rounds if workload == "lens" else args.patch_rounds):
                names = list(roots) if r % 2 == 0 else list(roots)[::-1]  # alternating who goes first
                for name in names:
                    out = str(Path(tmp) / f"{workload}-{name}.pt")
                    contender = "transformer_lens" if name == "transformer_lens" else "glassformer"
                    env = {**os.environ, "PYTHONPATH": str(roots[name])}
                    proc = subprocess.run([sys.executable, __file__, "--child", contender, workload, directory, out,
                                           "--tokens", str(args.tokens), "--repeat", str(args.repeat),
                                           "--patch-repeat", str(args.patch_repeat)],
                                          env=env, capture_output=True, text=True)
                    if proc.returncode:
                        raise SystemExit(f"{name} {workload} failed:\n{proc.stderr[-3000:]}")
                    runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            figures = {}
            for name, records in runs.items():
                def median(key):
                    return statistics.median(r[key] for r in records)

                seconds = statistics.median(s for r in records for s in r["seconds"])
                figures[name] = {"median_s": seconds, "peak_mb": median("peak_mb")}
                emit({"bench": "transformerlens", "workload": workload, "contender": name, "tokens": args.tokens,
                      "median_s": round(seconds, 4), "min_s": round(min(s for r in records for s in r["seconds"]), 4),
                      "load_s": round(median("load_s"), 2),
                      "rss_before_load_mb": round(median("rss_before_load_mb")),
                      "load_peak_mb": round(median("load_peak_mb")), "after_load_mb": round(median("after_load_mb")),
                      "peak_mb": round(median("peak_mb")), "weights_mb": round(median("weights_mb")),
                      "processes": len(records)})
            reference = torch.load(Path(tmp) / f"{workload}-transformer_lens.pt")
            for name in roots:
                if name == "transformer_lens":
                    continue
                result = torch.load(Path(tmp) / f"{workload}-{name}.pt")
                emit({"bench": "transformerlens", "workload": workload, "contender": name,
                      "speedup_vs_tl": round(figures["transformer_lens"]["median_s"] / figures[name]["median_s"], 2),
                      "peak_vs_tl": round(figures[name]["peak_mb"] / figures["transformer_lens"]["peak_mb"], 3),
                      "max_abs_diff_vs_tl": float((result - reference).abs().max())})


if __name__ == "__main__":
    main()
