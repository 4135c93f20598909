"""Generation speed with the KV cache: glassformer.generate vs Hugging Face generate, same weights.

    python bench/generate.py --batch 1
    python bench/generate.py --batch 8 --sample

A 64-token prompt and 256 new tokens on a 6-layer / 6-head / d 384 GPT. Greedy outputs
must be identical (checked). The two models take turns, one generation each per repeat, after
one warm-up each; prints one JSON line per model with the median, min and max seconds of a
generation, new tokens/s at the median and its ratio to Hugging Face's. The default, four
generations per model, takes under half a minute on a quiet 2-core CPU (nearly 3 minutes on
one busy with other jobs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, emit, offline  # noqa: E402

from glassformer import GPT, GPTConfig, generate  # noqa: E402
from glassformer.checkpoint import tensors_to_hf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--sample", action="store_true", help="top-k 50 sampling instead of greedy")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    offline()
    import transformers

    cfg = GPTConfig(vocab_size=512, block_size=args.prompt + args.new, n_layer=6, n_head=6, n_embd=384)
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head)).eval()
    hf.load_state_dict(tensors_to_hf(ours), strict=False)
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    sampling = dict(temperature=1.0, top_k=50) if args.sample else dict(temperature=0.0)
    hf_sampling = dict(do_sample=True, top_k=50) if args.sample else dict(do_sample=False)

    def run_ours():
        return generate(ours, prompt, args.new, seed=0, **sampling)

    def run_hf():
        with torch.inference_mode():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                               min_new_tokens=args.new, pad_token_id=0, **hf_sampling).tolist()

    same = None
    if not args.sample:  # the check is also each model's warm-up run
        same = run_ours() == run_hf()
        assert same, "greedy outputs differ: the two models do not compute the same thing"
    timings = alternate({"glassformer": run_ours, "hf-gpt2": run_hf}, repeat=args.repeat, warmup=int(args.sample))
    speed = {name: args.batch * args.new / timing.median for name, timing in timings.items()}
    for name, timing in timings.items():
        emit({"bench": "generate", "model": name, "batch": args.batch, "prompt": args.prompt, "new": args.new,
              "mode": "sample" if args.sample else "greedy", **timing.fields(),
              "new_tokens_per_s": round(speed[name], 1), "vs_hf": round(speed[name] / speed["hf-gpt2"], 2),
              "greedy_identical": same})


if __name__ == "__main__":
    main()
