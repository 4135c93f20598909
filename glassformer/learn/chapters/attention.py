# %% [markdown] lang="en"
# # 4. Attention by hand
#
# The articles work attention out on paper: a short dialogue, a vocabulary of its words, vectors
# of only `d_model` = 6 numbers and queries, keys and values of 4, so that every matrix fits on
# a page. glassformer builds exactly that model (one encoder layer, one decoder layer), trains it
# for a moment so that it really answers the first line with the second, and records every
# matrix it computes. This chapter shows them in the articles' order — ids, embeddings,
# positions, Q/K/V, $QK^\top$, $/\sqrt{d_k}$, the mask, softmax, $\times V$, several heads, the
# residual connection, LayerNorm and the feed-forward network — and recomputes one entry of
# each kind by hand.

# %% [markdown] lang="zh"
# # 4. 手算注意力
#
# 文章在纸上把注意力算了一遍：一段很短的对话，用它的词组成词表，词向量只有 `d_model` = 6 个数，
# 查询、键、值各 4 个数，这样每个矩阵都能写在一页纸上。glassformer 搭的正是这个模型（一层编码器、
# 一层解码器），先训练片刻，让它真的能用第二句回答第一句，再把它算出的每一个矩阵都记录下来。
# 本章按文章的顺序展示它们——编号、词嵌入、位置编码、Q/K/V、$QK^\top$、$/\sqrt{d_k}$、掩码、
# softmax、$\times V$、多头注意力、残差连接、层归一化和前馈网络——并且每一类都挑一个数亲手算一遍。

# %%
import numpy as np
from IPython.display import HTML, display

from glassformer import learn
from glassformer.explain.narration import narrate
from glassformer.explain.render.notebook import grid_html
from glassformer.explain.walkthrough import CORPUS, builtin_walkthrough

w = builtin_walkthrough()  # trained for a moment (seeded), then run on the first line
print(w)
print("corpus:", *CORPUS, sep="\n  ")
c = w.config
print(f"d_model {c['d_model']}, Q/K/V width d_k {c['d_head']}, heads {c['n_head']}, d_ff {c['d_ff']}")
# The articles' two lines, their d_model and their Q/K/V width:
assert CORPUS[:2] == ["when you play the game of thrones", "you win or you die"]
assert c["d_model"] == 6 and c["d_head"] == 4
assert w.output == CORPUS[1]  # the model answers the first line with the second

# %% [markdown] lang="en"
# The first two lines are the articles'; glassformer adds a third so that each line answers the
# one before it. `w` holds the walkthrough: every step has an id, the op that computes it, the
# ids of its inputs and the values the model computed, as NumPy arrays. The helper below draws a
# step as a table with its rows and columns labelled (hover a cell for four decimals), under its
# title and formula from the walkthrough's own explanations.

# %% [markdown] lang="zh"
# 前两句来自文章；glassformer 加了第三句，使每一句都回应上一句。`w` 保存了整个演算过程：每一步都有编号、
# 计算它的运算、输入步骤的编号，以及模型算出的数值（NumPy 数组）。下面的小函数把一步画成表格，
# 行和列都有标签（鼠标悬停可以看到四位小数），上方是这一步的标题和公式，取自演算过程自带的中英文说明。

# %%
def view(step_id, walk=None):
    """One step of a walkthrough as a labelled table, under its title and formula in both languages."""
    step = (walk or w).step(step_id)
    values = step.values.astype(np.float64)
    shape = " × ".join(str(n) for n in values.shape)
    values = np.atleast_2d(values)
    rows = step.rows if step.rows and len(step.rows) == values.shape[0] else [str(i) for i in range(values.shape[0])]
    cols = step.cols if step.cols and len(step.cols) == values.shape[1] else [str(j) for j in range(values.shape[1])]
    finite = np.abs(values[np.isfinite(values)])
    unsigned = step.display in ("probabilities", "mask")
    scale = 1.0 if unsigned else float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    (en, _, formula), (zh, _, _) = narrate(step, "en", True), narrate(step, "zh", True)
    formula = "" if formula in en else f"{formula}   "  # "W_Q" is its own formula
    learn.show(en=f"{en}\n{formula}shape {shape}", zh=f"{zh}\n{formula}形状 {shape}")
    table = grid_html(values, rows, cols, signed=not unsigned, scale=scale, caption=step.id)
    table = table.replace("<table ", '<table class="gf-grid" ', 1)  # a class: the site's own table style stays off
    display(HTML(f'<div style="overflow-x:auto">{table}</div>'))


