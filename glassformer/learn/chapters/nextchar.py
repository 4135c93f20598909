# %% [markdown] lang="en"
# # 2. Predicting the next character
#
# A language model does one thing: given the text so far, it gives a probability to every
# possible next symbol. The articles first build one with characters as the symbols and a fixed
# window of the **12** previous characters as its input, and let it continue "humpty dumpty".
# This chapter trains that model (glassformer's `explain basics`, section 6), looks at its
# inputs, its embedding table and its outputs, works through softmax, log-softmax and the
# temperature with numbers, and ends with dropout's two conventions and a small GPT of your own.

# %% [markdown] lang="zh"
# # 2. 预测下一个字符
#
# 语言模型只做一件事：给定前面的文本，为每一个可能的下一个符号给出一个概率。文章先用字符作为符号，
# 用固定的 **12** 个前文字符作为输入窗口，搭了一个这样的模型，让它把 "humpty dumpty" 续写下去。
# 本章训练这个模型（即 glassformer `explain basics` 的第 6 节），看它的输入、词嵌入表和输出，
# 用具体的数字过一遍 softmax、对数 softmax 和温度，最后讲 dropout 的两种约定，并训练一个你自己的小 GPT。

# %%
import numpy as np
import torch

from glassformer import learn
from glassformer.explain.basics import network as net


def shown(text):  # one visible character per character: a newline as ⏎
    return text.replace("\n", "⏎")


# %% [markdown] lang="en"
# ## The text and the sliding window
#
# The text is two short lines (glassformer's own; the nursery rhyme lends only its hero). The
# vocabulary is every distinct character in it, sorted. Each training example is a window of
# 12 characters and the character that follows it; sliding the window one character at a time
# gives one example per position. The text wraps around at its end, so that the model can keep
# writing after the last line: a text of $n$ characters gives exactly $n$ pairs.

# %% [markdown] lang="zh"
# ## 文本和滑动窗口
#
# 文本只有两行（是 glassformer 自己写的，童谣只借用了主人公的名字）。词表就是文本里出现过的所有字符，
# 按顺序排好。每个训练样本是一个 12 个字符的窗口，加上紧跟其后的那个字符；窗口每次向右滑动一个字符，
# 每个位置就得到一个样本。文本在结尾处绕回开头，这样模型写完最后一行还能接着写：
# $n$ 个字符的文本正好给出 $n$ 对样本。

# %%
text = net.HUMPTY_TEXT
chars = sorted(set(text))
xs, ys = net.char_pairs(text, chars)  # (61, 12) windows of ids, (61,) next ids
print(f"{len(text)} characters, vocabulary of {len(chars)}: {shown(''.join(chars))!r}")
print(f"window: {net.CONTEXT} characters; pairs: {tuple(xs.shape)} -> {tuple(ys.shape)}")
for x, y in zip(xs[:5].tolist(), ys[:5].tolist()):
    print(f"  [{shown(''.join(chars[i] for i in x))}] -> [{shown(chars[y])}]")
print("  ...")
last = "".join(chars[i] for i in xs[-1].tolist())
print(f"  [{shown(last)}] -> [{shown(chars[int(ys[-1])])}]  (wrapped around)")
assert net.CONTEXT == 12  # the article's window
assert len(xs) == len(text) == 61 and len(chars) == 17

# %% [markdown] lang="en"
# Both lines begin with "humpty dumpty ", so the window `mpty dumpty ` appears twice: once
# followed by `h` ("hummed") and once by `s` ("sang"). No model can be sure there. The best it
# can do is $p(h) = p(s) = \tfrac12$, a loss of $\ln 2$ on each of those two pairs and 0 on the
# others, so the mean loss over the 61 pairs can never fall below $2 \ln 2 / 61 \approx 0.023$.

