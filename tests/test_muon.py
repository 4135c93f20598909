"""Muon (glassformer.training.muon): Newton–Schulz against the SVD's polar factor, one update against a NumPy
re-computation, the AdamW groups against torch.optim.AdamW, and the groups make_optimizer builds."""

import numpy as np
import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.training.muon import COEFFICIENTS, Muon, newton_schulz, update_scale
from glassformer.training.trainer import TrainConfig, make_optimizer


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (64, 64)])
def test_newton_schulz_keeps_the_singular_vectors_and_brings_the_values_near_one(shape):
    torch.manual_seed(0)
    g = torch.randn(shape, dtype=torch.float64)
    u, s, vt = torch.linalg.svd(g, full_matrices=False)
    o = newton_schulz(g.float(), steps=5).double()
    # In G's singular basis the result is diagonal: U' O V' = diag(s'), off-diagonal only float32 rounding
    # (5 steps of products of unit-sized matrices: well under 1e-4 of the diagonal's size).
    inner = u.T @ o @ vt.T
    diag = inner.diagonal()
    assert (inner - torch.diag(diag)).abs().max() < 1e-4
    # The quintic is tuned for speed, not convergence. Its slope at 0 is a = 3.4445, so a singular value
    # σ/‖G‖_F grows at most 3.4445x per step, about 490x in 5: those above 1/200 of ‖G‖_F reach the
    # band it oscillates in around 1 (about 0.68 to 1.2); smaller ones (a square Gaussian matrix has
    # some) are raised but not all the way. None changes sign or exceeds the band.
    lifted = s / s.norm() > 1 / 200
    assert 0.6 < diag[lifted].min() and diag.max() < 1.25 and diag.min() > 0
    # So it points where the polar factor U Vᵀ points: with singular values within [0.6, 1.25] the cosine
    # similarity is at least 2√(0.6·1.25)/1.85 = 0.936; a few unlifted ones take little from it.
    polar = u @ vt
    assert (o * polar).sum() / (o.norm() * polar.norm()) > 0.93


def test_newton_schulz_in_bfloat16_agrees_with_float32():
    torch.manual_seed(1)
    g = torch.randn(48, 80)
    low, high = newton_schulz(g, dtype=torch.bfloat16).float(), newton_schulz(g)
    # bfloat16 keeps 8 bits of mantissa (relative 4e-3 per value); 5 steps compound it to about 1e-2 relative.
    assert (low - high).norm() / high.norm() < 5e-2


def numpy_newton_schulz(g: np.ndarray, steps: int) -> np.ndarray:
    """The quintic iteration written again, in float64."""
    a, b, c = COEFFICIENTS
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def test_two_muon_steps_match_a_numpy_recomputation():
    torch.manual_seed(2)
    w = torch.nn.Parameter(torch.randn(24, 8))
    w0 = w.detach().double().numpy().copy()
    grads = [torch.randn(24, 8), torch.randn(24, 8)]
    lr, ratio, wd = 1e-3, 20.0, 0.1
    opt = Muon([{"params": [w], "muon": True}], lr=lr, lr_ratio=ratio, momentum=0.95, momentum_start=0.85,
               momentum_warmup=2, ns_steps=3, weight_decay=wd, ns_dtype=torch.float64)
    expected, buf = w0, np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        w.grad = g.clone()
        opt.step()
        mu = 0.85 + min(t / 2, 1.0) * (0.95 - 0.85)  # momentum warmup, by hand
        gn = g.double().numpy()
        buf = mu * buf + gn
        update = numpy_newton_schulz(gn + mu * buf, 3)
        step = lr * ratio
        expected = expected * (1 - step * wd) - step * np.sqrt(24 / 8) * update
    assert update_scale(w.shape) == pytest.approx(np.sqrt(3))
    np.testing.assert_allclose(w.detach().double().numpy(), expected, atol=1e-5)  # float32 weights


def test_newton_schulz_runs_in_bfloat16_only_where_the_hardware_has_it():
    from glassformer.base.device import native_bf16
    from glassformer.training.muon import newton_schulz_dtype

    cpu = torch.device("cpu")
    assert newton_schulz_dtype(cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)


def test_adamw_groups_step_as_torch_adamw():
    torch.manual_seed(3)
    a = [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = Muon([{"params": [a[0]], "muon": False, "weight_decay": 0.1},
                 {"params": [a[1]], "muon": False, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.99), fused=True)
    ref = torch.optim.AdamW([{"params": [b[0]], "weight_decay": 0.1}, {"params": [b[1]], "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.99))
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_make_optimizer_gives_muon_the_blocks_matrices_alone():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=False, norm="rmsnorm",
                          position="rope", activation="swiglu", tie_weights=False))
    opt = make_optimizer(model, TrainConfig(optimizer="muon", learning_rate=4e-3, muon_lr=0.04), torch.device("cpu"))
    hidden, matrices, vectors = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    # per block: W_Q, W_K, W_V, W_O, gate, up, down
    assert sorted(names[id(p)] for p in hidden["params"]) == sorted(
        f"blocks.{i}.{m}.weight" for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "ffn.gate",
                  "ffn.up", "ffn.down"))
    assert sorted(names[id(p)] for p in matrices["params"]) == ["lm_head.weight", "tok_emb.weight"]
    assert all(p.dim() == 1 for p in vectors["params"]) and vectors["weight_decay"] == 0.0
    assert hidden["muon"] and not matrices["muon"] and hidden["lr_ratio"] == pytest.approx(10.0)


def test_bad_optimizer_settings_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="optimizer must be one of adamw, muon"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="muon_momentum must be in"):
        TrainConfig(muon_momentum=1.0)
    with pytest.raises(ValueError, match="muon_ns_steps must be between"):
        TrainConfig(muon_ns_steps=0)
    with pytest.raises(ValueError, match="not 2-D"):
        Muon([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}])


def test_a_stack_of_matrices_is_orthogonalised_matrix_by_matrix():
    torch.manual_seed(4)
    g = torch.randn(3, 20, 12)
    # each matrix scaled by its own norm: the stack's result is the matrices' results, stacked
    torch.testing.assert_close(newton_schulz(g), torch.stack([newton_schulz(m) for m in g]), rtol=1e-6, atol=1e-6)