# %% [markdown] lang="en"
# ## Token ids and the vocabulary
#
# The vocabulary is every distinct word of the three lines, after four special tokens: padding,
# an unknown word, the start and the end of a sentence. The sentence becomes the ids of its
# words, and the encoder's input ends with `<end>`.

# %% [markdown] lang="zh"
# ## 词编号和词表
#
# 词表由四个特殊符号（填充、未知词、句子开始、句子结束）加上三句话里每个不同的词组成。
# 句子被换成它每个词的编号，编码器的输入以 `<end>` 结尾。

# %%
vocab = [word for word, _ in w.step("vocab").table]
print("vocabulary:", "  ".join(f"{i}:{word}" for i, word in enumerate(vocab)))
ids = w.step("enc.ids").values
tokens = w.step("enc.ids").cols
print("tokens:", tokens)
print("ids:   ", ids.tolist())
assert [vocab[i] for i in ids] == CORPUS[0].split() + ["<end>"]
assert len(vocab) == w.config["src_vocab_size"]

# %% [markdown] lang="en"
# ## Embeddings
#
# The embedding matrix $E$ has one learned row of `d_model` = 6 numbers per word of the
# vocabulary. Each id picks its row: $X = E[\text{ids}]$, one row per token.

# %% [markdown] lang="zh"
# ## 词嵌入
#
# 嵌入矩阵 $E$ 给词表中的每个词一行可学习的 6 维向量（`d_model` = 6）。每个编号取出对应的一行：
# $X = E[\text{ids}]$，每个词元一行。

# %%
view("enc.embed.table")
view("enc.embed.tokens")
E, X_tokens = w.step("enc.embed.table").values, w.step("enc.embed.tokens").values
assert E.shape == (len(vocab), 6) and X_tokens.shape == (len(tokens), 6)
assert np.array_equal(X_tokens, E[ids])

# %% [markdown] lang="en"
# ## Positional encoding
#
# Attention itself ignores word order, so a fixed pattern of sines and cosines of the position
# is added. Even columns hold sines, odd columns cosines, each pair at a slower frequency:
#
# $$PE_{(pos,\,2i)} = \sin\frac{pos}{10000^{2i/d}}, \qquad PE_{(pos,\,2i+1)} = \cos\frac{pos}{10000^{2i/d}}$$

# %% [markdown] lang="zh"
# ## 位置编码
#
# 注意力本身不管词的顺序，所以要加上一个由位置的正弦和余弦组成的固定模式。偶数列是正弦，奇数列是余弦，
# 每往后一对列，频率就越低：
#
# $$PE_{(pos,\,2i)} = \sin\frac{pos}{10000^{2i/d}}, \qquad PE_{(pos,\,2i+1)} = \cos\frac{pos}{10000^{2i/d}}$$

# %%
view("enc.embed.positions")
pos = np.arange(len(tokens))[:, None]  # (8, 1)
angle = pos / 10000 ** (np.arange(0, 6, 2) / 6)  # (8, 3): one frequency per sin/cos pair
pe = np.zeros((len(tokens), 6))
pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
print("PE[1, 0] = sin(1) =", round(np.sin(1.0), 4), "  PE[1, 1] = cos(1) =", round(np.cos(1.0), 4))
assert np.allclose(pe, w.step("enc.embed.positions").values, atol=1e-6)  # float32 sines

# %% [markdown] lang="en"
# ## The first layer's input: embedding plus position
#
# What each token is, plus where it stands: $X = E[\text{ids}] + PE$. This is the matrix the
# attention reads.

# %% [markdown] lang="zh"
# ## 第一层的输入：词嵌入加位置编码
#
# 这个词是什么，加上它在哪里：$X = E[\text{ids}] + PE$。注意力读的就是这个矩阵。

# %%
view("enc.embed.sum")
X = w.step("enc.embed.sum").values
assert np.allclose(X, X_tokens + pe, atol=1e-6)

