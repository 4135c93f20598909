"""Chapter 2's exercises: the humpty dumpty window model, softmax, temperature and dropout
(glassformer.explain.basics.network)."""

from __future__ import annotations

import numpy as np

from glassformer.learn.problems import Exercise


def _net():
    from glassformer.explain.basics import network

    return network


def _floor() -> float:
    n = _net()
    xs, ys = n.char_pairs(n.HUMPTY_TEXT, sorted(set(n.HUMPTY_TEXT)))
    windows = ["".join(map(str, x)) for x in xs.tolist()]
    # Each window seen with k different next characters costs at best ln k per occurrence.
    seen: dict[str, set[int]] = {}
    for w, y in zip(windows, ys.tolist()):
        seen.setdefault(w, set()).add(y)
    total = sum(np.log(len(seen[w])) for w in windows)
    return float(total / len(xs))


def _log_softmax() -> np.ndarray:
    n = _net()
    return n.log_softmax(n.SOFTMAX_Z)


def _temperature() -> float:
    n = _net()
    return float(n.softmax(n.SOFTMAX_Z / n.TEMPERATURES[0]).max())


def _dropout_kept() -> np.ndarray:
    n = _net()
    # torch's own F.dropout: each unit is 0 or its kept value, so over 200 masks the largest is the kept
    # one (a unit dropped in all 200 has probability 0.25^200).
    return n.dropout_samples(n.DROPOUT_A, n.DROPOUT_P, n=200)["inverted_rows"].max(0)


EXERCISES = {
    "nextchar.floor": Exercise(
        {"en": "The lowest possible mean cross-entropy of any model on the 61 (window -> next character) pairs "
               "of the humpty dumpty text, to four decimals.",
         "zh": "任何模型在 humpty dumpty 文本的 61 对（窗口 → 下一个字符）样本上"
               "可能达到的最低平均交叉熵，保留四位小数。"},
        {"en": ["Only the window 'mpty dumpty ' is followed by two different characters (h and s), once each.",
                "The best bet there is 1/2 each: ln 2 on each of those two pairs, 0 elsewhere; divide by 61."],
         "zh": ["只有窗口 'mpty dumpty ' 后面跟着两个不同的字符（h 和 s），各一次。",
                "那里最好的猜法是各 1/2：这两对样本各损失 ln 2，其余为 0；再除以 61。"]},
        _floor, 0.00005),  # four decimals
    "nextchar.log_softmax": Exercise(
        {"en": "log-softmax(2.0, 1.0, 0.1): three numbers, to three decimals.",
         "zh": "log-softmax(2.0, 1.0, 0.1)：三个数，保留三位小数。"},
        {"en": ["Subtract logsumexp = ln(e^2.0 + e^1.0 + e^0.1) from each score.",
                "logsumexp is about 2.417; the answer is z − 2.417."],
         "zh": ["每个分数减去 logsumexp = ln(e^2.0 + e^1.0 + e^0.1)。", "logsumexp 约为 2.417；答案是 z − 2.417。"]},
        _log_softmax, 0.0005),
    "nextchar.temperature": Exercise(
        {"en": "The largest probability of softmax(z / 0.5) for z = (2.0, 1.0, 0.1), to three decimals.",
         "zh": "z = (2.0, 1.0, 0.1) 时 softmax(z / 0.5) 的最大概率，保留三位小数。"},
        {"en": ["Dividing by 0.5 doubles the scores: softmax(4.0, 2.0, 0.2).",
                "e^4 / (e^4 + e^2 + e^0.2)."],
         "zh": ["除以 0.5 就是把分数翻倍：softmax(4.0, 2.0, 0.2)。", "e^4 / (e^4 + e^2 + e^0.2)。"]},
        _temperature, 0.0005),
    "nextchar.dropout_kept": Exercise(
        {"en": "Inverted dropout with p = 0.25 on a = (1, 2, 3, 4): the value of each unit when it is kept "
               "(four numbers, to three decimals).",
         "zh": "对 a = (1, 2, 3, 4) 做 p = 0.25 的反向 dropout：每个单元被保留时的值（四个数，保留三位小数）。"},
        {"en": ["Inverted dropout scales the kept units during training, so that their mean stays a.",
                "Divide by the probability of keeping: a / (1 − 0.25)."],
         "zh": ["反向 dropout 在训练时放大被保留的单元，使平均值仍然是 a。", "除以保留的概率：a / (1 − 0.25)。"]},
        _dropout_kept, 0.0005),
}
