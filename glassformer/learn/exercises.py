"""Exercises with answers the library computes, and `check`, which compares a learner's answer.

Each exercise names the library function that computes its answer (never a typed-in number),
the tolerance a hand calculation deserves, and hints in English and Chinese. `check` prints one
line in the reader's language (both languages where a chapter's page is built from one run:
build.LANG_MIME) and returns whether the answer is right; an answer of None prints the question
and the first hint, so a chapter's exercise cell runs before the learner fills it in.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LANG_MIME = "application/vnd.glassformer.lang+json"  # as build.LANG_MIME (build needs nbclient; this does not)
_language = {"lang": None}


def language(lang: str | None = None) -> str:
    """The language `check` and `show` write in: set it with language("zh"); by default the
    environment's GLASSFORMER_LANG, else English."""
    if lang is not None:
        if lang not in ("en", "zh"):
            raise ValueError(f"unknown language {lang!r}; choose en or zh")
        _language["lang"] = lang
    chosen = _language["lang"] or os.environ.get("GLASSFORMER_LANG")
    return chosen if chosen in ("en", "zh") else "en"


def show(en: str, zh: str) -> None:
    """One line in two languages: a notebook shows the reader's; a course page keeps its own."""
    texts = {"en": en, "zh": zh}
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display({LANG_MIME: json.dumps(texts, ensure_ascii=False), "text/plain": texts[language()]}, raw=True)
    else:
        print(texts[language()])


@dataclass(frozen=True)
class Exercise:
    """question/hints: by language; answer: computes the right answer with the library;
    tolerance: the largest |difference| accepted, per element."""

    question: dict[str, str]
    hints: dict[str, list[str]]
    answer: Callable[[], float | np.ndarray]
    tolerance: float


def _leaf():
    from glassformer.explain.basics import network

    return network


def _first_neuron() -> float:
    n = _leaf()
    return float(n.LEAF_W1[0] @ n.LEAF_X)


def _first_neuron_bias() -> float:
    n = _leaf()
    return float(n.LEAF_W1[0] @ n.LEAF_X + n.LEAF_B1[0])


def _loss_example() -> float:
    n = _leaf()
    return n.absolute_loss(n.LOSS_WANTED, n.LOSS_GOT)


def _softmax_first() -> float:
    n = _leaf()
    return float(n.softmax(n.SOFTMAX_Z)[0])


def _output_gradient() -> np.ndarray:
    n = _leaf()
    return n.backward(n.LEAF_X, n.LEAF_W1, n.LEAF_W2, n.LEAF_Y, n.LEAF_B1)["dz2"]