# %% [markdown] lang="zh"
# 两行都以 "humpty dumpty " 开头，所以窗口 `mpty dumpty ` 出现了两次：一次后面是 `h`（"hummed"），
# 一次后面是 `s`（"sang"）。在这里任何模型都不可能有把握。它最好的做法是 $p(h) = p(s) = \tfrac12$，
# 这两对样本上的损失各为 $\ln 2$，其余为 0，所以 61 对样本的平均损失永远不会低于
# $2 \ln 2 / 61 \approx 0.023$。

# %%
followers = {}  # window -> the characters that follow it somewhere in the text
for x, y in zip(xs.tolist(), ys.tolist()):
    followers.setdefault("".join(chars[i] for i in x), set()).add(chars[y])
ambiguous = {w: sorted(f) for w, f in followers.items() if len(f) > 1}
floor = 2 * np.log(2) / len(xs)
print(f"{len(followers)} different windows; followed by more than one character: {ambiguous}")
assert ambiguous == {"mpty dumpty ": ["h", "s"]}
print(f"lowest possible mean loss: 2 ln 2 / {len(xs)} = {floor:.4f}")
assert round(floor, 3) == 0.023

# %% [markdown] lang="en"
# ### Exercise 1
#
# Compute that floor yourself, to four decimals.

# %% [markdown] lang="zh"
# ### 练习 1
#
# 自己算一下这个下限，保留四位小数。

# %%
answer = None  # your number here
learn.check("nextchar.floor", answer)

# %% tags=["solution"]
assert learn.check("nextchar.floor", 2 * np.log(2) / 61)

# %% [markdown] lang="en"
# ## Embeddings: a row of numbers per character
#
# A character id is just a position in the vocabulary; a network needs numbers it can learn.
# The **embedding table** has one row of 8 numbers per character. The model looks up the row of
# each of the 12 characters in the window and lays them side by side: $12 \times 8 = 96$ inputs
# to a hidden layer of 64 tanh neurons, whose output is one score per character of the
# vocabulary. Training moves the rows too. Here are a few rows of the trained table:

# %% [markdown] lang="zh"
# ## 词嵌入：每个字符一行数字
#
# 字符的 id 只是它在词表中的位置；网络需要的是可以学习的数字。**词嵌入**表为每个字符准备一行 8 个数。
# 模型为窗口中的 12 个字符各查出一行，再把它们并排拼起来：$12 \times 8 = 96$ 个输入，送进一个
# 有 64 个 tanh 神经元的隐藏层，最后为词表中的每个字符输出一个分数。训练时这些行也会被更新。
# 下面是训练后词嵌入表中的几行：

# %%
model, losses = net.train_char_model()  # 150 Adam steps on the 61 pairs, seed 0
print("embedding table:", tuple(model.emb.shape), "  hidden weights:", tuple(model.w1.shape))
for c in "hum ":
    row = model.emb[model.chars.index(c)].detach().numpy()
    print(f"  {c!r:5} row {model.chars.index(c):2}:", row.round(2))
x = model.emb[xs[:1]].flatten(1)  # the first window: (1, 12) ids -> (1, 12, 8) rows -> (1, 96)
print("the first window as the hidden layer sees it:", tuple(x.shape))
assert model.emb.shape == (17, 8) and model.w1.shape == (96, 64)
assert x.shape == (1, net.CONTEXT * 8)

# %% [markdown] lang="en"
# ## Training: the loss falls to the floor
#
# The loss is the cross-entropy, $-\ln p(\text{the true next character})$, averaged over the
# 61 pairs. At the start every character is about equally likely, so the loss is near
# $\ln 17 \approx 2.83$; after 150 steps it is just above the floor.

# %% [markdown] lang="zh"
# ## 训练：损失降到下限
#
# 损失是交叉熵 $-\ln p(\text{正确的下一个字符})$，对 61 对样本取平均。一开始每个字符的可能性都差不多，
# 损失接近 $\ln 17 \approx 2.83$；150 步之后，它只比下限高一点点。

# %%
print("loss every 25 steps:", " -> ".join(f"{loss:.3f}" for loss in losses[::25] + losses[-1:]))
print(f"ln 17 = {np.log(17):.3f}; the floor = {floor:.3f}")
assert len(losses) == 150 and floor <= losses[-1] < 2 * floor and losses[0] > 2.5

