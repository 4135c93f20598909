"""glassformer.fast.fused, training's elementwise kernels (fused.c): RMSNorm, SwiGLU's gate and RoPE,
forward and backward, against the readable forms computed in float64 by torch's autograd, within
bounds worked out from float32's rounding; rows read in place through strides (the heads of one
Q/K/V projection, the halves of one gate/up projection), widths that are not multiples of the
vector length, one and several threads; the readable forms wherever a kernel does not apply; a
whole model's gradients with and without the kernels."""

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_gpt, random_ids

from glassformer.data.batches import lm_loss
from glassformer.fast import accelerate, fused
from glassformer.model.layers import RMSNorm
from glassformer.model.positions import RotaryEmbedding, apply_rotary

U = 2.0 ** -24  # float32's unit roundoff


def gamma(n: int) -> float:
    """γ(n) = n u / (1 - n u): the relative error of n float32 roundings in a row (Higham §3.1)."""
    return n * U / (1 - n * U)


@pytest.fixture(autouse=True)
def kernels_or_skip():
    if fused.library() is None:
        pytest.skip(f"no kernels here: {fused.unavailable_reason()}")


@pytest.fixture(params=["one thread", "all threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(1 if request.param == "one thread" else max(2, before))
    yield
    torch.set_num_threads(before)


def through(function, inputs, grad_out_seed=0):
    """(output, gradients of the inputs) of function(*inputs) against a fixed random output gradient."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = function(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed)).to(out.dtype)  # the same in both
    out.backward(g)
    return out.detach(), [t.grad for t in leaves], g


def rms_reference(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


@pytest.mark.parametrize("shape, strided", [((24, 64, 128), False), ((3, 5, 7), False), ((2, 4, 9, 33), True),
                                            ((24, 4, 64, 32), True), ((6, 128), False), ((2, 3, 4, 5, 8), False)])
def test_rms_norm_within_float32_rounding(shape, strided, threads):
    g = torch.Generator().manual_seed(sum(shape))
    d = shape[-1]
    if strided:  # (B, h, T, d) heads of a (B, T, 3 h d) projection, as qk_norm reads them
        B, h, T, _ = shape
        x = torch.randn(B, T, 3 * h * d, generator=g)[..., : h * d].view(B, T, h, d).transpose(1, 2)
    else:
        x = torch.randn(shape, generator=g) * 3
    w = 1 + 0.3 * torch.randn(d, generator=g)
    eps = 1e-6
    y, (gx, gw), gy = through(lambda a, b: fused.rms_norm(a, b, eps), [x, w])
    exact, (ex_gx, ex_gw), _ = through(lambda a, b: rms_reference(a, b, eps), [x.double(), w.double()])
    assert y.dtype == torch.float32 and y.is_contiguous()
    # forward: the mean of d squares (d roundings), sqrt, division, two products: d + 5 roundings
    # relative to |x w s| (s = 1 / rms)
    xd, wd, gyd = x.double(), w.double(), gy.double()
    s = torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps)
    assert ((y.double() - exact).abs() <= gamma(d + 5) * (xd * wd * s).abs()).all()
    # dx = s (dy w - x̂ mean(dy w x̂)): s carries d + 3 roundings, the dot d + 3, each term 3 more;
    # bounded by the magnitudes of both terms with 2d + 12 roundings
    xhat = xd * s
    dot_magnitude = (gyd * wd * xhat).abs().mean(-1, keepdim=True)
    dx_size = s * ((gyd * wd).abs() + xhat.abs() * dot_magnitude)
    assert ((gx.double() - ex_gx).abs() <= gamma(2 * d + 12) * dx_size).all()
    # dw: a sum over every row of dy x̂ (x̂ with d + 4 roundings)
    rows = x.numel() // d
    bound = gamma(rows + d + 6) * (gyd * xhat).abs().reshape(-1, d).sum(0)
    assert ((gw.double() - ex_gw).abs() <= bound).all()


def swiglu_magnitudes(g, u, dh):
    """|silu(g) u| and |dh u σ| (1 + |g|): what the errors of the forward and of dg scale with."""
    sig = torch.sigmoid(g)
    return (g * sig * u).abs(), (dh * u * sig).abs() * (1 + g.abs())


@pytest.mark.parametrize("rows, m, halves", [(1536, 344, False), (5, 13, False), (64, 40, True), (3, 7, True)])
def test_swiglu_within_float32_rounding(rows, m, halves, threads):
    gen = torch.Generator().manual_seed(rows + m)
    if halves:  # gate and up as the two halves of one (rows, 2m) projection
        both = torch.randn(rows, 2 * m, generator=gen) * 6
        g, u = both[:, :m], both[:, m:]
    else:
        g, u = torch.randn(rows, m, generator=gen) * 6, torch.randn(rows, m, generator=gen)
    h, (dg, du), dh = through(fused.swiglu, [g, u])
    exact, (ex_dg, ex_du), _ = through(lambda a, b: F.silu(a) * b, [g.double(), u.double()])
    forward_size, backward_size = swiglu_magnitudes(g.double(), u.double(), dh.double())
    # the exponential within 4 ulp (a degree-6 polynomial on |r| <= ln2/2, whose truncation is under
    # 2^-23 relative, plus its Horner roundings), then a sum, a division and two products: within
    # 10 roundings relative to |silu(g) u|
    assert ((h.double() - exact).abs() <= gamma(10) * forward_size).all()
    du_size = (dh.double() * g.double() * torch.sigmoid(g.double())).abs()
    assert ((du.double() - ex_du).abs() <= gamma(10) * du_size).all()
    # dg = dh u σ (1 + g (1 - σ)): σ within 8 roundings, 1 - σ within 8 absolute, times |g|
    assert ((dg.double() - ex_dg).abs() <= gamma(16) * backward_size).all()


def test_swiglu_at_the_ends_of_the_range():
    g = torch.tensor([[-200.0, -87.5, -30.0, 0.0, 30.0, 90.0, 200.0, float("nan")]])
    u = torch.ones_like(g)
    h = fused.swiglu(g, u)
    exact = F.silu(g.double()) * u.double()
    assert torch.isnan(h[0, -1])  # a NaN comes through, so the trainer sees it
    assert torch.allclose(h[0, :-1].double(), exact[0, :-1], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("B, h, T, d, strided", [(24, 4, 64, 32, True), (2, 3, 5, 8, False), (1, 2, 7, 18, True)])
def test_rotary_within_float32_rounding(B, h, T, d, strided, threads):
    gen = torch.Generator().manual_seed(B * T + d)
    if strided:  # the queries of a (B, T, 3 h d) projection, (B, h, T, d) by view
        x = torch.randn(B, T, 3 * h * d, generator=gen)[..., : h * d].view(B, T, h, d).transpose(1, 2)
    else:
        x = torch.randn(B, h, T, d, generator=gen)
    cos, sin = RotaryEmbedding(d, 64)(torch.arange(T))
    y, (gx,), gy = through(lambda a: fused.rotary(a, cos, sin), [x])
    exact, (ex_gx,), _ = through(lambda a: apply_rotary_readable(a, cos.double(), sin.double()), [x.double()])
    assert y.is_contiguous()
    # each output is a·c ∓ b·s: two products and a sum, 2 roundings of |a c| + |b s|
    half = d // 2
    size = (x.double()[..., :half].abs() + x.double()[..., half:].abs()).repeat(1, 1, 1, 2)
    assert ((y.double() - exact).abs() <= gamma(2) * size).all()
    size = (gy.double()[..., :half].abs() + gy.double()[..., half:].abs()).repeat(1, 1, 1, 2)
    assert ((gx.double() - ex_gx).abs() <= gamma(2) * size).all()


def apply_rotary_readable(x, cos, sin):
    """positions.apply_rotary's torch ops (float64 never takes the kernel)."""
    assert fused.rotary(x, cos, sin) is None
    return apply_rotary(x, cos, sin)


def test_the_readable_forms_where_a_kernel_does_not_apply(monkeypatch):
    x, w = torch.randn(4, 8), torch.ones(8)
    cos, sin = RotaryEmbedding(8, 16)(torch.arange(5))
    assert fused.rms_norm(x.double(), w.double(), 1e-5) is None  # float64
    assert fused.swiglu(x, torch.randn(4, 7)) is None  # shapes differ
    assert fused.rotary(torch.randn(1, 2, 1, 8), cos[:1], sin[:1]) is None  # one position (the decode step)
    assert fused.rotary(torch.randn(1, 2, 5, 8), cos.requires_grad_(), sin) is None  # angles to differentiate
    monkeypatch.setenv("GLASSFORMER_NO_KERNEL", "1")
    assert fused.rms_norm(x, w, 1e-5) is None and fused.swiglu(x, x) is None
    assert "GLASSFORMER_NO_KERNEL" in fused.unavailable_reason()


def test_a_second_derivative_through_a_kernel_raises_rather_than_comes_out_wrong():
    x, w = torch.randn(4, 8, requires_grad=True), torch.ones(8, requires_grad=True)
    (gx,) = torch.autograd.grad(fused.rms_norm(x, w, 1e-5).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        gx.sum().backward()


def test_a_failed_compile_falls_back_to_torch_quietly(monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(fused, "_loaded", {})  # a fresh process's state, restored afterwards
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built before
    monkeypatch.setenv("CC", "false")  # runs, and fails
    norm, x = RMSNorm(8, 1e-5), torch.randn(3, 8, requires_grad=True)
    assert fused.rms_norm(x, norm.weight, 1e-5) is None and "could not build" in fused.unavailable_reason()
    assert torch.equal(norm(x), F.rms_norm(x, (8,), norm.weight, 1e-5))
    assert capfd.readouterr() == ("", "")  # not a word
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


def test_a_model_s_gradients_with_and_without_the_kernels(monkeypatch):
    """Every option the kernels serve at once (RMSNorm, QK-norm, RoPE, SwiGLU, a norm after the
    embedding): the loss and every gradient as with torch's ops, to float32 rounding."""
    torch.manual_seed(0)
    model = build_tiny_gpt(norm="rmsnorm", activation="swiglu", position="rope", qk_norm=True, embed_norm=True,
                           bias=False).train()
    ids = random_ids(4, 17)

    def loss_and_gradients():
        model.zero_grad(set_to_none=True)
        with accelerate.for_training(model):  # the fast modules, as the Trainer swaps them in
            loss = lm_loss(model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}

    calls = {"rms": 0, "swiglu": 0, "rotary": 0}
    for name, function in (("rms", fused.RMSNormFunction), ("swiglu", fused.SwiGLUFunction),
                           ("rotary", fused.RotaryFunction)):
        original = function.forward
        monkeypatch.setattr(function, "forward", staticmethod(
            lambda ctx, *args, _f=original, _n=name: calls.__setitem__(_n, calls[_n] + 1) or _f(ctx, *args)))
    fast_loss, fast = loss_and_gradients()
    assert all(calls.values()), calls  # each kernel took part
    monkeypatch.setenv("GLASSFORMER_NO_KERNEL", "1")
    slow_loss, slow = loss_and_gradients()
    assert abs(fast_loss - slow_loss) <= 1e-5 * abs(slow_loss)
    for name, grad in slow.items():
        scale = grad.abs().max().item()
        assert (fast[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-9, name