# %% [markdown] lang="en"
# ## Queries, keys and values
#
# Three learned matrices turn each row of $X$ into a query (what this word is looking for), a
# key (what it offers to be found by) and a value (what it passes on):
#
# $$Q = X W_Q^\top + b_Q, \quad K = X W_K^\top + b_K, \quad V = X W_V^\top + b_V$$
#
# Each $W$ is stored as PyTorch stores it, (out, in) = 4 × 6, hence the transpose; $Q$, $K$ and
# $V$ are 8 × 4: one row per token, $d_k$ = 4 numbers each.

# %% [markdown] lang="zh"
# ## 查询、键和值
#
# 三个可学习的矩阵把 $X$ 的每一行分别变成查询（这个词在找什么）、键（它凭什么被找到）和值（它传递什么）：
#
# $$Q = X W_Q^\top + b_Q, \quad K = X W_K^\top + b_K, \quad V = X W_V^\top + b_V$$
#
# 每个 $W$ 按 PyTorch 的方式存成（输出，输入）= 4 × 6，所以要转置；$Q$、$K$、$V$ 都是 8 × 4：
# 每个词元一行，每行 $d_k$ = 4 个数。

# %%
for step_id in ("enc.0.self.h0.q.weight",
                "enc.0.self.h0.q.bias",
                "enc.0.self.h0.q"):
    view(step_id)

# %% [markdown] lang="en"
# One entry by hand: the query of *when* in channel 0 is the dot product of the row of *when*
# in $X$ with row 0 of $W_Q$, plus the bias.

# %% [markdown] lang="zh"
# 亲手算一个数：*when* 的查询在第 0 个通道上的值，就是 $X$ 中 *when* 那一行和 $W_Q$ 第 0 行的点积，再加上偏置。

# %%
W_q, b_q, Q = (w.step(f"enc.0.self.h0.q{part}").values for part in (".weight", ".bias", ""))
x, row = X[0], W_q[0]
def num(v):
    return f"({v:.3f})" if v < 0 else f"{v:.3f}"


print(" + ".join(f"{num(a)}×{num(b)}" for a, b in zip(x, row)), "+", num(b_q[0]))
q00 = float(x.astype(np.float64) @ row + b_q[0])
print(f"= {q00:.6f}   the walkthrough's Q[when, 0] = {Q[0, 0]:.6f}")
assert abs(q00 - Q[0, 0]) < 1e-5  # float32 model vs float64 by hand: six products of size ~1

# %% [markdown] lang="en"
# The keys and the values come the same way from their own matrices:

# %% [markdown] lang="zh"
# 键和值也是这样，由各自的矩阵算出：

# %%
for step_id in ("enc.0.self.h0.k.weight", "enc.0.self.h0.k.bias", "enc.0.self.h0.k",
                "enc.0.self.h0.v.weight", "enc.0.self.h0.v.bias", "enc.0.self.h0.v"):
    view(step_id)
K, V = w.step("enc.0.self.h0.k").values, w.step("enc.0.self.h0.v").values
assert Q.shape == K.shape == V.shape == (len(tokens), 4)

# %% [markdown] lang="en"
# ## Scores: QKᵀ
#
# Every query meets every key in a dot product: $QK^\top$ is 8 × 8, row *i* saying how well
# token *i*'s query matches each key. $K^\top$ is $K$ turned on its side.

# %% [markdown] lang="zh"
# ## 分数：QKᵀ
#
# 每个查询都和每个键做一次点积：$QK^\top$ 是 8 × 8，第 *i* 行表示第 *i* 个词元的查询和每个键有多匹配。
# $K^\top$ 就是把 $K$ 转过来。

# %%
view("enc.0.self.h0.kT")
view("enc.0.self.h0.scores")
scores = w.step("enc.0.self.h0.scores").values
assert scores.shape == (len(tokens), len(tokens))
assert np.allclose(scores, Q.astype(np.float64) @ K.T, atol=1e-5)

# %% [markdown] lang="en"
# ## Scaling: divide by √d_k
#
# A dot product of $d_k$ numbers grows with $d_k$; large scores would make the softmax pick one
# key and ignore the rest. Dividing by $\sqrt{d_k} = \sqrt{4} = 2$ keeps them moderate.

# %% [markdown] lang="zh"
# ## 缩放：除以 √d_k
#
# $d_k$ 个数的点积会随 $d_k$ 变大；分数太大时，softmax 几乎只选一个键，忽略其余的。除以
# $\sqrt{d_k} = \sqrt{4} = 2$ 让分数保持适中。