# %% [markdown] lang="en"
# At the ambiguous window the trained model splits its bet, as it must:

# %% [markdown] lang="zh"
# 在那个有歧义的窗口上，训练好的模型把概率对半分开，它也只能这样：

# %%
with torch.no_grad():
    ids = torch.tensor([[model.chars.index(c) for c in "mpty dumpty "]])
    p = torch.softmax(model.logits(ids)[0], -1)
for i in p.argsort(descending=True)[:3].tolist():
    print(f"  p({model.chars[i]!r}) = {p[i]:.3f}")
assert abs(p[model.chars.index("h")] - 0.5) < 0.1 and abs(p[model.chars.index("s")] - 0.5) < 0.1

# %% [markdown] lang="en"
# ## Softmax and log-softmax, with numbers
#
# The model's last layer gives **scores** (logits) $z$, any real numbers. Softmax turns them
# into probabilities: $p_i = e^{z_i} / \sum_j e^{z_j}$. The loss needs $\ln p_i$, and computing
# it as "softmax, then log" loses precision when a $p_i$ is tiny. **Log-softmax** computes it
# directly: $\ln p_i = z_i - \ln \sum_j e^{z_j}$, the second term (*logsumexp*) being one number
# for the whole row. With the scores $z = (2.0, 1.0, 0.1)$ of `explain basics`:

# %% [markdown] lang="zh"
# ## softmax 和对数 softmax，代入数字
#
# 模型最后一层给出的是**分数**（logits）$z$，可以是任意实数。softmax 把它们变成概率：
# $p_i = e^{z_i} / \sum_j e^{z_j}$。损失函数需要的是 $\ln p_i$，如果先算 softmax 再取对数，
# 当某个 $p_i$ 非常小时会损失精度。**对数 softmax** 直接计算它：$\ln p_i = z_i - \ln \sum_j e^{z_j}$，
# 第二项（*logsumexp*）对整行来说是同一个数。用 `explain basics` 里的分数 $z = (2.0, 1.0, 0.1)$：

# %%
z = net.SOFTMAX_Z
p = net.softmax(z)
lse = np.log(np.exp(z).sum())
print("z                 =", z)
print("softmax(z)        =", p.round(4), " sum:", p.sum())
print(f"logsumexp(z)      = ln(e^2 + e^1 + e^0.1) = {lse:.4f}")
print("log_softmax(z)    =", net.log_softmax(z).round(4))
print("ln(softmax(z))    =", np.log(p).round(4))
assert np.allclose(p.round(3), [0.659, 0.242, 0.099])
assert round(lse, 3) == 2.417
assert np.allclose(net.log_softmax(z).round(3), [-0.417, -1.417, -2.317])
assert np.allclose(net.log_softmax(z), torch.log_softmax(torch.tensor(z), 0).numpy())

# %% [markdown] lang="en"
# ### Exercise 2
#
# The log-softmax of $z = (2.0, 1.0, 0.1)$: three numbers, to three decimals.

# %% [markdown] lang="zh"
# ### 练习 2
#
# $z = (2.0, 1.0, 0.1)$ 的对数 softmax：三个数，保留三位小数。

# %%
answer = None  # three numbers, e.g. [-1.0, -2.0, -3.0]
learn.check("nextchar.log_softmax", answer)

# %% tags=["solution"]
lse_by_hand = np.log(np.exp(2.0) + np.exp(1.0) + np.exp(0.1))
assert learn.check("nextchar.log_softmax", np.array([2.0, 1.0, 0.1]) - lse_by_hand)

# %% [markdown] lang="en"
# ## Temperature
#
# Before the softmax, the scores can be divided by a **temperature** $T$:
# $p = \mathrm{softmax}(z / T)$. $T \lt 1$ stretches the gaps between scores, so the largest
# probability grows (a sharper, more predictable choice); $T \gt 1$ shrinks them, towards equal
# probabilities (flatter, more surprising text). The **entropy** $-\sum_i p_i \ln p_i$ measures
# how spread out a distribution is: 0 for a certain choice, $\ln 3 \approx 1.099$ for three
# equal ones.

