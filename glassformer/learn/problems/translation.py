"""Chapter 5's exercises: the articles' example translated (glassformer.explain.walkthrough and
glassformer.explain.generation): one cross-attention weight, greedy's first pick, a beam hypothesis's score.

Every answer is read off what the model itself computed for the articles' first line, with the
articles' encoder-decoder (builtin_subject(), one head, seeded: the same model every time).
"""

from __future__ import annotations

from functools import lru_cache

from glassformer.learn.problems import Exercise

LINE = "when you play the game of thrones"  # the articles' first line (walkthrough.CORPUS[0])


@lru_cache(maxsize=1)
def _subject():
    """The articles' encoder-decoder, trained once per process."""
    from glassformer.explain.walkthrough import builtin_subject

    return builtin_subject()


def _cross_weight() -> float:
    step = _subject().walkthrough(LINE).step("dec.0.cross.h0.probs")
    return float(step.values[step.rows.index("you"), step.cols.index("game")])  # the first "you" row


def _greedy_first() -> int:
    return _subject().generation(LINE).steps[0]["picked"]["id"]


def _beam_normalised() -> float:
    """The length-normalised score of the finished hypothesis "you win or you die <end>", beam 3."""
    for step in _subject().generation(LINE, beam=3).steps:
        for c in step["candidates"]:
            if c["status"] == "finished" and c["tokens"] == ["you", "win", "or", "you", "die", "<end>"]:
                return c["normalised"]
    raise AssertionError("beam search did not finish the articles' answer")


# Tolerances: half a unit of the decimal the question asks for. The learner works in float64 from
# the model's float32 values printed to 4 decimals (the weight) or 6 (the probabilities), so a
# right answer is well inside it.
EXERCISES = {
    "translation.cross_weight": Exercise(
        {"en": "Cross-attention: with the decoder having read <start> you (row \"you\"), how much weight does "
               "it give the source word \"game\"? To three decimals.",
         "zh": "交叉注意力：解码器读到 <start> you 时（\"you\" 这一行），它给源句中的 \"game\" 多大的权重？"
               "保留三位小数。"},
        {"en": ["The weights of a row are the softmax of its scaled scores QKᵀ/√d_k over the 8 source tokens.",
                "exp(score of \"game\") divided by the sum of exp(score) over the row (step dec.0.cross.h0.scaled)."],
         "zh": ["一行的权重就是这一行缩放后的分数 QKᵀ/√d_k 在 8 个源词上做 softmax。",
                "exp(\"game\" 的分数) 除以这一行所有 exp(分数) 之和（步骤 dec.0.cross.h0.scaled）。"]},
        _cross_weight, 0.0005),
    "translation.greedy_first": Exercise(
        {"en": "Greedy decoding, step 1: the id of the token it picks after <start>.",
         "zh": "贪心解码第 1 步：在 <start> 之后它选中的词的编号。"},
        {"en": ["Row <start> of the logits (step \"logits\") scores every word of the vocabulary.",
                "Greedy takes the largest, never <pad> (id 0) or <start> (id 2); the id is its column."],
         "zh": ["logits（步骤 \"logits\"）的 <start> 这一行给词表里每个词打了分。",
                "贪心取最大的那个，但不会是 <pad>（编号 0）或 <start>（编号 2）；编号就是它所在的列。"]},
        _greedy_first, 0.5),  # an id: any other integer is wrong
    "translation.beam_score": Exercise(
        {"en": "Beam search (beam 3): the length-normalised score of the finished hypothesis "
               "\"you win or you die <end>\", to four decimals.",
         "zh": "束搜索（束宽 3）：已结束的假设 \"you win or you die <end>\" 经长度归一化后的分数，保留四位小数。"},
        {"en": ["Its score is the sum of the log-probabilities of its 6 tokens, <end> included: greedy's picks.",
                "Divide that sum by ((5 + 6) / 6) ** 0.6, the GNMT length penalty with α = 0.6."],
         "zh": ["它的分数是 6 个词（包括 <end>）的对数概率之和，也就是贪心每一步选中的概率取对数再相加。",
                "把这个和除以 ((5 + 6) / 6) ** 0.6，即 α = 0.6 的 GNMT 长度惩罚。"]},
        _beam_normalised, 0.00005),
}
