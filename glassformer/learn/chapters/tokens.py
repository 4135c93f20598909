# %% [markdown] lang="en"
# # 3. Tokens
#
# The model of chapter 2 read characters. A Transformer reads **tokens**: the pieces a
# **tokenizer** cuts the text into, each replaced by its id, a row number in the embedding
# table. How the text is cut decides how many ids the model sees, how large its vocabulary is,
# and whether it can read a word it never met. This chapter trains glassformer's three
# tokenizers (`glassformer.data.tokenizers`: characters, words, and byte-level BPE, which is
# Hugging Face `tokenizers` underneath) on small texts, shows their ids and round trips, lists
# BPE's merges in the order it learns them, and ends with a BPE vocabulary and a GPT of your own.

# %% [markdown] lang="zh"
# # 3. 词元与分词器
#
# 第 2 章的模型读的是字符。Transformer 读的是**词元**（token）：**分词器**把文本切成小块，
# 每一块换成它的 id，也就是它在词嵌入表中的行号。文本怎么切，决定了模型要读多少个 id、
# 词表有多大，以及遇到没见过的词时还能不能读。本章在小文本上训练 glassformer 的三种分词器
# （`glassformer.data.tokenizers`：字符级、词级，以及字节级 BPE，底层是 Hugging Face 的 `tokenizers`），
# 展示它们的 id 和往返转换，按学习顺序列出 BPE 的每一次合并，最后训练你自己的 BPE 词表和一个 GPT。

# %%
import json
from collections import Counter

from glassformer import learn
from glassformer.data.tokenizers import SPECIALS, BPETokenizer, CharTokenizer, WordTokenizer
from glassformer.explain.basics.network import HUMPTY_TEXT
from glassformer.explain.labels import token_label
from glassformer.explain.walkthrough import CORPUS


def visible(piece):  # a space as ␣ and a newline as ↵, as the walkthrough shows them
    return piece.replace(" ", "␣").replace("\n", "↵")


# %% [markdown] lang="en"
# ## Words: the articles' vocabulary
#
# The articles' example, which chapters 4 and 5 compute by hand, is a dialogue of three lines
# (the first two are the articles'). Its vocabulary is made from its words: a **word
# tokenizer** counts them, gives the most frequent the smallest ids, and puts four special
# tokens first: `<pad>` fills short sentences up to a common length, `<unk>` stands for any word
# not in the vocabulary, and `<bos>`/`<eos>` (the articles' `<start>` and `<end>`) open and close
# a sentence for the decoder.

# %% [markdown] lang="zh"
# ## 词：文章里的词表
#
# 文章的例子（第 4、5 章会手算它）是一段三行的对话（前两行出自文章）。它的词表由其中的词构成：
# **词级分词器**统计每个词出现的次数，最常见的词 id 最小，并把四个特殊词元放在最前面：
# `<pad>` 把短句补齐到同样长度，`<unk>` 代表词表之外的任何词，`<bos>`/`<eos>`（文章里的
# `<start>` 和 `<end>`）为解码器标出句子的开始和结束。

# %%
dialogue = "\n".join(CORPUS)
words = WordTokenizer.train(dialogue)  # what the walkthrough of chapter 4 uses
print(dialogue)
n_words = words.vocab_size - len(SPECIALS)
print(f"\nvocabulary: {words.vocab_size} = {len(SPECIALS)} special tokens + {n_words} words")
print("  " + "  ".join(f"{i}:{token_label(words, i)}" for i in range(words.vocab_size)))
ids = words.encode(CORPUS[0])
print(f"\n{CORPUS[0]!r} -> {ids}")
print("decoded:", repr(words.decode(ids)))
assert words.vocab_size == 18
assert words.token(4) == "you" and dialogue.split().count("you") == 4  # the most frequent word
assert words.decode(words.encode(dialogue)) == " ".join(CORPUS)  # the line breaks are lost

# %% [markdown] lang="en"
# The round trip gives the words back, but not the text: a word tokenizer keeps no spaces or
# line breaks, and decoding joins the words with single spaces.
#
# ### Exercise 1
#
# How large is the vocabulary of a word tokenizer trained on just the first two lines (the
# articles' own), special tokens included? Count by hand.