# %% [markdown] lang="zh"
# ## 温度
#
# 在 softmax 之前，可以先把分数除以一个**温度** $T$：$p = \mathrm{softmax}(z / T)$。
# $T \lt 1$ 会拉大分数之间的差距，最大的概率变得更大（选择更尖锐、更可预测）；$T \gt 1$ 会缩小差距，
# 概率趋于相等（更平坦，生成的文本更出人意料）。**熵** $-\sum_i p_i \ln p_i$ 衡量分布有多分散：
# 完全确定时为 0，三个选项等概率时为 $\ln 3 \approx 1.099$。

# %%
for T in net.TEMPERATURES:
    q = net.softmax(z / T)
    print(f"T = {T}:  softmax(z / T) = {q.round(3)}   max p = {q.max():.3f}"
          f"   entropy = {net.entropy(q):.3f}")
maxes = [net.softmax(z / T).max() for T in net.TEMPERATURES]
entropies = [net.entropy(net.softmax(z / T)) for T in net.TEMPERATURES]
assert [round(m, 3) for m in maxes] == [0.864, 0.659, 0.502]
assert [round(e, 3) for e in entropies] == [0.454, 0.847, 1.026] and entropies[-1] < np.log(3)

# %% [markdown] lang="en"
# ### Exercise 3
#
# What is the largest probability of $\mathrm{softmax}(z / 0.5)$ for $z = (2.0, 1.0, 0.1)$?

# %% [markdown] lang="zh"
# ### 练习 3
#
# 当 $z = (2.0, 1.0, 0.1)$ 时，$\mathrm{softmax}(z / 0.5)$ 中最大的概率是多少？

# %%
answer = None  # your number here
learn.check("nextchar.temperature", answer)

# %% tags=["solution"]
e = np.exp(np.array([2.0, 1.0, 0.1]) / 0.5)
assert learn.check("nextchar.temperature", e.max() / e.sum())

# %% [markdown] lang="en"
# ## Writing: the window slides
#
# To write, the model reads the window, draws the next character from its probabilities,
# drops the oldest character of the window and appends the new one. Started from the first 12
# characters, each line below is one step: exactly what the model was given, and what it chose.

# %% [markdown] lang="zh"
# ## 续写：窗口向前滑动
#
# 生成文本时，模型读入窗口，按自己给出的概率抽出下一个字符，然后丢掉窗口里最早的字符，
# 把新字符接到末尾。从文本的前 12 个字符开始，下面每一行是一步：模型读到的正是方括号里的内容，
# 箭头后是它选出的字符。

# %%
steps = net.generate_steps(model, text[:12], n=30, seed=0)
for i, (window, chosen) in enumerate(steps[:14]):
    print(f"{i + 1:3}  [{shown(window)}] -> [{shown(chosen)}]")
print("...")
print(text[:12] + "".join(c for _, c in steps))
# each window is the one before it, shifted by one, with the chosen character appended
assert all(w2 == w1[1:] + c for (w1, c), (w2, _) in zip(steps, steps[1:]))

# %% [markdown] lang="en"
# ## Dropout: two conventions, one expectation
#
# **Dropout** fights overfitting: during training each unit is set to 0 with probability $p$,
# so the network cannot lean on any single one. But then a unit's average output during
# training is $(1-p)\,a$, not $a$, and something must make up for it:
#
# - the article's convention: train with $a \cdot m$ ($m$ is 1 or 0), and at test time
#   multiply by $(1 - p)$;
# - **inverted dropout** (PyTorch's `F.dropout`, which glassformer uses): train with
#   $a \cdot m / (1 - p)$, and leave the test untouched.
#
# With $a = (1, 2, 3, 4)$ and $p = 0.25$, the exact mean over all $2^4$ masks, the mean over
# 20,000 random masks, and the test output, for each:

