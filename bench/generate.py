"""Generation speed with the KV cache: glassformer.generation.sampling vs Hugging Face generate, same weights.

    python bench/generate.py --batch 1
    python bench/generate.py --batch 8 --sample
    python bench/generate.py --batch 1 --profile      # also: where a decode step's time goes
    python bench/generate.py --device cuda --options float --new 512   # on a GPU (bench/gpu.sh runs it)

A 64-token prompt and 256 new tokens on a 6-layer / 6-head / d 384 GPT. Contenders: glassformer as
it is (float32, the default), the same with weight-only int8 storage (`quant.quantize`, an explicit
option: `sample --weights int8`), with weight-only bfloat16 storage and float32 arithmetic
(bf16-weights: `sample --weights bf16`), and with the whole model in bfloat16 (bf16: `--dtype
bfloat16`), and Hugging Face's generate in float32. Greedy float32 outputs must be identical
(checked). The models take turns, one generation each per repeat, after one warm-up each; prints one
JSON line per contender with the median, min and max seconds of a generation, ms and new tokens/s at
the median, and the ratio to Hugging Face's. Our lines carry the weight floor of their decode step
(bench/floor.py: the weight bytes, the time to read them all once, and one row through every
matmul); the int8 and both bfloat16 lines also carry their largest logit difference to float32
(every position of the float32 greedy text, teacher-forced, against the largest float32 logit), the
share of those positions where their argmax is float32's, and how many tokens their own greedy text
shares with float32's before the first difference. Under 1.5 minutes on a quiet 2-core CPU. On a GPU
(--device cuda) the weight floors and the profile, which time CPU work, are left out.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit, offline  # noqa: E402
from floor import logit_difference, profile_decode, shared_prefix, weight_floor  # noqa: E402

from glassformer import GPT, GPTConfig  # noqa: E402
from glassformer.fast import accelerate
from glassformer.fast.quant import quantize  # noqa: E402
from glassformer.generation.sampling import generate  # noqa: E402
from glassformer.hf.gpt2 import tensors_to_hf  # noqa: E402


def options(model: torch.nn.Module, chosen: list[str]) -> dict[str, torch.nn.Module]:
    """Our contenders: the model as it is (float32) and with each chosen explicit weight option."""
    made = {"int8": lambda: quantize(copy.deepcopy(model), "int8"),
            "bf16-weights": lambda: quantize(copy.deepcopy(model), "bf16"),
            "bf16": lambda: copy.deepcopy(model).to(torch.bfloat16)}
    return {"glassformer": model} | {f"glassformer-{name}": made[name]() for name in chosen if name != "float"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--sample", action="store_true", help="top-k 50 sampling instead of greedy")
    parser.add_argument("--repeat", type=int, default=5,
                        help="generations per contender, taking turns (a median of 5 is steadier than of 3 here)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--profile", action="store_true", help="also profile our decode steps (one JSON line each)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--options", default="float,int8,bf16-weights,bf16",
                        help="our weight storages to time, comma-separated (float is always timed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    offline()
    import transformers

    cfg = GPTConfig(vocab_size=512, block_size=args.prompt + args.new, n_layer=6, n_head=6, n_embd=384)
    device = torch.device(args.device)
    chosen = [name for name in args.options.split(",") if name]
    if not set(chosen) <= {"float", "int8", "bf16-weights", "bf16"}:
        parser.error(f"--options: float, int8, bf16-weights or bf16, comma-separated; got {args.options!r}")
    torch.manual_seed(0)
    ours = {name: model.to(device) for name, model in options(GPT(cfg).eval(), chosen).items()}
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head)).eval()
    hf.load_state_dict(tensors_to_hf(ours["glassformer"]), strict=False)
    hf.to(device)
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt),
                           generator=torch.Generator().manual_seed(1)).to(device)
    sampling = dict(temperature=1.0, top_k=50) if args.sample else dict(temperature=0.0)
    hf_sampling = dict(do_sample=True, top_k=50) if args.sample else dict(do_sample=False)

    def run(model):
        return lambda: generate(model, prompt, args.new, seed=0, **sampling)

    def run_hf():
        with torch.inference_mode():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                               min_new_tokens=args.new, pad_token_id=0, **hf_sampling).tolist()

    contenders = {name: run(model) for name, model in ours.items()} | {"hf-gpt2": run_hf}
    extra: dict[str, dict] = {name: {} for name in contenders}
    if not args.sample:  # the checks are also each contender's warm-up run
        texts = {name: fn() for name, fn in contenders.items()}
        same = texts["glassformer"] == texts["hf-gpt2"]
        assert same, "greedy outputs differ: the two models do not compute the same thing"
        extra["glassformer"]["greedy_identical_to_hf"] = same
        reference = torch.tensor(texts["glassformer"], device=device)  # (B, prompt + new)
        for name in ours.keys() - {"glassformer"}:
            extra[name] |= logit_difference(ours["glassformer"], ours[name], reference, args.prompt)
            extra[name]["same_tokens_as_fp32_before_first_difference"] = shared_prefix(texts["glassformer"],
                                                                                   texts[name], args.prompt)
    for name, model in ours.items() if device.type == "cpu" else ():
        extra[name] |= weight_floor(accelerate.decode_step(model, args.batch))
    timings = alternate(contenders, repeat=args.repeat, warmup=int(args.sample))
    speed = {name: args.batch * args.new / timing.median for name, timing in timings.items()}
    for name, timing in timings.items():
        emit({"bench": "generate", "model": name, "batch": args.batch, "prompt": args.prompt, "new": args.new,
              "mode": "sample" if args.sample else "greedy", **timing.fields(),
              "ms_per_token": round(timing.median / args.new * 1e3, 3),
              "new_tokens_per_s": round(speed[name], 1), "vs_hf": round(speed[name] / speed["hf-gpt2"], 2),
              "device": args.device,
              **extra[name]})
    if args.profile and device.type == "cpu":
        for name, model in ours.items():
            emit({"bench": "generate-profile", "model": name, "batch": args.batch, "prompt": args.prompt,
                  "new": args.new, **profile_decode(run(model), args.new)})


if __name__ == "__main__":
    main()
