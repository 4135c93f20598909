"""Training-step speed: glassformer vs Hugging Face GPT2LMHeadModel (and nanoGPT), same shape, same weights.

    python bench/train_step.py --shape cpu     # nanoGPT's CPU recipe: 4 layers, 4 heads, d 128, block 64, batch 12
    python bench/train_step.py --shape medium  # 6 layers, 6 heads, d 384, block 256
    python bench/train_step.py --nanogpt ~/src/nanoGPT   # also nanoGPT's model.py from a checkout of it
    python bench/train_step.py --shape gpu --device cuda --dtype bf16 --compile --nanogpt DIR
                                               # nanoGPT's GPU recipe: 12 layers, 12 heads, d 768, block 1024,
                                               # batch 12, vocabulary 50304 (bench/gpu.sh runs it)

Every model is GPT-2's architecture with exact GELU (nanoGPT's choice; HF's activation_function
"gelu"), biases and tied embeddings, loaded with the same weights, and trained by the same
step: forward, cross-entropy, backward, clipping at 1.0, fused AdamW. Their losses on the same
batch must agree (checked). The models take turns, one step each per repeat, so that a drift of
a shared machine lands on all of them. Prints one JSON line per model: the median, min and max
seconds of a step, tokens/s, how many times faster glassformer's step is (glassformer_speedup: this
model's median over ours), and MFU at the median: the model's FLOPs over the matmul peak this
script measures itself (a few seconds), in fp32 and, only where the CPU has bf16 units
(AVX512-BF16 or AMX), in bf16; elsewhere the bf16 figures read "not native". That peak is
torch.mm's best on a square 2048 matmul (field peak_measured_by), not the cores' issue rate: in
fp32 it is MKL's sgemm, which on an AMD CPU takes a generic path (on a Zen 4, 138-190 GFLOP/s
against the 229 its FMA units issue and oneDNN's 202-213; bench/matmul_peak.py measures all
three), so the fp32 MFU reads up to ~1.4x higher than against the hardware. The default,
--shape cpu, takes well under a minute on a 2-core CPU.

On a GPU (--device cuda) every step ends by waiting for the device, the peak is a square 8192
matmul there, and --compile runs each model through torch.compile alike (nanoGPT's GPU recipe
compiles; the compile happens in the untimed warm-up steps).

On CPU the process first sets glibc's allocator as our trainer does (glassformer.training.trainer.
keep_freed_memory), which all three models then share, as time_to_target gives nanoGPT the same
settings: with glibc's defaults every step at 6/6/384 faulted 22,000-27,000 pages in again, and
ran 10-15% slower for all of them alike (a Zen 4, bf16). --allocator-defaults leaves glibc as it is.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NOT_NATIVE, alternate, emit, matmul_peaks, offline, synchronize  # noqa: E402

from glassformer import GPT, GPTConfig  # noqa: E402
from glassformer.fast import accelerate
from glassformer.hf.gpt2 import tensors_to_hf  # noqa: E402
from glassformer.training.trainer import keep_freed_memory  # noqa: E402

SHAPES = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=12, vocab_size=65),
    "medium": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=8, vocab_size=65),
    "gpu": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch=12, vocab_size=50304),  # GPT-2 124M
}

# What the MFU fields divide by (see the docstring): a measured matmul, not the hardware's issue rate.
PEAK_MEASURED_BY = {
    "cpu": "torch.mm, square 2048 (fp32: MKL sgemm, below the cores' FMA issue rate; bench/matmul_peak.py)",
    "cuda": "torch.mm, square 8192 (fp32 at torch's default precision, no TF32)",
}


def flops_per_token(cfg: GPTConfig) -> float:
    """6 N for the weights (forward + backward) plus the attention matmuls (PaLM's accounting)."""
    n = 12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd
    return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def step_fn(model, loss_of, x, y, dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = loss_of(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        synchronize(x.device)  # the step is over when the device is done with it

    return step


def device_name(device: torch.device) -> str:
    """The GPU's name (CUDA), else the device type."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def cross_entropy(logits, y):
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


def nanogpt_model(checkout: str, cfg: GPTConfig, hf_tensors: dict):
    """nanoGPT's GPT from its model.py, same weights (its Linear layers hold GPT-2's Conv1D weights transposed)."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", Path(checkout) / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.GPT(module.GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                                        n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0, bias=True))
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    tensors = {k: v.t() if k.endswith(transposed) else v for k, v in hf_tensors.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # lm_head is tied to wte
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face model")
    parser.add_argument("--nanogpt", metavar="DIR", help="a nanoGPT checkout: also time its model.py")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--compile", action="store_true", help="every model through torch.compile")
    parser.add_argument("--readable", action="store_true",
                        help="also time glassformer's readable model, without the fast path the Trainer swaps in")
    parser.add_argument("--allocator-defaults", action="store_true",
                        help="leave glibc's allocator thresholds as they are (see the docstring)")
    args = parser.parse_args()
    offline()
    allocator = "glibc defaults" if args.allocator_defaults or not keep_freed_memory() else "kept freed memory"
    shape = SHAPES[args.shape]
    vocab = shape["vocab_size"]
    cfg = GPTConfig(vocab_size=vocab, block_size=shape["block_size"], n_layer=shape["n_layer"],
                    n_head=shape["n_head"], n_embd=shape["n_embd"], dropout=0.0, bias=True, activation="gelu")
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = GPT(cfg)
    x = torch.randint(0, vocab, (shape["batch"], cfg.block_size), device=device)
    y = torch.randint(0, vocab, (shape["batch"], cfg.block_size), device=device)
    peaks = matmul_peaks(device)
    readable = copy.deepcopy(ours) if args.readable else None
    accelerate.for_training(ours).install()  # what the Trainer trains with
    contenders = [("glassformer", ours, lambda m, ids, targets: cross_entropy(m(ids), targets))]
    if readable is not None:
        contenders.append(("glassformer-readable", readable, contenders[0][2]))
    if not args.no_hf:
        import transformers

        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=vocab, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
            activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        hf.load_state_dict(tensors_to_hf(ours), strict=False)  # the same weights (lm_head tied to wte)
        contenders.append(("hf-gpt2", hf, lambda m, ids, targets: cross_entropy(m(ids).logits, targets)))
    if args.nanogpt:
        nano = nanogpt_model(args.nanogpt, cfg, tensors_to_hf(ours))
        contenders.append(("nanogpt", nano, lambda m, ids, targets: m(ids, targets)[1]))  # its own cross-entropy
    contenders = [(name, model.to(device), loss_of) for name, model, loss_of in contenders]
    with torch.no_grad():  # the same weights give the same loss, or the comparison means nothing
        losses = {name: loss_of(model, x, y).item() for name, model, loss_of in contenders}
    assert max(losses.values()) - min(losses.values()) < 1e-4, losses
    steps = {}
    for name, model, loss_of in contenders:
        model.train()
        steps[name] = step_fn(torch.compile(model) if args.compile else model, loss_of, x, y, args.dtype)
    timings = alternate(steps, repeat=args.repeat, warmup=3)
    tokens = x.numel()
    ours_s = timings["glassformer"].median
    for name, timing in timings.items():
        rate = tokens / timing.median
        flops = rate * flops_per_token(cfg)
        bf16 = peaks["bf16"]
        emit({"bench": "train_step", "model": name, "shape": args.shape, "dtype": args.dtype,
              "ms_per_step": round(timing.median * 1000, 2), **timing.fields(), "tokens_per_s": round(rate),
              "gflops": round(flops / 1e9, 1), "mfu_vs_fp32_peak": round(flops / peaks["fp32"], 4),
              "mfu_vs_bf16_peak": NOT_NATIVE if bf16 is None else round(flops / bf16, 4),
              "peak_gflops_fp32": round(peaks["fp32"] / 1e9, 1),
              "peak_gflops_bf16": NOT_NATIVE if bf16 is None else round(bf16 / 1e9, 1),
              "peak_measured_by": PEAK_MEASURED_BY[device.type], "device": device_name(device),
              "compiled": args.compile, "allocator": allocator,
              "glassformer_speedup": round(timing.median / ours_s, 3)})  # this model's step / ours, same run


if __name__ == "__main__":
    main()
