"""Muon for the hidden matrices, AdamW for the rest, in one optimizer (modded-nanogpt's recipe).

Muon (Keller Jordan, 2024) replaces a matrix's update by the nearest semi-orthogonal matrix to
its momentum: with the SVD M = U S Vᵀ, the update is U Vᵀ, every direction of the update moved
by the same amount. Newton–Schulz iterations approximate U Vᵀ with matmuls alone.

One `torch.optim.Optimizer` holds both kinds of parameter group, so the trainer sets one
learning rate per step for all of them (the schedule) and resume.pt saves one state:
  {"muon": True}   the blocks' 2-D matrices (W_Q, W_K, W_V, W_O, the feed-forward's);
                   each is orthogonalised on its own, so Q, K and V are separate blocks.
  {"muon": False}  embeddings, output head, norm gains: AdamW (torch's own update).
A Muon group's step is `lr * lr_ratio`: the schedule's rate times Muon's peak over AdamW's.

torch.optim.Muon always orthogonalises in bfloat16; here the dtype is chosen per device by
measurement (`newton_schulz_dtype`), float32 on a CPU.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.adamw import adamw

from glassformer.base.device import native_bf16
from glassformer.model.layers import Block

# The quintic iteration's coefficients (Keller Jordan's): they push small singular values up
# fast, leaving every singular value in about [0.7, 1.2] after 5 steps rather than exactly 1.
COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32,
                  coefficients: tuple[float, float, float] = COEFFICIENTS, eps: float = 1e-7) -> torch.Tensor:
    """A matrix (m, n) -> about U Vᵀ of its SVD U S Vᵀ: the same singular directions, singular values near 1.

    X is scaled by its Frobenius norm so that every singular value is at most 1, then each step
    maps X to a X + b (X Xᵀ) X + c (X Xᵀ)² X, which moves every singular value σ to
    a σ + b σ³ + c σ⁵ and leaves the singular vectors alone.

    Args:
        g: the matrix (m, n), or a stack of them (..., m, n), each orthogonalised on its own.
        steps: Newton–Schulz iterations.
        dtype: what the matmuls run in.
        coefficients: (a, b, c).
        eps: keeps a zero matrix from dividing by zero.

    Returns:
        The orthogonalised matrix, in `dtype`, of g's shape.
    """
    a, b, c = coefficients
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # work with the short side: X Xᵀ is (min, min)
        x = x.mT
    shape = x.shape
    x = x.reshape(-1, *shape[-2:])  # (k, m, n): one matrix or a stack, for the batched matmuls below
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # each matrix by its own Frobenius norm
    for _ in range(steps):
        gram = x @ x.mT  # (k, m, m)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b XXᵀ + c (XXᵀ)², scalars inside the matmul
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b XXᵀ + c (XXᵀ)²) X
    x = x.reshape(shape)
    return x.mT if tall else x


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """The dtype Newton–Schulz runs in: bfloat16 where the hardware multiplies it natively (CUDA
    GPUs with bf16, CPUs with AVX512-BF16 or AMX), float32 elsewhere, where bfloat16 is emulated
    and hundreds of times slower (torch.optim.Muon always uses bfloat16).

    Measured on a 2-core AMD EPYC with AVX512-BF16, Newton–Schulz for the 14 matrices of
    shakespeare-char-speedrun's two-layer form, 5 steps, as two stacks (8 of 128x128; 6 of 128x344, the tall
    ones transposed): 6.1 ms in bfloat16, 10.3 ms in float32. In one earlier run, 4.9 ms against
    6.8 ms for three stacks with the scalars multiplied outside the matmuls (and, before that,
    10.8 ms for torch.optim.Muon, one matrix at a time in bfloat16).
    """
    return torch.bfloat16 if native_bf16(device) else torch.float32


def update_scale(shape: torch.Size) -> float:
    """√max(1, rows/cols): a tall matrix's orthogonal update has smaller entries (its RMS is
    √(1/rows) per column); this gives it the same per-entry size as a square one's."""
    return math.sqrt(max(1.0, shape[0] / shape[1]))