# %% [markdown] lang="zh"
# 往返之后词还是那些词，文本却不完全一样了：词级分词器不保存空格和换行，解码时只用一个空格把词连起来。
#
# ### 练习 1
#
# 只用前两行（文章自己的两句）训练词级分词器，词表有多大（包括特殊词元）？请手数。

# %%
answer = None  # your number here
learn.check("tokens.articles_vocab", answer)

# %% tags=["solution"]
two_lines = "when you play the game of thrones you win or you die".split()
assert learn.check("tokens.articles_vocab", len(set(two_lines)) + 4)

# %% [markdown] lang="en"
# ## Characters
#
# A **character tokenizer** has one id per distinct character (sorted, as in chapter 2 and
# nanoGPT), plus one `<unk>` for characters it never saw. Its vocabulary is tiny and its round
# trip is exact, but the sequences are long: one id per character.

# %% [markdown] lang="zh"
# ## 字符
#
# **字符级分词器**为每个不同的字符分配一个 id（按字符排序，和第 2 章、nanoGPT 一样），
# 再加一个 `<unk>` 表示没见过的字符。它的词表很小，往返转换完全精确，但序列很长：每个字符一个 id。

# %%
chars = CharTokenizer.train(dialogue)
ids = chars.encode(CORPUS[0])
print(f"vocabulary: {chars.vocab_size} ({chars.vocab_size - 1} characters + <unk>)")
print(f"{CORPUS[0]!r}: {len(ids)} ids: {ids}")
print(f"the dialogue: {len(chars.encode(dialogue))} character ids, {len(words.encode(dialogue))} word ids")
assert chars.decode(chars.encode(dialogue)) == dialogue and len(ids) == len(CORPUS[0])

# %% [markdown] lang="en"
# ## BPE: merges learned from the text
#
# **Byte-pair encoding** sits between the two. It starts from the 256 possible bytes (so any
# text at all can be written down) and then repeats one step: count every pair of adjacent
# pieces inside the words of the training text, and **merge** the most frequent pair into a new
# piece, a new row of the vocabulary. It stops when the vocabulary reaches the size asked for.
# The text is first split into words, each with the space before it, and pairs never cross
# from one word to the next.
#
# On the humpty dumpty text, with room for 8 merges ($256 + 4 + 8 = 268$ tokens). GPT-2's byte
# alphabet, which Hugging Face `tokenizers` uses, writes a space as `Ġ` and a newline as `Ċ`;
# here they are shown as `␣` and `↵`.

# %% [markdown] lang="zh"
# ## BPE：从文本中学到的合并
#
# **字节对编码**（BPE）介于两者之间。它从 256 个可能的字节出发（所以任何文本都写得出来），
# 然后反复做同一件事：统计训练文本的各个词内部所有相邻的两块，把出现最多的那一对**合并**成一块新的，
# 也就是词表里新的一行。词表达到要求的大小就停下。文本先被切成词（每个词带着它前面的空格），
# 合并永远不会跨越两个词。
#
# 在 humpty dumpty 文本上，留出 8 次合并的空间（$256 + 4 + 8 = 268$ 个词元）。
# Hugging Face `tokenizers` 使用 GPT-2 的字节字母表，空格写作 `Ġ`，换行写作 `Ċ`；这里显示为 `␣` 和 `↵`。

# %%
bpe = BPETokenizer.train(HUMPTY_TEXT, vocab_size=256 + len(SPECIALS) + 8)
merges = json.loads(bpe.hf.to_str())["model"]["merges"]  # in the order they were learned


def shown(piece):  # GPT-2's byte alphabet: Ġ is a space, Ċ a newline
    return piece.replace("Ġ", "␣").replace("Ċ", "↵")


# The words as BPE's pre-tokenizer cuts them, each a tuple of pieces, with how often it occurs.
pieces = Counter()
for line in HUMPTY_TEXT.splitlines(keepends=True):
    for word, _ in bpe.hf.pre_tokenizer.pre_tokenize_str(line):
        pieces[tuple(word)] += 1
print("words:", {shown("".join(w)): n for w, n in pieces.items()})
assert len(HUMPTY_TEXT) == 61 and bpe.vocab_size == 268


# %% [markdown] lang="en"
# The library gives the merges; to see that each one is a most frequent pair, count the pairs
# ourselves, merge, and count again:

# %% [markdown] lang="zh"
# 合并的结果由库给出；为了确认每一次合并的都是出现最多的一对，我们自己数一遍所有的对，合并，再数：

