"""Chapter 3's exercises: the word tokenizer of the articles' dialogue and BPE's merges on the
humpty dumpty text (glassformer.data.tokenizers)."""

from __future__ import annotations

import json

from glassformer.learn.problems import Exercise

MERGES = 8  # the chapter's BPE: 256 bytes + 4 special tokens + 8 merges
SECOND_LINE = "humpty dumpty sang to the moon.\n"


def _bpe():
    from glassformer.data.tokenizers import SPECIALS, BPETokenizer
    from glassformer.explain.basics.network import HUMPTY_TEXT

    return BPETokenizer.train(HUMPTY_TEXT, 256 + len(SPECIALS) + MERGES)


def _articles_vocab() -> int:
    from glassformer.data.tokenizers import WordTokenizer
    from glassformer.explain.walkthrough import CORPUS

    return WordTokenizer.train("\n".join(CORPUS[:2])).vocab_size


def _first_merge() -> int:
    from glassformer.explain.basics.network import HUMPTY_TEXT

    bpe = _bpe()
    first = tuple(json.loads(bpe.hf.to_str())["model"]["merges"][0])  # the pair merged first: ("u", "m")
    lines = HUMPTY_TEXT.splitlines(keepends=True)
    words = [w for line in lines for w, _ in bpe.hf.pre_tokenizer.pre_tokenize_str(line)]
    return sum(1 for w in words for pair in zip(w, w[1:]) if pair == first)


def _second_line() -> int:
    return len(_bpe().encode(SECOND_LINE))


EXERCISES = {
    "tokens.articles_vocab": Exercise(
        {"en": "A word tokenizer trained on the articles' two lines 'when you play the game of thrones' and "
               "'you win or you die': its vocabulary size, the 4 special tokens included.",
         "zh": "用文章的两句话 'when you play the game of thrones' 和 'you win or you die' 训练词级分词器："
               "词表大小是多少（包括 4 个特殊词元）？"},
        {"en": ["Count the distinct words: a word that occurs twice gets one id.",
                "10 distinct words (you occurs three times) plus <pad>, <unk>, <bos>, <eos>."],
         "zh": ["数一数不同的词：出现两次的词只占一个 id。",
                "10 个不同的词（you 出现了三次），再加上 <pad>、<unk>、<bos>、<eos>。"]},
        _articles_vocab, 0.5),  # a count: any other integer is wrong
    "tokens.first_merge": Exercise(
        {"en": "How many times does the pair 'u m' occur inside the words of the humpty dumpty text?",
         "zh": "在 humpty dumpty 文本的各个词内部，'u m' 这一对一共出现几次？"},
        {"en": ["Look at humpty, dumpty and hummed, in both lines.",
                "humpty and dumpty appear twice each, hummed once."],
         "zh": ["看两行里的 humpty、dumpty 和 hummed。", "humpty 和 dumpty 各出现两次，hummed 一次。"]},
        _first_merge, 0.5),
    "tokens.second_line": Exercise(
        {"en": "After the chapter's 8 merges, how many BPE tokens does 'humpty dumpty sang to the moon.' "
               "with its newline become?",
         "zh": "用本章的 8 次合并，'humpty dumpty sang to the moon.' 连同换行符会变成多少个 BPE 词元？"},
        {"en": ["Cut the line into words first, each with the space before it; '.' and the newline are words too.",
                "humpty and ␣dumpty are one token each; of the other merges only ␣t applies (to ␣to and ␣the)."],
         "zh": ["先把这一行切成词，每个词带着它前面的空格；'.' 和换行符也各算一个词。",
                "humpty 和 ␣dumpty 各是一个词元；其余的合并里只有 ␣t 用得上（␣to 和 ␣the）。"]},
        _second_line, 0.5),
}
