"""Chapter 4's exercises: attention by hand on the articles' example (glassformer.explain.walkthrough).

Every answer is a number the model itself computed, read off the walkthrough of the articles'
first line (builtin_walkthrough(), one head): the learner recomputes it from the steps before it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from glassformer.learn.problems import Exercise


@lru_cache(maxsize=1)
def _walkthrough():
    """The articles' example (seeded: the same model every time), trained once per process."""
    from glassformer.explain.walkthrough import builtin_walkthrough

    return builtin_walkthrough()


def _value(step: str, *index) -> float | np.ndarray:
    values = _walkthrough().step(step).values.astype(np.float64)
    out = values[index]
    return float(out) if np.ndim(out) == 0 else out


def _scaled_score() -> float:
    return _value("enc.0.self.h0.scaled", 4, 6)  # query "game", key "thrones"


def _softmax_row() -> np.ndarray:
    return _value("dec.0.self.h0.probs", 2)  # the decoder's query "win"


def _output_entry() -> float:
    return _value("enc.0.self.h0.out", 0, 0)  # "when", channel 0


def _layer_norm() -> float:
    return _value("enc.0.self.norm", 1, 0)  # "you", channel 0


# Tolerances: the learner works in float64 from the model's float32 values, so a right answer is
# within 1e-6 of the model's; the tolerance is the rounding the question asks for (half a unit of
# the last decimal).
EXERCISES = {
    "attention.scaled_score": Exercise(
        {"en": "In the encoder's self-attention (one head), the scaled score of the query \"game\" with the key "
               "\"thrones\": Q[game] · K[thrones] / √d_k, to two decimals.",
         "zh": "编码器自注意力（单头）中，查询 “game” 与键 “thrones” 的缩放分数 Q[game] · K[thrones] / √d_k，"
               "保留两位小数。"},
        {"en": ["Q is w.step('enc.0.self.h0.q').values, K is w.step('enc.0.self.h0.k').values; "
                "row 4 is \"game\", row 6 is \"thrones\".",
                "Multiply the two rows element by element, add the four products, divide by √4 = 2."],
         "zh": ["Q 是 w.step('enc.0.self.h0.q').values，K 是 w.step('enc.0.self.h0.k').values；"
                "第 4 行是 “game”，第 6 行是 “thrones”。",
                "两行逐个相乘，把四个乘积加起来，再除以 √4 = 2。"]},
        _scaled_score, 0.005),
    "attention.softmax_row": Exercise(
        {"en": "In the decoder's masked self-attention, the attention weights of the query \"win\" (row 2) over "
               "its six keys: six numbers, to three decimals.",
         "zh": "解码器带掩码的自注意力中，查询 “win”（第 2 行）对六个键的注意力权重：六个数，保留三位小数。"},
        {"en": ["Start from row 2 of w.step('dec.0.self.h0.scaled').values; the mask keeps keys 0, 1 and 2 "
                "and sets the other three to −∞.",
                "e^s / Σ e^s over the three kept scores; e^−∞ = 0 for the three masked ones."],
         "zh": ["从 w.step('dec.0.self.h0.scaled').values 的第 2 行开始；掩码保留键 0、1、2，"
                "把另外三个设为 −∞。",
                "对保留的三个分数算 e^s / Σ e^s；被遮住的三个 e^−∞ = 0。"]},
        _softmax_row, 0.0005),
    "attention.output_entry": Exercise(
        {"en": "The encoder's head output for \"when\" in channel 0: the attention weights of \"when\" times the "
               "values' channel 0, summed, to two decimals.",
         "zh": "编码器注意力头对 “when” 的输出的第 0 个通道：“when” 的注意力权重乘以各个值向量的第 0 个通道，"
               "再求和，保留两位小数。"},
        {"en": ["Row 0 of w.step('enc.0.self.h0.probs').values, column 0 of w.step('enc.0.self.h0.v').values.",
                "Σ_k p[when, k] · V[k, 0] over the eight keys."],
         "zh": ["w.step('enc.0.self.h0.probs').values 的第 0 行，w.step('enc.0.self.h0.v').values 的第 0 列。",
                "对八个键求 Σ_k p[when, k] · V[k, 0]。"]},
        _output_entry, 0.005),
    "attention.layer_norm": Exercise(
        {"en": "The encoder's first LayerNorm (after the self-attention's residual sum), row \"you\", channel 0, "
               "to two decimals.",
         "zh": "编码器的第一个层归一化（自注意力的残差相加之后），“you” 那一行的第 0 个通道，保留两位小数。"},
        {"en": ["x is row 1 of w.step('enc.0.self.residual').values; γ and β are the steps "
                "'enc.0.self.norm.weight' and 'enc.0.self.norm.bias'.",
                "μ = mean(x), σ² = mean((x − μ)²), then γ₀ (x₀ − μ) / √(σ² + 1e-5) + β₀."],
         "zh": ["x 是 w.step('enc.0.self.residual').values 的第 1 行；γ 和 β 是步骤 "
                "'enc.0.self.norm.weight' 和 'enc.0.self.norm.bias'。",
                "μ = mean(x)，σ² = mean((x − μ)²)，再算 γ₀ (x₀ − μ) / √(σ² + 1e-5) + β₀。"]},
        _layer_norm, 0.005),
}