# %%
view("enc.0.self.h0.scaled")
scaled = w.step("enc.0.self.h0.scaled").values
assert np.allclose(scaled, scores / np.sqrt(4), atol=1e-6)

# %% [markdown] lang="en"
# ### Exercise 1
#
# The scaled score of the query *game* with the key *thrones*, from $Q$ and $K$ above.

# %% [markdown] lang="zh"
# ### 练习 1
#
# 用上面的 $Q$ 和 $K$，算出查询 *game* 与键 *thrones* 的缩放分数。

# %%
answer = None  # your number here
learn.check("attention.scaled_score", answer)

# %% tags=["solution"]
assert learn.check("attention.scaled_score", Q[4] @ K[6] / 2)  # rows: game is token 4, thrones token 6

# %% [markdown] lang="en"
# ## The mask
#
# The encoder reads the whole question at once, so its scores have no mask. The decoder writes
# the answer word by word: while it predicts the word after *win* it must not see *or*, which
# comes later. Its causal mask keeps key $j$ for query $i$ only where $j \le i$; the scores it
# removes become $-\infty$. Here is the decoder's self-attention on the answer it wrote,
# `<start> you win or you die`:

# %% [markdown] lang="zh"
# ## 掩码
#
# 编码器一次读完整个问题，它的分数不需要掩码。解码器则一个词一个词地写出回答：预测 *win* 后面的词时，
# 它不能看到后面才出现的 *or*。因果掩码只让查询 $i$ 看到 $j \le i$ 的键 $j$；被遮住的分数变成
# $-\infty$。下面是解码器对它写出的回答 `<start> you win or you die` 做的自注意力：

# %%
view("dec.mask")
view("dec.0.self.h0.scaled")
view("dec.0.self.h0.masked")
keep = w.step("dec.mask").values
masked = w.step("dec.0.self.h0.masked").values
assert np.array_equal(keep, np.tril(np.ones_like(keep)))  # j <= i
assert np.all(masked[~keep] == -np.inf)
assert np.array_equal(masked[keep], w.step("dec.0.self.h0.scaled").values[keep])

# %% [markdown] lang="en"
# ## Softmax: scores become attention weights
#
# Each row of scaled scores becomes probabilities:
#
# $$a_{ij} = \frac{e^{s_{ij}}}{\sum_k e^{s_{ik}}}$$
#
# so that row *i* says how much token *i* attends to each token, and adds up to 1.

# %% [markdown] lang="zh"
# ## softmax：分数变成注意力权重
#
# 每一行缩放后的分数都变成概率：
#
# $$a_{ij} = \frac{e^{s_{ij}}}{\sum_k e^{s_{ik}}}$$
#
# 第 *i* 行表示第 *i* 个词元对每个词元的关注程度，加起来等于 1。

# %%
view("enc.0.self.h0.probs")
probs = w.step("enc.0.self.h0.probs").values

# %% [markdown] lang="en"
# One weight by hand, from the row of *when* in the scaled scores: how much *when* attends to
# *you*.

# %% [markdown] lang="zh"
# 亲手算一个权重：用缩放后分数中 *when* 那一行，算 *when* 对 *you* 的关注程度。

# %%
s = scaled[0].astype(np.float64)
e = np.exp(s)
print("e^s   =", e.round(4))
print(f"a[when, you] = e^{s[1]:.4f} / {e.sum():.4f} = {e[1] / e.sum():.6f}   walkthrough: {probs[0, 1]:.6f}")
assert abs(e[1] / e.sum() - probs[0, 1]) < 1e-6  # probabilities below 1 in float32
assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)

# %% [markdown] lang="en"
# In the decoder, $e^{-\infty} = 0$: the masked keys get weight 0, and `<start>`, which may see
# only itself, attends to itself with weight 1.

# %% [markdown] lang="zh"
# 在解码器里，$e^{-\infty} = 0$：被遮住的键权重为 0；`<start>` 只能看到它自己，所以对自己的权重是 1。

# %%
view("dec.0.self.h0.probs")
dec_probs = w.step("dec.0.self.h0.probs").values
assert np.all(dec_probs[~keep] == 0) and dec_probs[0, 0] == 1.0

# %% [markdown] lang="en"
# ### Exercise 2
#
# The attention weights of the decoder's query *win* (row 2), from its row of scaled scores and
# the mask: six numbers.

