"""Chapter 7's exercises: RMSNorm, one RoPE rotation, grouped-query attention's sharing, and the
attribution's sum (glassformer.model.layers, glassformer.model.positions, glassformer.observe.analysis)."""

from __future__ import annotations

import numpy as np

from glassformer.learn.problems import Exercise

ROW = [1.0, 2.0, 3.0, 6.0]  # the chapter's row, normalised both ways
PAIR, POSITION = [1.0, 2.0], 3  # one channel pair (a head of width 2) and its position
# The chapter's Llama/Qwen-shaped model with random weights (torch.manual_seed(0)), and the
# attribution it reads: the logit of TARGET after IDS.
MODEL = dict(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, d_ff=64, bias=False,
             norm="rmsnorm", position="rope", activation="swiglu", qk_norm=True, tie_weights=False, init_std=0.3)
IDS, TARGET = [3, 14, 15, 9, 26, 5], 7


def _rmsnorm_last() -> float:
    import torch

    from glassformer.model.layers import RMSNorm

    with torch.no_grad():
        return float(RMSNorm(len(ROW))(torch.tensor(ROW))[-1])


def _rope_pair() -> np.ndarray:
    import torch

    from glassformer.model.positions import RotaryEmbedding, apply_rotary

    cos, sin = RotaryEmbedding(2, POSITION + 1)(torch.tensor([POSITION]))  # (1, 1): one pair, one position
    x = torch.tensor(PAIR, dtype=torch.float32).view(1, 1, 1, 2)  # (B, h, T, d)
    return apply_rotary(x, cos, sin).view(2).double().numpy()


def _gqa_head() -> int:
    import torch

    from glassformer.model.layers import repeat_kv

    kv = torch.arange(2.0).view(1, 2, 1, 1)  # K/V head j holds the number j
    return int(repeat_kv(kv, 6 // 2)[0, 4, 0, 0])  # 6 query heads: which K/V does head 4 read?


def modern_model():
    """The chapter's random Llama/Qwen-shaped GPT (seed 0)."""
    import torch

    from glassformer import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(**MODEL)).eval()


def _attribution_sum() -> float:
    from glassformer.observe import analysis

    return analysis.attribute(modern_model(), IDS, TARGET).logit


EXERCISES = {
    "modern.rmsnorm": Exercise(
        {"en": "RMSNorm of the row (1, 2, 3, 6), with its scale γ = 1: the last value, to three decimals.",
         "zh": "对行 (1, 2, 3, 6) 做 RMSNorm（缩放 γ = 1）：最后一个值，保留三位小数。"},
        {"en": ["RMSNorm divides by the root of the mean square: √((1² + 2² + 3² + 6²) / 4).",
                "6 / √12.5; ε = 10⁻⁵ is too small to move the third decimal."],
         "zh": ["RMSNorm 除以均方根：√((1² + 2² + 3² + 6²) / 4)。", "6 / √12.5；ε = 10⁻⁵ 小到影响不了第三位小数。"]},
        _rmsnorm_last, 0.0005),
    "modern.rope_pair": Exercise(
        {"en": "RoPE on a head of width 2 (one pair, frequency 1): the pair (1, 2) at position 3, rotated. "
               "Two numbers, to three decimals.",
         "zh": "宽度为 2 的注意力头（一对通道，频率为 1）上的 RoPE：位置 3 的一对数 (1, 2) 旋转之后是多少？"
               "两个数，保留三位小数。"},
        {"en": ["The angle is position × frequency = 3 radians.",
                "(x₁, x₂) → (x₁ cos 3 − x₂ sin 3, x₁ sin 3 + x₂ cos 3)."],
         "zh": ["旋转角 = 位置 × 频率 = 3 弧度。", "(x₁, x₂) → (x₁ cos 3 − x₂ sin 3, x₁ sin 3 + x₂ cos 3)。"]},
        _rope_pair, 0.0005),
    "modern.gqa_head": Exercise(
        {"en": "Grouped-query attention with 6 query heads and 2 key/value heads (counted from 0): "
               "which key/value head does query head 4 read?",
         "zh": "分组查询注意力，6 个查询头、2 个键/值头（从 0 开始数）：查询头 4 读的是哪个键/值头？"},
        {"en": ["Each K/V head serves 6 / 2 = 3 query heads in a row.", "Query heads 0–2 read K/V 0, 3–5 read K/V 1."],
         "zh": ["每个键/值头依次服务 6 / 2 = 3 个查询头。", "查询头 0–2 读键/值头 0，3–5 读键/值头 1。"]},
        _gqa_head, 0.1),  # an integer: anything within 0.1 of it is it
    "modern.attribution_sum": Exercise(
        {"en": "The attribution of the chapter's random model: add up every head's and feed-forward's "
               "contribution and the remaining terms. What logit do they make?",
         "zh": "本章随机模型的归因：把每个注意力头和前馈网络的贡献、以及剩下的项全部加起来，得到的 logit 是多少？"},
        {"en": ["attr.heads is (layers × heads), attr.ffn one value a layer, attr.remaining a dict of the rest.",
                "attr.heads.sum() + attr.ffn.sum() + sum(attr.remaining.values())."],
         "zh": ["attr.heads 是（层 × 头）的表，attr.ffn 每层一个值，attr.remaining 是其余各项的字典。",
                "attr.heads.sum() + attr.ffn.sum() + sum(attr.remaining.values())。"]},
        _attribution_sum, 1e-3),  # float32 parts of a logit of a few units: their sum is within 1e-5
}