# %% [markdown] lang="zh"
# ## Dropout：两种约定，同一个期望
#
# **Dropout** 用来对抗过拟合：训练时每个单元以概率 $p$ 被置为 0，网络就没法依赖某一个单元。
# 但这样一来，训练时单元输出的平均值是 $(1-p)\,a$ 而不是 $a$，必须在某处补偿：
#
# - 文章的约定：训练时用 $a \cdot m$（$m$ 为 1 或 0），测试时乘以 $(1 - p)$；
# - **反向 dropout**（PyTorch 的 `F.dropout`，glassformer 用的就是它）：训练时用 $a \cdot m / (1 - p)$，
#   测试时什么都不做。
#
# 取 $a = (1, 2, 3, 4)$、$p = 0.25$，分别给出两种约定下对全部 $2^4$ 种掩码的精确平均、
# 20,000 个随机掩码的平均，以及测试时的输出：

# %%
a, p_drop = net.DROPOUT_A, net.DROPOUT_P
exact = net.dropout_expectations(a, p_drop)
sampled = net.dropout_samples(a, p_drop)
print("scale at test: exact mean", exact["test_scaled"], " sampled", sampled["test_scaled"].round(3))
print("               test a(1-p) =", a * (1 - p_drop))
print("inverted:      exact mean", exact["inverted"], " sampled", sampled["inverted"].round(3))
print("               test a =", a)
print("three rows of torch's F.dropout in training:\n", sampled["inverted_rows"][:3].round(3))
assert p_drop == 0.25 and net.DROPOUT_SAMPLES == 20_000
assert np.allclose(exact["test_scaled"], [0.75, 1.5, 2.25, 3.0])
assert np.allclose(exact["inverted"], a)

# %% [markdown] lang="en"
# Either way, training and testing see the same average; the two outputs differ by the factor
# $(1 - p)$ alone, which the next layer's weights absorb. In the rows above, a kept unit is
# not $a$ but $a / 0.75$.

# %% [markdown] lang="zh"
# 无论哪种约定，训练和测试看到的平均值都相同；两者只差一个因子 $(1 - p)$，下一层的权重会把它吸收掉。
# 在上面几行里，保留下来的单元不是 $a$，而是 $a / 0.75$。

# %% [markdown] lang="en"
# ### Exercise 4
#
# With inverted dropout and $p = 0.25$, what value does each unit of $a = (1, 2, 3, 4)$ take
# when it is kept? Four numbers.

# %% [markdown] lang="zh"
# ### 练习 4
#
# 用反向 dropout、$p = 0.25$ 时，$a = (1, 2, 3, 4)$ 的每个单元在被保留时取什么值？四个数。

# %%
answer = None  # four numbers: a kept unit's value for a = (1, 2, 3, 4)
learn.check("nextchar.dropout_kept", answer)

# %% tags=["solution"]
assert learn.check("nextchar.dropout_kept", np.array([1.0, 2.0, 3.0, 4.0]) / (1 - 0.25))

# %% [markdown] lang="en"
# ## Now your own model
#
# The window model sees 12 characters, each in a fixed slot. A GPT reads every character
# before it (up to its block size) with attention, which the next chapters open up. Train one
# on glassformer's bundled corpus of village stories: the default recipe of `glassformer train
# lm` (one layer, 128 wide, a 64-character block), shortened to 100 steps, a few seconds on a
# CPU. Then ask it for the next character after a prompt of your choice, at the three
# temperatures above.

# %% [markdown] lang="zh"
# ## 现在轮到你自己的模型
#
# 窗口模型只看 12 个字符，每个字符占一个固定的位置。GPT 则用注意力读入前面所有的字符
# （最多到它的块长度），后面几章会把注意力拆开来看。在 glassformer 自带的乡村故事语料上训练一个：
# 用 `glassformer train lm` 的默认配方（一层、宽 128、块长 64 个字符），缩短到 100 步，
# 在 CPU 上只要几秒钟。然后给它一个你自己选的提示，看它在上面三个温度下对下一个字符的概率。