# %% [markdown] lang="zh"
# ### 练习 2
#
# 用解码器缩放后的分数和掩码，算出查询 *win*（第 2 行）的注意力权重：六个数。

# %%
answer = None  # six numbers
learn.check("attention.softmax_row", answer)

# %% tags=["solution"]
row = w.step("dec.0.self.h0.scaled").values[2].astype(np.float64)
row[3:] = -np.inf  # the mask: "win" may not see "or", "you", "die"
assert learn.check("attention.softmax_row", np.exp(row) / np.exp(row).sum())

# %% [markdown] lang="en"
# ## Weighted values: × V
#
# Each token's output is the average of the values, weighted by its attention row:
# $\text{head} = \text{softmax}\!\left(QK^\top/\sqrt{d_k}\right) V$, 8 × 4. Then $W_O$ (6 × 4)
# brings it back to `d_model` = 6 numbers per token.

# %% [markdown] lang="zh"
# ## 对值加权：× V
#
# 每个词元的输出是各个值向量按它那一行注意力权重的加权平均：
# $\text{head} = \text{softmax}\!\left(QK^\top/\sqrt{d_k}\right) V$，8 × 4。
# 然后 $W_O$（6 × 4）把它变回每个词元 `d_model` = 6 个数。

# %%
view("enc.0.self.h0.out")
view("enc.0.self.out.weight")
view("enc.0.self.out")
head = w.step("enc.0.self.h0.out").values
assert np.allclose(head, probs.astype(np.float64) @ V, atol=1e-5)

# %% [markdown] lang="en"
# ### Exercise 3
#
# The head's output for *when* in channel 0: its attention weights times channel 0 of the
# values, summed.

# %% [markdown] lang="zh"
# ### 练习 3
#
# 注意力头对 *when* 的输出的第 0 个通道：它的注意力权重乘以各个值向量的第 0 个通道，再求和。

# %%
answer = None  # your number here
learn.check("attention.output_entry", answer)

# %% tags=["solution"]
assert learn.check("attention.output_entry", sum(probs[0, k] * V[k, 0] for k in range(len(tokens))))

# %% [markdown] lang="en"
# ## Multi-head attention
#
# With two heads the model computes attention twice, each head with its own $W_Q$, $W_K$, $W_V$
# of width 4, so that each can look for something different. The two 8 × 4 outputs are put
# side by side (8 × 8), and $W_O$ (6 × 8) mixes them back to 6 numbers per token:
#
# $$\text{MultiHead}(X) = \text{Concat}(\text{head}_1, \text{head}_2)\, W_O^\top + b_O$$
#
# `builtin_walkthrough(heads=2)` is the same example trained with two heads (a model of its
# own, so its numbers differ from the one-head model's):

# %% [markdown] lang="zh"
# ## 多头注意力
#
# 有两个头时，模型把注意力算两遍，每个头有自己宽度为 4 的 $W_Q$、$W_K$、$W_V$，这样每个头可以关注不同的东西。
# 两个 8 × 4 的输出并排拼接（8 × 8），再由 $W_O$（6 × 8）混合回每个词元 6 个数：
#
# $$\text{MultiHead}(X) = \text{Concat}(\text{head}_1, \text{head}_2)\, W_O^\top + b_O$$
#
# `builtin_walkthrough(heads=2)` 是同一个例子用两个头训练出的模型（另一个模型，所以数值和单头模型不同）：

# %%
w2 = builtin_walkthrough(heads=2)
for step_id in ("enc.0.self.h0.probs", "enc.0.self.h1.probs",
                "enc.0.self.h0.out", "enc.0.self.h1.out",
                "enc.0.self.concat", "enc.0.self.out.weight", "enc.0.self.out"):
    view(step_id, w2)
heads = [w2.step(f"enc.0.self.h{h}.out").values for h in (0, 1)]
concat = w2.step("enc.0.self.concat").values
W_o, b_o = w2.step("enc.0.self.out.weight").values, w2.step("enc.0.self.out.bias").values
assert w2.config["n_head"] == 2 and concat.shape == (len(tokens), 8) and W_o.shape == (6, 8)
assert np.array_equal(concat, np.concatenate(heads, axis=-1))
assert np.allclose(w2.step("enc.0.self.out").values, concat.astype(np.float64) @ W_o.T + b_o, atol=1e-5)

