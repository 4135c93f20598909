"""Weight-only int8 storage (glassformer.fast.quant) against float32 nn.Linear: every output within the
bound that the three roundings allow (a weight to its int8 step, the input and output to
bfloat16), on torch's int8 kernel (widths a multiple of 16) and on the widening fallback;
a quantized model's output head within the same bound of the float32 one. Weight-only bfloat16
storage: the float32 model on the bf16 values, a bf16 checkpoint's values exactly. Both through
`sample --weights`, and the option refused by name when it is not one of the choices."""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import build_tiny_gpt as tiny_gpt
from conftest import random_ids as prompt

from glassformer.fast.quant import Bf16Linear, Int8Linear, int8_error_bound, quantize, quantize_rows
from glassformer.generation.sampling import generate


def wide_linear(n_in, n_out, bias, seed=0):
    torch.manual_seed(seed)
    linear = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        linear.weight.normal_(0, 0.05)
        linear.weight[0] *= 40  # one row far wider than the rest: its own scale keeps the others fine
        linear.weight[1] = 0  # a zero row
    return linear


def test_quantize_rows_steps_are_at_most_half_a_scale():
    w = wide_linear(48, 20, bias=False).weight.detach()
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and (scale > 0).all()
    assert (q.abs().amax(dim=1)[scale != 1] == 127).all()  # each non-zero row uses the full range
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 * (1 + 1e-6)).all()


@pytest.mark.parametrize("n_in, n_out", [(384, 1152), (64, 24), (24, 10), (37, 5)])  # 24 and 37: widened
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T", [4, 20])  # 12 rows: the int8 kernel; 60 rows (a prompt): widened
def test_int8_linear_is_within_the_rounding_bound(n_in, n_out, bias, T):
    linear = wide_linear(n_in, n_out, bias)
    int8 = Int8Linear(linear)
    x = torch.randn(3, T, n_in, generator=torch.Generator().manual_seed(2)) * 3  # (B, T, in)
    with torch.no_grad():
        want, got = linear(x), int8(x)
        bound = int8_error_bound(x, linear.weight, int8.scale)  # (B, T, out)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert ((got - want).abs() <= bound).all(), float(((got - want).abs() / bound).max())
    # Not vacuous: against Σ_j |W_ij x_j| (row 1, all zeros, aside) the weights' step is
    # max|W_i| / 254 over a mean |W_ij| (~2% for Gaussian rows), the bfloat16 roundings ~1.2%.
    magnitudes = nn.functional.linear(x.abs(), linear.weight.detach().abs())[..., 2:]
    assert float((bound[..., 2:] / magnitudes).median()) < 0.05


def test_quantized_models_output_head_is_within_the_bound_of_float32():
    model = tiny_gpt(position="rope", norm="rmsnorm", activation="swiglu", bias=False, d_ff=48)
    x = prompt(2, 9)
    with torch.no_grad():
        hidden = model.final(model.hidden(x))  # (B, T, C): what the head reads
        weight = model.lm_head.weight.detach().clone()  # tied to the token embedding
        want = model.lm_head(hidden)
        quantize(model)
        got = model.lm_head(hidden)
        bound = int8_error_bound(hidden, weight, model.lm_head.scale)
    assert isinstance(model.lm_head, Int8Linear) and model.tok_emb.weight.dtype == torch.float32
    assert ((got - want).abs() <= bound).all()


def test_quantize_swaps_every_linear_and_float_leaves_the_model_alone():
    model = tiny_gpt()
    assert quantize(model, "float") is model and not any(isinstance(m, Int8Linear) for m in model.modules())
    quantize(model, "int8")
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2 * 6 + 1  # q k v o up down per block; head


def test_quantized_model_generates_with_and_without_cache_alike():
    model = quantize(tiny_gpt())
    x = prompt(2, 5)
    assert generate(model, x, 20, temperature=0) == generate(model, x, 20, temperature=0, use_cache=False)


def test_bf16_weights_compute_in_float32_on_the_rounded_values():
    # The modules' forward (many rows, widened) and the decode step (one row, the bf16 kernel):
    # against the float32 model whose matrices hold the bf16 values (the head untied, since only
    # its copy is stored in bfloat16), within float32's summation order.
    model = tiny_gpt(position="rope", norm="rmsnorm", activation="swiglu", d_ff=48)
    rounded = tiny_gpt(position="rope", norm="rmsnorm", activation="swiglu", d_ff=48)
    rounded.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())  # untied
    with torch.no_grad():
        for name, m in rounded.named_modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(model.get_submodule(name).weight.bfloat16().float())
    quantize(model, "bf16")
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, Bf16Linear) for m in model.modules()) == 2 * 7 + 1  # q k v o gate up down per block; head
    assert all(m.weight_bf16.dtype == torch.bfloat16 for m in model.modules() if isinstance(m, Bf16Linear))
    assert model.tok_emb.weight.dtype == torch.float32  # embeddings and norms stay as they are
    x = prompt(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), rounded(x), atol=1e-5, rtol=1e-5)
        # a full model's logits move from float32's by about the weights' rounding, 2^-8 relative
        assert 0 < (model(x) - tiny_gpt(position="rope", norm="rmsnorm", activation="swiglu", d_ff=48)(x)
                    ).abs().max() < 0.05
    assert generate(model, x, 20, temperature=0) == generate(rounded, x, 20, temperature=0)
    assert generate(model, x, 20, temperature=0) == generate(model, x, 20, temperature=0, use_cache=False)


def test_a_bf16_checkpoints_values_come_back_exactly():
    model = tiny_gpt()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):  # as a checkpoint stored in bfloat16 would hold them
                m.weight.copy_(m.weight.bfloat16().float())
        weights = {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize(model, "bf16")
    for name, weight in weights.items():
        assert torch.equal(model.get_submodule(name).weight_bf16.float(), weight)


def test_unknown_weight_option_is_refused_by_name():
    with pytest.raises(ValueError, match="weights must be one of float, int8, bf16; got 'int4'"):
        quantize(tiny_gpt(), "int4")


def test_sample_with_stored_weights_writes_what_the_stored_model_generates(tmp_path, capsys):
    from glassformer.checkpoint import save
    from glassformer.cli import main
    from glassformer.data.tokenizers import CharTokenizer

    tok = CharTokenizer.train("the cat sat on the mat.\n")
    model = tiny_gpt(vocab_size=tok.vocab_size)
    save(model, tmp_path / "m", tokenizer=tok)
    args = ["sample", "--model", str(tmp_path / "m"), "--prompt", "the ", "--max-new-tokens", "12",
            "--temperature", "0"]
    for weights in ("int8", "bf16"):
        assert main(args + ["--weights", weights]) == 0
        stored = quantize(copy.deepcopy(model), weights)
        expected = tok.decode(generate(stored, tok.encode("the "), 12, temperature=0)[0])
        assert capsys.readouterr().out == expected + "\n"
    with pytest.raises(SystemExit):  # argparse: one line naming the option and its choices
        main(args + ["--weights", "int4"])
    err = capsys.readouterr().err
    assert "--weights" in err and "invalid choice: 'int4'" in err
