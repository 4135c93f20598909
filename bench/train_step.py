"""Training-step speed: glassformer vs Hugging Face GPT2LMHeadModel, same shape, same weights.

    python bench/train_step.py --shape cpu     # nanoGPT's CPU recipe: 4 layers, 4 heads, d 128, block 64, batch 12
    python bench/train_step.py --shape medium  # 6 layers, 6 heads, d 384, block 256

Prints one JSON line per model: tokens/s of a full step (forward, backward, clip, AdamW)
and MFU, model FLOPs over the matmul peak this script measures itself (fp32 and bf16).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, matmul_peak, offline, timed  # noqa: E402

from glassformer import GPT, GPTConfig  # noqa: E402
from glassformer.checkpoint import tensors_to_hf  # noqa: E402

SHAPES = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12),
    "medium": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=8),
}


def flops_per_token(cfg: GPTConfig) -> float:
    """6 N for the weights (forward + backward) plus the attention matmuls (PaLM's accounting)."""
    n = 12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd
    return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def step_fn(model, logits_of, x, y, dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = logits_of(model, x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face model")
    args = parser.parse_args()
    offline()
    shape = SHAPES[args.shape]
    cfg = GPTConfig(vocab_size=65, block_size=shape["block_size"], n_layer=shape["n_layer"], n_head=shape["n_head"],
                    n_embd=shape["n_embd"], dropout=0.0, bias=True, activation="gelu_tanh")
    torch.manual_seed(0)
    ours = GPT(cfg)
    x = torch.randint(0, 65, (shape["batch"], cfg.block_size))
    y = torch.randint(0, 65, (shape["batch"], cfg.block_size))
    peak = matmul_peak(torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    contenders = [("glassformer", ours, lambda m, ids: m(ids))]
    if not args.no_hf:
        import transformers

        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=65, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        hf.load_state_dict(tensors_to_hf(ours), strict=False)  # the same weights (lm_head tied to wte)
        hf.train()
        contenders.append(("hf-gpt2", hf, lambda m, ids: m(ids).logits))
    tokens = x.numel()
    for name, model, logits_of in contenders:
        model.train()
        seconds = timed(step_fn(model, logits_of, x, y, args.dtype), warmup=3, repeat=args.repeat)
        rate = tokens / seconds
        emit({"bench": "train_step", "model": name, "shape": args.shape, "dtype": args.dtype,
              "ms_per_step": round(seconds * 1000, 2), "tokens_per_s": round(rate),
              "mfu": round(rate * flops_per_token(cfg) / peak, 4), "peak_gflops": round(peak / 1e9, 1)})


if __name__ == "__main__":
    main()