# %%
def merge(word, pair):
    out, i = [], 0
    while i < len(word):
        if tuple(word[i:i + 2]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


# Replay the merges on our own counts: each must be a most frequent pair at its turn.
counts_at_merge = []
for k, (left, right) in enumerate(merges, 1):
    pairs = Counter()
    for word, n in pieces.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += n
    counts_at_merge.append(pairs[(left, right)])
    if k == 2:  # after the first merge, three pairs tie
        tied = sorted(p for p, n in pairs.items() if n == 4)
        assert tied == [("p", "t"), ("t", "y"), ("um", "p")]
    print(f"{k}. {shown(left):>6} + {shown(right):<7} -> {shown(left + right):<8}"
          f" {pairs[(left, right)]} times (the most frequent pair: {max(pairs.values())})")
    assert pairs[(left, right)] == max(pairs.values())
    pieces = Counter({merge(word, (left, right)): n for word, n in pieces.items()})
assert counts_at_merge == [5, 4, 4, 4, 3, 2, 2, 2]

# %% [markdown] lang="en"
# The pair `u m` comes first: it occurs 5 times (humpty and dumpty twice each, and hummed).
# Several pairs often tie (after the first merge, `um p`, `p t` and `t y` each occur 4 times);
# the library breaks ties in its own fixed order. After 8 merges `humpty` and `␣dumpty` are
# single tokens, and the 61 characters become far fewer ids:

# %% [markdown] lang="zh"
# 第一个合并的是 `u m`：它出现了 5 次（humpty 和 dumpty 各两次，再加上 hummed）。经常有几对打平
# （第一次合并之后，`um p`、`p t`、`t y` 都出现 4 次），库按自己固定的顺序决定先合并哪一对。
# 8 次合并之后，`humpty` 和 `␣dumpty` 都成了单个词元，61 个字符变成的 id 少了很多：

# %%
ids = bpe.encode(HUMPTY_TEXT)
print(f"{len(HUMPTY_TEXT)} characters -> {len(ids)} BPE tokens:")
print(" | ".join(visible(bpe.token(i)) for i in ids))
print("ids:", ids)
assert bpe.decode(ids) == HUMPTY_TEXT and len(ids) == sum(len(w) * n for w, n in pieces.items())

# %% [markdown] lang="en"
# ### Exercise 2
#
# How many times does the pair `u m` occur inside the words of the humpty dumpty text?

# %% [markdown] lang="zh"
# ### 练习 2
#
# 在 humpty dumpty 文本的各个词内部，`u m` 这一对一共出现了几次？

# %%
answer = None  # your number here
learn.check("tokens.first_merge", answer)

# %% tags=["solution"]
assert learn.check("tokens.first_merge", sum(word.count("um") for word in HUMPTY_TEXT.split()))

# %% [markdown] lang="en"
# ### Exercise 3
#
# Apply the 8 merges above, in order, to the second line `humpty dumpty sang to the moon.`
# (with its newline). How many tokens does it become?

# %% [markdown] lang="zh"
# ### 练习 3
#
# 按顺序把上面的 8 次合并用到第二行 `humpty dumpty sang to the moon.`（连同行末的换行）上。
# 它变成了多少个词元？

# %%
answer = None  # your number here
learn.check("tokens.second_line", answer)

# %% tags=["solution"]
# humpty | ␣dumpty | ␣ s a n g | ␣t o | ␣t h e | ␣ m o o n | . | ↵
assert learn.check("tokens.second_line", 1 + 1 + 5 + 2 + 3 + 5 + 1 + 1)

# %% [markdown] lang="en"
# ## Vocabulary size against sequence length
#
# On a larger text, glassformer's bundled corpus of village stories (its first 100,000
# characters), the same trade-off in numbers: the bigger the vocabulary, the fewer ids the
# same text needs. BPE asked for 4,000 tokens stops earlier: once every word of the text is a
# single token, no pair is left to merge, because merges never cross words.

# %% [markdown] lang="zh"
# ## 词表大小与序列长度
#
# 在更大的文本上（glassformer 自带的乡村故事语料的前 100,000 个字符），用数字看同样的取舍：
# 词表越大，同一段文本需要的 id 越少。要求 4,000 个词元的 BPE 会提前停下：一旦文本里每个词都成了
# 单个词元，就没有可以合并的对了，因为合并从不跨越词。

# %%
from glassformer.data.corpus import bundled_corpus

corpus = bundled_corpus()[:100_000]
table = [("char", CharTokenizer.train(corpus)), ("word", WordTokenizer.train(corpus))]
table += [(f"bpe {v}", BPETokenizer.train(corpus, v)) for v in (300, 1000, 4000)]
lengths = {}
print(f"{'tokenizer':10} {'vocabulary':>10} {'tokens':>8} {'characters per token':>21}")
for name, tok in table:
    lengths[name] = len(tok.encode(corpus))
    print(f"{name:10} {tok.vocab_size:>10} {lengths[name]:>8} {len(corpus) / lengths[name]:>21.2f}")
assert lengths["char"] == len(corpus)
assert lengths["char"] > lengths["bpe 300"] > lengths["bpe 1000"]
assert lengths["bpe 1000"] > lengths["bpe 4000"] > lengths["word"]
assert table[-1][1].vocab_size < 4000  # stopped: nothing left to merge
largest = table[-1][1]
breaks = sum(1 for i in largest.encode(corpus) if not largest.token(i).strip())  # tokens of whitespace alone
print(f"bpe 4000 - word = {lengths['bpe 4000'] - lengths['word']} = BPE's tokens of whitespace alone: {breaks}")
assert lengths["bpe 4000"] - lengths["word"] == breaks

# %% [markdown] lang="en"
# The word tokenizer gives fewer ids than the largest BPE only because it drops the line
# breaks: once every word is a single BPE token, the two differ by BPE's tokens of whitespace
# alone. BPE keeps each space inside the word after it, and every line break, so its round trip
# is exact.
#
# GPT-2's BPE was trained on far more text: its vocabulary of 50,257 tokens is the 256 bytes,
# 50,000 merges and one special token, `<|endoftext|>`.

# %% [markdown] lang="zh"
# 词级分词器的 id 比最大的 BPE 还少，只是因为它丢掉了换行：当每个词都成了单个 BPE 词元之后，
# 两者之差正好是 BPE 中只含空白的词元个数。BPE 把空格留在它后面的词里，换行也一个不落地保留，
# 所以往返是精确的。
#
# GPT-2 的 BPE 在多得多的文本上训练：它的词表有 50,257 个词元，即 256 个字节、50,000 次合并，
# 再加一个特殊词元 `<|endoftext|>`。

# %%
from glassformer.model.config import PRESETS

gpt2_vocab = PRESETS["gpt2"].model.vocab_size
print(f"GPT-2's vocabulary: {gpt2_vocab} = 256 + 50000 + 1")
assert gpt2_vocab == 50257 == 256 + 50_000 + 1

# %% [markdown] lang="en"
# ## Unknown tokens
#
# What does each tokenizer do with text it never saw? Trained on the humpty dumpty text alone,
# each reads a sentence with new words, new letters, and two Chinese characters:

# %% [markdown] lang="zh"
# ## 未知词元
#
# 遇到没见过的文本，每种分词器会怎么做？只用 humpty dumpty 文本训练，再让它们读一句有新词、
# 新字母和两个汉字的话：

# %%
new = "humpty dumpty ate a pear. 你好"
trained = {"char": CharTokenizer.train(HUMPTY_TEXT), "word": WordTokenizer.train(HUMPTY_TEXT), "bpe": bpe}
for name, tok in trained.items():
    ids = tok.encode(new)
    unknown = sum(i == tok.unk_id for i in ids)
    back = tok.decode(ids)
    print(f"{name}: {len(ids)} ids, {unknown} of them <unk>; decoded {back!r}; exact: {back == new}")
print("BPE's pieces of 你好:", " ".join(bpe.token(i) for i in bpe.encode("你好")))
assert bpe.decode(bpe.encode(new)) == new
assert len(bpe.encode("你好")) == len("你好".encode()) == 6  # three UTF-8 bytes a character

# %% [markdown] lang="en"
# The character tokenizer replaces each unseen character (r, 你, 好) by `<unk>`, which decodes as
# "�"; the word tokenizer loses whole words ("ate", "pear", and "你好", one word to it).
# Byte-level BPE never needs `<unk>`: a character it has no merge for is written as its UTF-8
# bytes, three for each Chinese character here, and the round trip is exact. The price is
# length: a language the training text lacked costs several tokens per character.

# %% [markdown] lang="zh"
# 字符级分词器把每个没见过的字符（r、你、好）都换成 `<unk>`，解码成 "�"；词级分词器则丢掉整个词
# （"ate"、"pear"，还有被它当作一个词的 "你好"）。字节级 BPE 从不需要 `<unk>`：没有合并可用的字符就写成它的 UTF-8 字节，
# 这里每个汉字三个字节，往返完全精确。代价是长度：训练文本里没有的语言，每个字要花好几个词元。
# 这也是为什么中文在只用英文训练的分词器里特别“贵”。

# %% [markdown] lang="en"
# ## Now your own model
#
# Your own tokenizer first: a BPE trained on the bundled corpus with a vocabulary size of your
# choice, and how it cuts a sentence. Then a GPT trained with that kind of tokenizer, by
# `train_lm(tokenizer="bpe")` (the same default recipe as in chapter 2, 60 steps), and its most
# likely next tokens: whole words now, not letters.

# %% [markdown] lang="zh"
# ## 现在轮到你自己的模型
#
# 先训练你自己的分词器：在自带语料上训练一个 BPE，词表大小由你定，看它怎么切一句话。
# 然后用 `train_lm(tokenizer="bpe")` 训练一个用这种分词器的 GPT（和第 2 章一样的默认配方，60 步），
# 看它最可能的下一个词元：现在是整个的词，而不再是字母。

# %%
vocab_size = 512  # try 300, 2000
text = bundled_corpus()  # or your own: open("my.txt", encoding="utf-8").read()
mine = BPETokenizer.train(text, vocab_size)
sentence = "Nora counted the coins: one, two, three, and gave Mira a shiny lantern."
ids = mine.encode(sentence)
print(f"vocabulary {mine.vocab_size}: {len(sentence)} characters -> {len(ids)} tokens")
print(" | ".join(visible(mine.token(i)) for i in ids))
assert mine.decode(ids) == sentence

# %%
import torch

from glassformer.checkpoint import load
from glassformer.training.lm import train_lm

settings = ["max_iters=60", "lr_decay_iters=60", "eval_interval=60", "bigram=false"]
# data=None: the bundled corpus; data="my.txt" trains on your own text
metrics = train_lm("runs/tokens", data=None, tokenizer="bpe", vocab_size=vocab_size, overrides=settings,
                   progress=False, overwrite=True)
gpt, tok = load("runs/tokens")
prompt = "Nora counted the coins: one, two,"
ids = tok.encode(prompt)
with torch.no_grad():
    p = gpt.next_logits(torch.tensor([ids]))[0].softmax(-1)
print(f"validation loss {metrics['val_loss']:.3f} per token; {prompt!r} is {len(ids)} tokens")
top = p.argsort(descending=True)[:5].tolist()
print("most likely next tokens:", "  ".join(f"{visible(tok.token(i))!r} {p[i]:.3f}" for i in top))
assert tok.vocab_size == vocab_size

# %% [markdown] lang="en"
# (`bigram=false`: the default recipe's table of token pairs is meant for character vocabularies;
# with 512 tokens it would have 512 × 513 rows.) The same in the terminal (`--overwrite`: the
# cell above has already written `runs/tokens`), and the explorer, whose token strip shows how
# your text was cut:
#
# ```bash
# glassformer train lm --tokenizer bpe --vocab-size 512 --out runs/tokens --overwrite \
#     --set max_iters=60 --set lr_decay_iters=60 --set eval_interval=60 --set bigram=false
# glassformer explore --model runs/tokens
# ```
#
# Next: [4. Attention by hand](attention.md), on the articles' dialogue ([the course](../index.md)).

# %% [markdown] lang="zh"
# （`bigram=false`：默认配方里的词元对表格是为字符词表设计的；512 个词元就会有 512 × 513 行。）
# 在终端里做同样的事（`--overwrite`：上面的单元已经写过 `runs/tokens` 了），再打开探索器，
# 它的词元条会显示你的文本是怎么被切开的：
#
# ```bash
# glassformer train lm --tokenizer bpe --vocab-size 512 --out runs/tokens --overwrite \
#     --set max_iters=60 --set lr_decay_iters=60 --set eval_interval=60 --set bigram=false
# glassformer explore --model runs/tokens
# ```
#
# 下一章：[4. 手算注意力](attention.md)，就用文章里的这段对话（[课程目录](../index.md)）。