# %% [markdown] lang="en"
# ## The residual connection and LayerNorm
#
# Back to the one-head model. The attention's output is added to its own input, $X +
# \text{Attention}(X)$: the residual connection lets each layer add a correction instead of
# replacing what it read. This model, like the 2017 paper, normalises after the sum ("Add &
# Norm"). LayerNorm works on each row alone: its mean $\mu$, its variance $\sigma^2$, then
#
# $$\text{LayerNorm}(x) = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta,\quad \varepsilon = 10^{-5}$$
#
# with a learned scale $\gamma$ and shift $\beta$ per column. The walkthrough shows
# $\sqrt{\sigma^2 + \varepsilon}$ as each row's standard deviation.

# %% [markdown] lang="zh"
# ## 残差连接和层归一化
#
# 回到单头模型。注意力的输出加回到它自己的输入上：$X + \text{Attention}(X)$。残差连接让每一层在读到的内容上
# 加一个修正，而不是把它替换掉。这个模型和 2017 年的论文一样，在相加之后再归一化（“Add & Norm”）。
# 层归一化对每一行单独计算：先求均值 $\mu$ 和方差 $\sigma^2$，再算
#
# $$\text{LayerNorm}(x) = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta,\quad \varepsilon = 10^{-5}$$
#
# 其中每一列有一个可学习的缩放 $\gamma$ 和平移 $\beta$。演算里把 $\sqrt{\sigma^2 + \varepsilon}$ 作为每行的标准差显示。

# %%
for step_id in ("enc.0.self.residual",
                "enc.0.self.norm.mean", "enc.0.self.norm.std",
                "enc.0.self.norm.weight", "enc.0.self.norm.bias",
                "enc.0.self.norm"):
    view(step_id)
residual = w.step("enc.0.self.residual").values
assert np.allclose(residual, X + w.step("enc.0.self.out").values, atol=1e-6)

# %% [markdown] lang="en"
# The row of *when* by hand: its mean, its variance, the normalised row (mean 0, spread 1), then
# $\gamma$ and $\beta$.

# %% [markdown] lang="zh"
# 亲手算 *when* 那一行：均值、方差、归一化后的行（均值 0，离散程度 1），再乘 $\gamma$ 加 $\beta$。

# %%
gamma = w.step("enc.0.self.norm.weight").values
beta = w.step("enc.0.self.norm.bias").values
shown = {part: w.step(f"enc.0.self.norm{part}").values[0] for part in (".mean", ".std", "")}  # row "when"

x = residual[0].astype(np.float64)
mu = x.mean()
var = ((x - mu) ** 2).mean()
normed = (x - mu) / np.sqrt(var + 1e-5)
y = gamma * normed + beta
print(f"x         = {x.round(4)}")
print(f"μ         = {mu:.6f}   walkthrough: {shown['.mean'][0]:.6f}")
print(f"σ²        = {var:.6f}")
print(f"√(σ² + ε) = {np.sqrt(var + 1e-5):.6f}   walkthrough: {shown['.std'][0]:.6f}")
print(f"normed    = {normed.round(4)}   its mean {normed.mean():.0e}, its variance {normed.var():.4f}")
print(f"γ·normed + β = {y.round(4)}")
print(f"walkthrough  = {shown[''].round(4)}")
assert abs(mu - shown[".mean"][0]) < 1e-6
assert abs(np.sqrt(var + 1e-5) - shown[".std"][0]) < 1e-5
assert np.allclose(y, shown[""], atol=1e-5)

# %% [markdown] lang="en"
# ### Exercise 4
#
# One LayerNorm value: the row of *you*, channel 0.

# %% [markdown] lang="zh"
# ### 练习 4
#
# 一个层归一化的值：*you* 那一行的第 0 个通道。

# %%
answer = None  # your number here
learn.check("attention.layer_norm", answer)

# %% tags=["solution"]
x = residual[1].astype(np.float64)
assert learn.check("attention.layer_norm", gamma[0] * (x[0] - x.mean()) / np.sqrt(x.var() + 1e-5) + beta[0])

# %% [markdown] lang="en"
# ## The feed-forward network
#
# Attention mixes information between tokens; the feed-forward network then works on each token
# alone. It widens each row from 6 to `d_ff` = 24 numbers, applies ReLU, and brings it back to 6:
#
# $$\text{FFN}(x) = \max(0,\; x W_{up}^\top + b_{up})\, W_{down}^\top + b_{down}$$
#
# followed by a second Add & Norm. Its result is the encoder's output, what the decoder's
# cross-attention will read (chapter 5).

