"""A Qwen2.5-0.5B-shaped model loaded from a Hugging Face directory: generation speed against
transformers, and the memory loading takes.

    python bench/families.py                 # both: speed, then the loading memory
    python bench/families.py --skip-speed    # the loading memory alone
    python bench/families.py --threads 1     # one thread (steadier on a shared machine)

The shape of Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864,
vocabulary 151936, tied embeddings, Q/K/V biases, rope_theta 1e6) with random weights, built
by transformers and saved with save_pretrained in float32 (about 2 GB, in a temporary
directory); glassformer.load reads the same files.

Speed: batch 1, a 128-token prompt, 128 new tokens, greedy; glassformer.generation.sampling in float32
(the default), with weight-only int8 storage (glassformer.fast.quant), with weight-only bfloat16
storage and float32 arithmetic (bf16-weights), and with the model in bfloat16 (bf16) (`--options`),
against transformers' generate in float32, taking turns after one warm-up each.
Prints one JSON line per contender: median/min/max seconds of a generation, ms per token and new
tokens/s at the median, the ratio to transformers', whether float32's tokens are identical to
transformers', the decode step's weight floor (bench/floor.py: weight bytes, the time to read
them once, one row through every matmul), and for the options their largest logit difference
to float32 and the share of positions where their argmax agrees (both teacher-forced over
float32's greedy text), and how many tokens their own greedy text shares with float32's.

Memory: glassformer.load in a fresh Python process, its peak resident set (VmHWM) against
the bytes of the weights, and the same process's resident set after importing torch and
glassformer alone (what the interpreter and libraries take before any weight is read).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit, offline  # noqa: E402
from floor import logit_difference, shared_prefix, weight_floor  # noqa: E402

import glassformer  # noqa: E402
from glassformer.fast import accelerate  # noqa: E402
from glassformer.fast.quant import quantize  # noqa: E402
from glassformer.generation.sampling import generate  # noqa: E402

QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                  max_position_embeddings=32768, rms_norm_eps=1e-6)

# Run in a fresh process: the peak resident set of loading, and the resident set before it.
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the process that forked the child (this
# one, holding the transformers model), while VmHWM belongs to the new program's memory alone.
MEASURE_LOAD = """
import json, sys
import torch, glassformer
def status_mib(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) / 1024
before = status_mib("VmRSS")
model, _ = glassformer.load(sys.argv[1])
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"rss_before_load_mib": round(before, 1), "peak_rss_mib": round(status_mib("VmHWM"), 1),
                  "weights_mib": round(weights / 2**20, 1)}))
"""


def build(directory: Path):
    """Random Qwen2.5-0.5B-shaped transformers model, saved to `directory` in float32; returns the model."""
    import transformers

    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.Qwen2Config(**QWEN25_05B), dtype=torch.float32)
    with torch.no_grad():  # the default init (std 0.02) gives near-uniform logits; wider weights, decided tokens
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    hf.save_pretrained(directory)
    return hf.eval()


def measure_load(directory: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE_LOAD, str(directory)], capture_output=True, text=True,
                            check=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["peak_over_weights"] = round(record["peak_rss_mib"] / record["weights_mib"], 3)
    return record


def bench_speed(directory: Path, hf, args) -> None:
    ours = {"glassformer": glassformer.load(directory, dtype="float32")[0]}
    if "int8" in args.options:
        ours["glassformer-int8"] = quantize(glassformer.load(directory, dtype="float32")[0], "int8")
    if "bf16-weights" in args.options:  # the checkpoint's matrices in bfloat16, the arithmetic in float32
        ours["glassformer-bf16-weights"] = quantize(glassformer.load(directory, dtype="float32")[0], "bf16")
    if "bf16" in args.options:
        ours["glassformer-bf16"] = glassformer.load(directory, dtype="bfloat16")[0]
    prompt = torch.randint(0, QWEN25_05B["vocab_size"], (1, args.prompt), generator=torch.Generator().manual_seed(1))

    def run(model):
        return lambda: generate(model, prompt, args.new, temperature=0)

    def run_hf():
        with torch.inference_mode():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                               min_new_tokens=args.new, do_sample=False, pad_token_id=0).tolist()

    contenders = {name: run(model) for name, model in ours.items()} | {"hf-qwen2": run_hf}
    texts = {name: fn() for name, fn in contenders.items()}  # also each contender's warm-up run
    same = texts["glassformer"] == texts["hf-qwen2"]
    extra: dict[str, dict] = {name: {} for name in contenders}
    extra["glassformer"]["greedy_identical_to_hf"] = same
    reference = torch.tensor(texts["glassformer"])  # (1, prompt + new)
    for name in ours.keys() - {"glassformer"}:
        extra[name] |= logit_difference(ours["glassformer"], ours[name], reference, args.prompt)
        extra[name]["same_tokens_as_fp32_before_first_difference"] = shared_prefix(texts["glassformer"], texts[name],
                                                                                args.prompt)
    for name, model in ours.items():
        extra[name] |= weight_floor(accelerate.decode_step(model, 1), runs=2, chunks=3)
    timings = alternate(contenders, repeat=args.repeat, warmup=0)
    speed = {name: args.new / timing.median for name, timing in timings.items()}
    for name, timing in timings.items():
        emit({"bench": "families-generate", "model": name, "shape": "qwen2.5-0.5b", "batch": 1,
              "prompt": args.prompt, "new": args.new, **timing.fields(),
              "ms_per_token": round(timing.median / args.new * 1e3, 2),
              "new_tokens_per_s": round(speed[name], 2), "vs_hf": round(speed[name] / speed["hf-qwen2"], 2),
              **extra[name]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--options", default="int8,bf16-weights,bf16",
                        help="our weight options timed besides float32, comma-separated: int8, bf16-weights, bf16 "
                             "(empty: none)")
    args = parser.parse_args()
    args.options = [o for o in args.options.split(",") if o]
    if set(args.options) - {"int8", "bf16-weights", "bf16"}:
        parser.error(f"--options takes int8, bf16-weights and bf16; got {','.join(args.options)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    offline()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        hf = build(directory)
        if not args.skip_speed:
            bench_speed(directory, hf, args)
        del hf  # freed before the memory is measured in another process
        emit({"bench": "families-load-memory", "shape": "qwen2.5-0.5b", **measure_load(directory)})


if __name__ == "__main__":
    main()