class Muon(torch.optim.Optimizer):
    """Muon on groups marked {"muon": True}, AdamW on the others.

    Args:
        groups: parameter groups, each a dict with "params" and "muon" (bool), optionally
            "weight_decay".
        lr: the learning rate (the trainer sets it per step; AdamW groups use it as it is).
        lr_ratio: Muon's learning rate over AdamW's.
        momentum: Muon's momentum (Nesterov).
        momentum_start: Muon's momentum at step 1, rising linearly to `momentum` over
            `momentum_warmup` steps (0: no warmup).
        ns_steps: Newton–Schulz iterations per update.
        betas, eps: AdamW's.
        weight_decay: decoupled, for both kinds (scaled by each group's learning rate).
        fused: AdamW's fused kernel (CPU and CUDA).
        ns_dtype: what Newton–Schulz runs in; None: `newton_schulz_dtype` of the parameters' device.
    """

    def __init__(self, groups: list[dict], lr: float = 1e-3, lr_ratio: float = 10.0, momentum: float = 0.95,
                 momentum_start: float = 0.85, momentum_warmup: int = 0, ns_steps: int = 5,
                 betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8, weight_decay: float = 0.0,
                 fused: bool = False, ns_dtype: torch.dtype | None = None):
        defaults = dict(lr=lr, lr_ratio=lr_ratio, momentum=momentum, momentum_start=momentum_start,
                        momentum_warmup=momentum_warmup, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay, fused=fused, muon=False)
        super().__init__(groups, defaults)
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon orthogonalises matrices: a group marked muon holds a parameter that is not 2-D")

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["muon"] else self._adamw)(group, params)
        return loss

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        lr = group["lr"] * group["lr_ratio"]
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["momentum_buffer"] = torch.zeros_like(p)
        torch._foreach_add_([s["step"] for s in states], 1.0)
        mus = [self.momentum(group, float(s["step"])) for s in states]
        grads, bufs = [p.grad for p in params], [s["momentum_buffer"] for s in states]
        torch._foreach_mul_(bufs, mus)
        torch._foreach_add_(bufs, grads)  # B = μ B + g
        nesterov = torch._foreach_mul(bufs, mus)
        torch._foreach_add_(nesterov, grads)  # g + μ B
        # The matrices of one shape, tall ones transposed to join the wide ones of their shape,
        # orthogonalised as one stack: (k, short side, long side).
        by_shape: dict[torch.Size, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for p, n in zip(params, nesterov):
            tall = p.size(0) > p.size(1)
            by_shape.setdefault(n.mT.shape if tall else n.shape, []).append((p, n.mT if tall else n))
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for pairs in by_shape.values():
            dtype = self.ns_dtype or newton_schulz_dtype(pairs[0][0].device)
            updates = newton_schulz(torch.stack([n for _, n in pairs]), group["ns_steps"], dtype)  # (k, m, n)
            for (p, _), update in zip(pairs, updates):
                p.add_(update.mT if p.size(0) > p.size(1) else update, alpha=-lr * update_scale(p.shape))

    @staticmethod
    def momentum(group: dict, step: float) -> float:
        """Muon's momentum at `step` (1-based): momentum_start rising linearly to momentum over
        momentum_warmup steps, or momentum throughout when there is no warmup."""
        warmup = group["momentum_warmup"]
        if warmup <= 0:
            return group["momentum"]
        return group["momentum_start"] + min(step / warmup, 1.0) * (group["momentum"] - group["momentum_start"])

    def _adamw(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = group["betas"]
        adamw(
            params, [p.grad for p in params], [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["exp_avg_sq"] for p in params], [], [self.state[p]["step"] for p in params],
            fused=group["fused"] or None, foreach=None if group["fused"] else False, amsgrad=False, beta1=beta1,
            beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


def muon_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The model's trainable parameters in three groups: the Transformer layers' (layers.Block) matrices
    (Muon), the other matrices (embeddings, output head: AdamW with weight decay), vectors (norm gains,
    biases: AdamW, no decay)."""
    hidden = {id(p) for block in model.modules() if isinstance(block, Block) for p in block.parameters()
              if p.dim() == 2}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in hidden], "muon": True, "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in hidden and p.dim() >= 2], "muon": False,
         "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "muon": False, "weight_decay": 0.0},
    ]