# %% [markdown] lang="zh"
# ## 前馈网络
#
# 注意力在词元之间交换信息；前馈网络接着对每个词元单独计算。它把每一行从 6 个数扩展到 `d_ff` = 24 个，
# 经过 ReLU，再变回 6 个：
#
# $$\text{FFN}(x) = \max(0,\; x W_{up}^\top + b_{up})\, W_{down}^\top + b_{down}$$
#
# 之后是第二次 Add & Norm。结果就是编码器的输出，解码器的交叉注意力会读它（第 5 章）。

# %%
for step_id in ("enc.0.ffn.up.weight", "enc.0.ffn.up", "enc.0.ffn.act",
                "enc.0.ffn.down.weight", "enc.0.ffn.down",
                "enc.0.ffn.residual", "enc.0.ffn.norm"):
    view(step_id)
up, act = w.step("enc.0.ffn.up").values, w.step("enc.0.ffn.act").values
W_down, b_down = w.step("enc.0.ffn.down.weight").values, w.step("enc.0.ffn.down.bias").values
assert up.shape == (len(tokens), 24) and np.array_equal(act, np.maximum(up, 0))
assert np.allclose(w.step("enc.0.ffn.down").values, act.astype(np.float64) @ W_down.T + b_down, atol=1e-5)
learn.show(en=f"ReLU set {int((act == 0).sum())} of the {act.size} hidden values to 0.",
           zh=f"ReLU 把 {act.size} 个隐藏值中的 {int((act == 0).sum())} 个变成了 0。")

# %% [markdown] lang="en"
# ## Every step, recomputed
#
# The tables above are what the model computed, in float32. `glassformer.explain.recompute`
# defines each op in NumPy, in float64, sharing no code with the model, and recomputes every
# step of the walkthrough from its inputs — the decoder, its cross-attention and the output
# included. Nothing differs:

# %% [markdown] lang="zh"
# ## 每一步都重新算一遍
#
# 上面的表格是模型用 float32 算出来的。`glassformer.explain.recompute` 用 NumPy 以 float64 定义每一种运算，
# 和模型不共用任何代码，并且根据输入重新计算演算中的每一步——包括解码器、交叉注意力和输出。没有一处不同：

# %%
from glassformer.explain import recompute
from glassformer.explain.walkthrough import walkthrough_data

for walk in (w, w2):
    data = walkthrough_data(walk)
    computed = [s for s in data["steps"] if s["op"] not in recompute.LEAVES]
    problems = recompute.check(data)
    print(f"n_head {walk.config['n_head']}: {len(data['steps'])} steps, {len(computed)} computed "
          f"from their inputs, {len(problems)} differ")
    assert problems == []

# %% [markdown] lang="en"
# The whole walkthrough as one page — the same steps, each drawn beside the operands it came
# from, with an architecture diagram and an English/中文 switch (`glassformer explain --html`
# writes this page to a file):

# %% [markdown] lang="zh"
# 整个演算作为一个页面——同样的步骤，每个结果画在算出它的操作数旁边，还有结构图和 English/中文 切换
# （`glassformer explain --html` 会把这个页面写成文件）：

# %%
w

# %% [markdown] lang="en"
# ## Now your own model
#
# The same model, on a dialogue of your own: write a few lines, each answering the one before,
# train the `walkthrough` preset on them (two heads this time) for a couple of seconds, and look
# at the same matrices. The training loop is the one the articles' example uses: gradient
# descent with momentum, written out.

# %% [markdown] lang="zh"
# ## 现在轮到你自己的模型
#
# 同样的模型，换成你自己的对话：写几句话，每一句回应上一句，用 `walkthrough` 预设（这次两个头）在上面训练
# 一两秒，再看同样的矩阵。训练循环和文章例子用的一样：带动量的梯度下降，逐行写出。

# %%
import dataclasses

import torch

from glassformer import checkpoint
from glassformer.data.batches import collate, lm_loss, source_ids
from glassformer.data.tokenizers import WordTokenizer
from glassformer.explain.walkthrough import Subject, model_walkthrough
from glassformer.generation.decode import greedy
from glassformer.model.config import PRESETS
from glassformer.model.seq2seq import Seq2Seq

