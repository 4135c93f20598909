"""Chapter 1's exercises: the leaf/flower network by hand (glassformer.explain.basics.network)."""

from __future__ import annotations

import numpy as np

from glassformer.learn.problems import Exercise


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


EXERCISES = {
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