EXERCISES: dict[str, Exercise] = {
    "neurons.first_neuron": Exercise(
        {"en": "The first hidden neuron's weighted sum of the object (32, 107, 56, 11.2), before its bias, "
               "to one decimal.",
         "zh": "第一个隐藏神经元对物体 (32, 107, 56, 11.2) 的加权和（不加偏置），保留一位小数。"},
        {"en": ["Its weights are (0.10, −0.29, −0.07, 0.46): multiply each input by its weight.",
                "Add the four products: 32×0.10 + 107×(−0.29) + 56×(−0.07) + 11.2×0.46."],
         "zh": ["它的权重是 (0.10, −0.29, −0.07, 0.46)：每个输入乘以对应的权重。",
                "把四个乘积加起来：32×0.10 + 107×(−0.29) + 56×(−0.07) + 11.2×0.46。"]},
        _first_neuron, 0.05),  # one decimal: the exact sum is within 0.05 of the rounded answer
    "neurons.first_neuron_bias": Exercise(
        {"en": "The same neuron with its bias 0.25 added, to two decimals.",
         "zh": "同一个神经元加上偏置 0.25 之后的值，保留两位小数。"},
        {"en": ["Take the weighted sum (unrounded) and add 0.25."],
         "zh": ["用（未四舍五入的）加权和再加上 0.25。"]},
        _first_neuron_bias, 0.005),
    "neurons.loss_example": Exercise(
        {"en": "The article's loss example: wanted (0.8, 0.2), got (0.6, 0.4); the sum of absolute differences.",
         "zh": "文章里的损失例子：期望 (0.8, 0.2)，得到 (0.6, 0.4)；差的绝对值之和。"},
        {"en": ["|0.8 − 0.6| + |0.2 − 0.4|."], "zh": ["|0.8 − 0.6| + |0.2 − 0.4|。"]},
        _loss_example, 1e-9),
    "neurons.softmax_first": Exercise(
        {"en": "softmax(2.0, 1.0, 0.1): the first probability, to three decimals.",
         "zh": "softmax(2.0, 1.0, 0.1) 的第一个概率，保留三位小数。"},
        {"en": ["e^2.0 / (e^2.0 + e^1.0 + e^0.1)."], "zh": ["e^2.0 / (e^2.0 + e^1.0 + e^0.1)。"]},
        _softmax_first, 0.0005),
    "neurons.output_gradient": Exercise(
        {"en": "The gradient of the cross-entropy loss with respect to the two scores, for the leaf (class 0): "
               "a vector of two numbers, to three decimals.",
         "zh": "交叉熵损失对两个分数的梯度（真实类别是叶子，第 0 类）：两个数的向量，保留三位小数。"},
        {"en": ["softmax followed by cross-entropy has the gradient p − y.",
                "y is one-hot: (1, 0) for the leaf; p is the network's probabilities."],
         "zh": ["softmax 加交叉熵的梯度是 p − y。", "y 是独热向量：叶子为 (1, 0)；p 是网络输出的概率。"]},
        _output_gradient, 0.0005),
}


class Verdict:
    """check's answer: true when right. A notebook shows nothing more for it (check has already
    said why), so `learn.check(...)` as a cell's last line leaves no stray True or False."""

    def __init__(self, right: bool):
        self.right = right

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return "right" if self.right else "not right"

    def _ipython_display_(self) -> None:
        pass


def check(key: str, answer) -> Verdict:
    """Whether `answer` is the exercise's answer within its tolerance (true when it is); prints one
    line saying so: the library's value when right, a hint when wrong, the question when None."""
    if key not in EXERCISES:
        raise ValueError(f"no exercise {key!r}; the exercises are: {', '.join(EXERCISES)}")
    exercise = EXERCISES[key]
    right = np.asarray(exercise.answer(), dtype=np.float64)
    if answer is None:
        show(en=f"? {exercise.question['en']}  Hint: {exercise.hints['en'][0]}",
             zh=f"？{exercise.question['zh']}  提示：{exercise.hints['zh'][0]}")
        return Verdict(False)
    try:
        given = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        show(en=f"✗ {key}: the answer must be a number or numbers, not {type(answer).__name__}",
             zh=f"✗ {key}：答案应该是数字，而不是 {type(answer).__name__}")
        return Verdict(False)
    if given.shape != right.shape:
        show(en=f"✗ {key}: the answer has shape {list(given.shape)}; expected {list(right.shape)}",
             zh=f"✗ {key}：答案的形状是 {list(given.shape)}，应为 {list(right.shape)}")
        return Verdict(False)
    ok = bool(np.all(np.abs(given - right) <= exercise.tolerance)) and bool(np.all(np.isfinite(given)))
    shown = _text(right)
    if ok:
        show(en=f"✓ {key}: right (the library computes {shown})", zh=f"✓ {key}：正确（程序算出 {shown}）")
    else:
        off = float(np.max(np.abs(given - right))) if np.all(np.isfinite(given)) else math.inf
        show(en=f"✗ {key}: {_text(given)} is off by {off:.3g}. Hint: {exercise.hints['en'][-1]}",
             zh=f"✗ {key}：{_text(given)} 差了 {off:.3g}。提示：{exercise.hints['zh'][-1]}")
    return Verdict(ok)


def _text(a: np.ndarray) -> str:
    if a.ndim == 0:
        return f"{float(a):.6g}".replace("-", "−")
    return "[" + ", ".join(f"{float(x):.6g}".replace("-", "−") for x in a.ravel()) + "]"