lines = [  # yours: each line answers the one before
    "where are you going",
    "to the market to buy bread",
    "bring me some milk too",
    "i will and some eggs",
]
tok = WordTokenizer.train("\n".join(lines))
cfg = dataclasses.replace(PRESETS["walkthrough"].model, src_vocab_size=tok.vocab_size,
                          tgt_vocab_size=tok.vocab_size, shared_vocab=True, n_head=2,
                          pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
torch.manual_seed(0)
model = Seq2Seq(cfg)
pairs = [(source_ids(tok.encode(a), cfg.block_size, tok.eos_id), tok.encode(b)) for a, b in zip(lines, lines[1:])]
src, src_mask, tgt_in, tgt_out = collate(pairs, range(len(pairs)), tok.pad_id, tok.bos_id, tok.eos_id)
params = list(model.parameters())
velocity = [torch.zeros_like(p) for p in params]
model.train()
for step in range(150):
    loss = lm_loss(model(src, tgt_in, src_mask), tgt_out, ignore_index=tok.pad_id)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g, v in zip(params, grads, velocity):
            v.mul_(0.9).add_(g)  # v <- 0.9 v + dL/dp
            p.sub_(0.1 * v)  # p <- p - 0.1 v
model.eval()
print(f"loss after 150 steps: {loss.item():.4f}")
for line in lines[:-1]:  # each line, answered greedily
    answer_ids = greedy(model, torch.tensor([source_ids(tok.encode(line), cfg.block_size, tok.eos_id)]))[0]
    print(f"{line!r} -> {tok.decode(answer_ids)!r}")

mine = Subject(model, tok, tok, lines).walkthrough(lines[0])
print(mine)
checkpoint.save(model, "my-dialogue", tokenizer=tok)  # for the commands below
assert recompute.check(walkthrough_data(mine)) == []
again = model_walkthrough("my-dialogue", lines[0])  # loaded back, as `glassformer explain --model` loads it
assert again.output == mine.output

# %% [markdown] lang="en"
# Your model's two attention heads on your first line, the multi-head output, and the first
# LayerNorm:

# %% [markdown] lang="zh"
# 你的模型在你的第一句话上的两个注意力头、多头输出，以及第一个层归一化：

# %%
for step_id in ("enc.0.self.h0.probs", "enc.0.self.h1.probs",
                "enc.0.self.concat", "enc.0.self.out", "enc.0.self.norm"):
    view(step_id, mine)

# %% [markdown] lang="en"
# Change the lines, the seed or `n_head` and run the chapter's cells again. Then, in a terminal
# in the folder where this notebook saved `my-dialogue`: your model's walkthrough step by step,
# and the explorer on it (type your own line, edit a weight, remove a head). The first line is
# for a reader of this page who has not run the notebook: where there is no `my-dialogue` yet,
# it runs the chapter as a script (ten seconds or so), which saves one in the current folder.
#
# ```bash
# test -d my-dialogue || python -m glassformer.learn.chapters.attention > /dev/null
# glassformer explain --model my-dialogue --text "where are you going"
# glassformer explore --model my-dialogue
# ```
#
# The articles' example itself, with two heads: `glassformer explain --heads 2`.
#
# Next: 5. The encoder-decoder — cross-attention, and decoding the answer word by word
# ([the course](../index.md)).

# %% [markdown] lang="zh"
# 改一改这些句子、随机种子或 `n_head`，再把本章的代码重新运行一遍。然后在 notebook 保存 `my-dialogue`
# 的文件夹里打开终端：逐步查看你的模型的演算过程，或者在浏览器里打开探索器（输入你自己的句子、修改权重、
# 去掉某个头）。第一行是给只在网页上阅读、没有运行 notebook 的读者准备的：如果还没有 `my-dialogue`，
# 它会把本章当作脚本运行一遍（大约十秒），在当前文件夹里保存一个。
#
# ```bash
# test -d my-dialogue || python -m glassformer.learn.chapters.attention > /dev/null
# glassformer explain --model my-dialogue --text "where are you going" --lang zh
# glassformer explore --model my-dialogue --lang zh
# ```
#
# 文章的例子本身，两个头，中文：`glassformer explain --heads 2 --lang zh`。
#
# 下一章：5. 编码器-解码器——交叉注意力，以及一个词一个词地解码出回答（[课程目录](../index.md)）。
