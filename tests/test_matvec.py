"""glassformer.fast.matvec, the C kernels of the decode step. One row times a float32 matrix: against a
float64 product within the rounding a float32 sum may make, for widths that are and are not
multiples of the vector length, one and several threads, with and without bias; F.linear wherever it
does not apply (disabled, no compiler, a failed compile, autograd); greedy generation with and
without it; the step's weights packed on huge pages. The same for int8 weights with per-row scales,
and for bfloat16 weights (float32 arithmetic on their exact values). One query's attention: against
`attention` in float64 within float32 rounding, reading a cache's strided buffers; declined where it
does not apply."""

import ctypes
import gc
import mmap
import os
import subprocess
import weakref

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_gpt, random_ids

from glassformer.fast import accelerate, decode_step, matvec, quant
from glassformer.fast.quant import quantize_rows
from glassformer.generation.sampling import generate
from glassformer.model.layers import attention

EPS = 2.0 ** -24  # float32's unit roundoff


def kernel_or_skip():
    function = matvec.kernel()
    if function is None:
        pytest.skip(f"no kernel here: {matvec.unavailable_reason()}")
    return function


def rounding_bound(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """|computed - exact| for x Wᵀ + b summed in float32 in any order: at most γ(n+1) Σ_j |w_ij x_j| (+ |b_i|),
    γ(n) = n u / (1 - n u), u = 2^-24 (Higham, Accuracy and Stability, §3.1; the bias is one more term)."""
    n = x.size(-1) + 1
    gamma = n * EPS / (1 - n * EPS)
    magnitudes = F.linear(x.double().abs(), weight.double().abs())
    return gamma * (magnitudes + (bias.double().abs() if bias is not None else 0))


@pytest.mark.parametrize("out, width", [(1, 384), (65, 100), (3, 7), (65, 16), (257, 300), (384, 1536)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_within_float32_rounding(out, width, with_bias):
    kernel_or_skip()
    g = torch.Generator().manual_seed(out * width)
    weight, x = torch.randn(out, width, generator=g), torch.randn(1, width, generator=g)
    bias = torch.randn(out, generator=g) if with_bias else None
    exact = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    threads = torch.get_num_threads()
    try:
        for n in {1, threads}:  # 257 x 300 and up are split across the threads
            torch.set_num_threads(n)
            with torch.inference_mode():
                got = matvec.linear(x, weight, bias)
            assert got.shape == (1, out) and got.dtype == torch.float32
            assert ((got.double() - exact).abs() <= rounding_bound(x, weight, bias)).all()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("out, width", [(1, 384), (65, 100), (3, 7), (65, 16), (257, 300), (1152, 384)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_int8_kernel_within_float32_rounding(out, width, with_bias):
    kernel_or_skip()
    g = torch.Generator().manual_seed(out + width)
    q, scale = quantize_rows(torch.randn(out, width, generator=g))
    x, bias = torch.randn(1, width, generator=g), torch.randn(out, generator=g) if with_bias else None
    y = matvec.bind_int8(q, scale, bias)(x)
    wide = scale.double()[:, None] * q.double()  # the weights int8 stands for, exactly
    exact = F.linear(x.double(), wide, None if bias is None else bias.double())
    # width products (each rounded once: an int8 times a float32 needs up to 31 bits), their sum,
    # the scale and the bias: at most width + 3 roundings on any term (Higham §3.1)
    n = width + 3
    bound = n * EPS / (1 - n * EPS) * (F.linear(x.double().abs(), wide.abs()) + (0 if bias is None else bias.abs()))
    assert y.shape == (1, out) and ((y.double() - exact).abs() <= bound).all()
    assert torch.equal(quant.int8_linear(x, q, scale, bias), y)  # one float32 row: int8_linear takes the kernel


def test_int8_kernel_declines_what_it_does_not_read():
    kernel_or_skip()
    q, scale = quantize_rows(torch.randn(8, 16))
    assert matvec.bind_int8(q, scale) is not None
    assert matvec.bind_int8(q.t(), scale) is None  # not contiguous
    assert matvec.bind_int8(q, scale.bfloat16()) is None and matvec.bind_int8(q, scale[:4]) is None
    assert matvec.bind_int8(q, scale, torch.zeros(8, dtype=torch.float64)) is None


@pytest.mark.parametrize("out, width", [(1, 384), (65, 100), (3, 7), (65, 16), (257, 300), (1152, 384), (512, 2000)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bf16_kernel_is_float32_arithmetic_on_the_bf16_values(out, width, with_bias):
    kernel_or_skip()
    g = torch.Generator().manual_seed(out * 7 + width)
    weight = torch.randn(out, width, generator=g).bfloat16()
    x, bias = torch.randn(1, width, generator=g), torch.randn(out, generator=g) if with_bias else None
    wide = weight.double()  # the values bfloat16 holds, exactly
    exact = F.linear(x.double(), wide, None if bias is None else bias.double())
    threads = torch.get_num_threads()
    try:
        for n in {1, threads}:  # 257 x 300 and up are split across the threads
            torch.set_num_threads(n)
            y = matvec.bind_bf16(weight, bias)(x)
            # a bf16 value times a float32 needs at most 32 bits: each product and the sum round as
            # float32's matvec does, so the same bound (widening adds no rounding at all)
            assert y.shape == (1, out) and y.dtype == torch.float32
            assert ((y.double() - exact).abs() <= rounding_bound(x, wide, bias)).all()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(quant.bf16_linear(x, weight, bias), y)  # one float32 row: bf16_linear takes the kernel
    with torch.inference_mode():  # more rows: widened, the same values in float32 (summed by torch)
        rows = torch.randn(3, width, generator=g)
        got = quant.bf16_linear(rows, weight, bias)
        want = F.linear(rows.double(), wide, None if bias is None else bias.double())
        assert got.dtype == torch.float32 and ((got.double() - want).abs() <= rounding_bound(rows, wide, bias)).all()


def test_bf16_kernel_declines_what_it_does_not_read():
    kernel_or_skip()
    weight = torch.randn(8, 16).bfloat16()
    assert matvec.bind_bf16(weight) is not None
    assert matvec.bind_bf16(weight.t()) is None  # not contiguous
    assert matvec.bind_bf16(weight.float()) is None and matvec.bind_bf16(weight.half()) is None
    assert matvec.bind_bf16(weight, torch.zeros(8, dtype=torch.float64)) is None
    assert matvec.bind_bf16(weight, torch.zeros(4)) is None
    bias = torch.zeros(8, requires_grad=True)  # autograd would follow the bias: not the kernel
    assert quant.bf16_linear(torch.randn(1, 16), weight, bias).grad_fn is not None


def test_one_openmp_runtime_and_f_linear_where_it_does_not_apply():
    kernel_or_skip()
    assert len(matvec.openmp_runtimes()) <= 1  # the kernel's libgomp is torch's: one thread pool
    weight, x = torch.randn(5, 8, requires_grad=True), torch.randn(1, 8)
    assert matvec.linear(x, weight).grad_fn is not None  # autograd follows F.linear
    with torch.inference_mode():
        for args in [(torch.randn(2, 8), weight), (x.double(), weight.double()), (torch.randn(8, 2).t()[:1], weight)]:
            assert torch.equal(matvec.linear(*args), F.linear(*args))  # two rows, float64, non-contiguous
        assert matvec.bind(weight.detach().t()) is None  # a transposed (non-contiguous) weight


def test_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv(matvec.DISABLE, "1")
    assert matvec.kernel() is None and matvec.bind(torch.randn(3, 4)) is None
    assert matvec.DISABLE in matvec.unavailable_reason()
    x, weight = torch.randn(1, 4), torch.randn(3, 4)
    assert torch.equal(matvec.linear(x, weight), F.linear(x, weight))


@pytest.mark.parametrize("cc", ["false", "missing"])
def test_a_failed_compile_falls_back_quietly(cc, monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(matvec, "_loaded", {})  # a fresh process's state, restored afterwards
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built before
    if cc == "missing":
        monkeypatch.setattr(matvec, "compiler", lambda: None)
    else:
        monkeypatch.setenv("CC", "false")  # runs, and fails
    x, weight = torch.randn(1, 4), torch.randn(3, 4)
    assert torch.equal(matvec.linear(x, weight), F.linear(x, weight))
    assert matvec.kernel() is None and matvec.unavailable_reason()
    assert capfd.readouterr() == ("", "")  # not a word
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


def test_builds_once_per_source_compiler_and_cpu(monkeypatch, tmp_path):
    kernel_or_skip()  # there is a compiler
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cc = matvec.compiler()
    first = matvec.build(cc)
    assert matvec.build(cc) == first and os.listdir(first.parent) == [first.name]  # cached, no temporary files
    monkeypatch.setattr(matvec, "cpu_flags", lambda: "another cpu")
    assert matvec.build(cc) != first
    assert ctypes.CDLL(str(first)).glassformer_matvec_f32 is not None


def test_greedy_tokens_with_and_without_the_kernel(monkeypatch):
    kernel_or_skip()
    model = build_tiny_gpt(n_embd=48, n_head=3, block_size=40)
    assert accelerate.decode_step(model, 1).lm_head.matvec is not None  # one row in float32: the kernel
    ids = random_ids(1, 6)
    with_kernel = generate(model, ids, 30, temperature=0.0)
    monkeypatch.setenv(matvec.DISABLE, "1")
    step = accelerate.decode_step(model, 1)
    assert step.lm_head.matvec is None and step.layers[0].core.kernel is None and matvec.attention() is None
    assert generate(model, ids, 30, temperature=0.0) == with_kernel


def test_a_step_packs_its_kernel_weights_in_call_order_on_huge_pages(monkeypatch):
    kernel_or_skip()
    model = build_tiny_gpt(n_embd=48, n_head=3, block_size=40)
    maps = accelerate.decode_step(model, 1).linears()
    originals = [model.lm_head.weight] + [getattr(model.blocks[0].ffn, name).weight for name in ("up", "down")]
    assert torch.equal(maps[-1].weight, originals[0]) and torch.equal(maps[2].weight, originals[1])
    assert all(m.weight.data_ptr() != w.data_ptr() for m in maps for w in originals)  # copies, not the model's
    starts = [m.weight.data_ptr() for m in maps]
    ends = [m.weight.data_ptr() + m.weight.numel() * 4 for m in maps]
    assert all(end <= start < end + 64 for end, start in zip(ends, starts[1:]))  # one after another, 64-B aligned
    if matvec.huge_page_size():  # where the OS has transparent huge pages, the buffer starts on one
        assert starts[0] % matvec.huge_page_size() == 0
    monkeypatch.setattr(decode_step, "PACK_BYTES", 4 * 48 * 48)  # weights above the size that pays: no copy
    assert accelerate.decode_step(model, 1).lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()
    monkeypatch.undo()
    monkeypatch.setattr(decode_step, "memory_bytes", lambda free=False: 4 * 48 * 48)  # too little free: no copy
    assert accelerate.decode_step(model, 1).lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()


def test_a_step_is_freed_when_dropped_not_at_the_next_garbage_collection():
    model = build_tiny_gpt(n_embd=48, n_head=3, block_size=40)
    gc.disable()  # nothing but reference counts: a step in a reference cycle would hold its packed weights
    try:
        step = accelerate.decode_step(model, 1)
        parts = [weakref.ref(step), weakref.ref(step.layers[0]), weakref.ref(step.layers[0].up)]
        del step
        assert all(part() is None for part in parts)
    finally:
        gc.enable()


def test_huge_page_buffer_holds_what_is_written_and_is_reused_once_free():
    buffer = matvec.huge_page_buffer(3 * 1024 * 1024 + 5)  # more than one huge page, not a whole number
    buffer.copy_(torch.arange(buffer.numel(), dtype=torch.float32))
    assert buffer.dtype == torch.float32 and buffer[-1] == buffer.numel() - 1 and buffer.is_contiguous()
    page, advice = matvec.huge_page_size(), getattr(mmap, "MADV_HUGEPAGE", None)
    if not page or advice is None:
        return
    pool = matvec.HugePages()  # a pool of its own: what earlier tests freed in the shared one plays no part
    first = pool.buffer(3 * 1024 * 1024, page, advice)
    view, address = first[10:20], first.data_ptr()
    del first
    other = pool.buffer(1000, page, advice)
    assert other.data_ptr() != address  # a view still holds the first: not reused
    del view
    with torch.inference_mode():
        again = pool.buffer(1000, page, advice)
    assert again.data_ptr() == address and not again.is_inference()  # free again: reused, and writable anywhere


@pytest.mark.parametrize("B, h, L, d, loud", [(1, 6, 200, 64, 1.0), (3, 2, 1, 5, 1.0), (2, 4, 37, 12, 30.0),
                                               (1, 3, 700, 20, 3.0)])
def test_attention_kernel_within_float32_rounding_of_attention(B, h, L, d, loud):
    kernel_or_skip()
    g = torch.Generator().manual_seed(L * d)
    q = torch.randn(B, h, 1, d, generator=g) * loud  # loud: scores far above 1, where exp needs the max taken out
    cache = torch.randn(2, B, h, L + 9, d, generator=g)  # the cache's buffers: more positions than filled
    k, v = cache[0, :, :, :L], cache[1, :, :, :L]
    out = matvec.attention()(q, k, v)
    exact, probs = attention(q.double(), k.double(), v.double())
    # Each score q·k/√d carries float32 rounding up to γ(d+1) Σ|q_i k_i|/√d (Higham §3.1), which exp
    # turns into that relative error in a weight, on top of a few u from exp itself; the weighted
    # sums over L positions add γ(L+1) of Σ p|v|. The output, a weighted mean of v, moves by at most
    # twice the largest relative weight error times max|v|, plus those sums' rounding.
    gamma = lambda n: n * EPS / (1 - n * EPS)  # noqa: E731
    score_error = gamma(d + 1) * (q.double().abs() @ k.double().abs().transpose(-1, -2)).amax() / d ** 0.5
    bound = (2 * (score_error + 4 * EPS) + 2 * gamma(L + 1)) * v.abs().amax()
    assert out.shape == (B, h, 1, d) and (out.double() - exact).abs().max() <= bound
    assert loud < 30 or probs.amax() > 0.5  # the loudest case does concentrate the weights


def test_attention_kernel_declines_what_it_does_not_do():
    kernel_or_skip()
    q, k = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 5, 8)
    attend = matvec.attention()
    assert attend(q, k, k) is not None
    assert attend(torch.randn(1, 2, 3, 8), k, k) is None  # more than one query
    assert attend(q.bfloat16(), k.bfloat16(), k.bfloat16()) is None
    assert attend(q, k.transpose(-1, -2).contiguous().transpose(-1, -2), k) is None  # d not contiguous
    assert attend(q, k, torch.randn(1, 2, 5, 4)) is None  # values of another width
    assert attend(q.requires_grad_(), k, k) is None  # autograd would record the op


def test_the_ctypes_structures_lay_out_as_the_c_ones(tmp_path):
    """decode_step's and fused's ctypes views of matvec.c's and fused.c's structures: the same size,
    and each field at the same offset, as the C compiler lays them out (a program printing them)."""
    from glassformer.fast import fused

    cc = matvec.compiler()
    if cc is None:
        pytest.skip("no C compiler")
    views = {"gf_matrix": decode_step.Matrix, "gf_norm": decode_step.Norm, "gf_layer": decode_step.Layer,
             "gf_model": decode_step.Model}
    c_names = {"inputs": "in"}  # a Python keyword in C: the one field named differently
    lines = []
    for struct, view in views.items():
        lines.append(f'printf("{struct} %zu\\n", sizeof({struct}));')
        for name, _ in view._fields_:
            lines.append(f'printf("{struct}.{name} %zu\\n", offsetof({struct}, {c_names.get(name, name)}));')
    program = tmp_path / "layout.c"
    rows = [f'printf("gf_rows.{name} %zu\\n", offsetof(gf_rows, {name}));' for name, _ in fused.Rows._fields_]
    head = "#include <stddef.h>\n#include <stdio.h>\n"
    program.write_text(f'{head}#include "{matvec.SOURCE}"\nint main(void) {{ {" ".join(lines)} return 0; }}\n')
    rows_program = tmp_path / "rows.c"
    rows_program.write_text(f'{head}#include "{fused.SOURCE}"\nint main(void) {{ '
                            f'printf("gf_rows %zu\\n", sizeof(gf_rows)); {" ".join(rows)} return 0; }}\n')
    seen = {}
    for source in (program, rows_program):
        binary = tmp_path / source.stem
        subprocess.run([cc, "-march=native", "-fopenmp", str(source), "-o", str(binary), "-lm"], check=True,
                       capture_output=True, timeout=300)
        for line in subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
            key, value = line.split()
            seen[key] = int(value)
    for struct, view in {**views, "gf_rows": fused.Rows}.items():
        assert seen[struct] == ctypes.sizeof(view), struct
        for name, _ in view._fields_:
            assert seen[f"{struct}.{name}"] == getattr(view, name).offset, (struct, name)