# %%
from glassformer.checkpoint import load
from glassformer.data.corpus import bundled_corpus
from glassformer.explain.generation import stages
from glassformer.training.lm import train_lm

print("\n".join(bundled_corpus().splitlines()[:6]), "\n...")
steps_100 = ["max_iters=100", "lr_decay_iters=100", "eval_interval=100"]
metrics = train_lm("runs/nextchar", overrides=steps_100, progress=False, overwrite=True)
gpt, tok = load("runs/nextchar")
print(f"validation loss {metrics['val_loss']:.3f}; a vocabulary of {tok.vocab_size} tokens,")
print(f"so a uniform guess would score ln {tok.vocab_size} = {np.log(tok.vocab_size):.2f}")
cfg = gpt.config
assert (cfg.n_layer, cfg.n_embd, cfg.block_size) == (1, 128, 64) and metrics["val_loss"] < 1.5

# %% [markdown] lang="en"
# Mira greets someone whose name starts with N. The corpus has two such names, Nora and Nils,
# so the model should hesitate between their second letters, `o` and `i`; the temperature
# sharpens or flattens that hesitation as it did the three scores above.

# %% [markdown] lang="zh"
# Mira 在和一个名字以 N 开头的人打招呼。语料里有两个这样的名字：Nora 和 Nils，所以模型应该在它们的
# 第二个字母 `o` 和 `i` 之间犹豫；温度会像上面三个分数那样，让这种犹豫变得更尖锐或更平坦。

# %%
from glassformer.data import corpus

assert sorted(n for n in corpus.NAMES if n.startswith("N")) == ["Nils", "Nora"]
prompt = "MIRA: Good evening, N"  # try your own: whose name comes next?
with torch.no_grad():
    logits = gpt.next_logits(torch.tensor([tok.encode(prompt)]))[0]
labels = [shown(tok.token(i)) for i in range(tok.vocab_size)]
print(f"after {prompt!r}:")
for T in net.TEMPERATURES:
    view, _ = stages(logits, T, None, None, labels, show=4)
    top = [f"{c['token']!r} {c['temperature']:.3f}" for c in view["candidates"]]
    print(f"  T = {T}: " + "  ".join(top))
p_own = logits.softmax(-1).numpy()
assert np.isclose(p_own.sum(), 1, atol=1e-5)

# %% [markdown] lang="en"
# The same run in the terminal (`--overwrite`: the cell above has already written
# `runs/nextchar`), sampled, and opened in the explorer (its Next token panel has the
# temperature slider; the Steps tab shows every matrix of the forward pass):
#
# ```bash
# glassformer train lm --out runs/nextchar --overwrite \
#     --set max_iters=100 --set lr_decay_iters=100 --set eval_interval=100
# glassformer sample --model runs/nextchar --prompt "MIRA: Good evening, N" \
#     --max-new-tokens 80 --temperature 0.5
# glassformer explore --model runs/nextchar
# ```
#
# Next: [3. Tokens](tokens.md), where the symbols become more than single characters
# ([the course](../index.md)).

# %% [markdown] lang="zh"
# 在终端里做同样的训练（`--overwrite`：上面的单元已经写过 `runs/nextchar` 了）、采样，
# 并在浏览器里打开探索器（它的“下一个词元”面板有温度滑块；“步骤”页展示前向计算的每一个矩阵）：
#
# ```bash
# glassformer train lm --out runs/nextchar --overwrite \
#     --set max_iters=100 --set lr_decay_iters=100 --set eval_interval=100
# glassformer sample --model runs/nextchar --prompt "MIRA: Good evening, N" \
#     --max-new-tokens 80 --temperature 0.5
# glassformer explore --model runs/nextchar
# ```
#
# 下一章：[3. 词元与分词器](tokens.md)，符号不再只是单个字符（[课程目录](../index.md)）。
