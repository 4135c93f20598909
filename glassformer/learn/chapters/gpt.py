# %% [markdown] lang="en"
# # 6. GPT: only the decoder
#
# Chapter 5 translated with two stacks: an encoder that reads the source sentence, and a
# decoder that writes the target one token at a time, looking back at its own tokens through
# masked self-attention and at the source through cross-attention. GPT keeps only the decoder.
# There is no source, so there is no cross-attention: a GPT block is masked self-attention
# and a feed-forward network, each inside a residual connection. This chapter builds that
# model with glassformer, looks at the pieces GPT-2 changed (where the LayerNorm sits), counts
# GPT-2's 124,439,808 parameters from its configuration, generates text token by token with
# a KV cache, and ends on a GPT you train yourself.

# %% [markdown] lang="zh"
# # 6. GPT：只有解码器
#
# 第 5 章用两个堆叠来翻译：编码器读源语言句子，解码器一次写一个目标词元，通过带掩码的自注意力
# 回看自己已经写出的词元，通过交叉注意力看源句子。GPT 只保留了解码器。没有源句子，也就没有
# 交叉注意力：一个 GPT 块只有带掩码的自注意力和前馈网络，每个子层外面包着残差连接。本章用
# glassformer 搭出这个模型，看看 GPT-2 改动的地方（层归一化放在哪里），只凭配置数出 GPT-2 的
# 124,439,808 个参数，用 KV 缓存逐词生成文本，最后训练一个你自己的 GPT。

# %%
import numpy as np
import torch

from glassformer import learn
from glassformer.data.corpus import bundled_corpus
from glassformer.data.tokenizers import CharTokenizer
from glassformer.model.config import GPTConfig, Seq2SeqConfig
from glassformer.model.gpt import GPT
from glassformer.model.seq2seq import Seq2Seq

torch.set_num_threads(1)  # small models: one thread is as fast, and steadier
text = bundled_corpus()  # the village stories glassformer writes itself
tok = CharTokenizer.train(text)  # one id per character
print(f"{len(text):,} characters, {tok.vocab_size} distinct ones")

# %% [markdown] lang="en"
# ## Decoder-only: no cross-attention, a causal mask
#
# Here are the layers of one block of each model, both built small: a decoder block of
# chapter 5's encoder-decoder, and a GPT block.

# %% [markdown] lang="zh"
# ## 只有解码器：没有交叉注意力，只有因果掩码
#
# 下面分别列出两个模型中一个块的各层（两个模型都搭得很小）：第 5 章编码器-解码器里的一个解码器块，
# 和一个 GPT 块。

# %%
torch.manual_seed(0)
config = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64)
gpt = GPT(config).eval()
seq2seq = Seq2Seq(Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size, block_size=64,
                                n_encoder_layers=2, n_decoder_layers=2, n_head=4, d_model=64)).eval()
decoder_block = [name for name, _ in seq2seq.decoder[0].named_children()]
gpt_block = [name for name, _ in gpt.blocks[0].named_children()]
print("encoder-decoder, a decoder block:", decoder_block)
print("GPT, a block:                    ", gpt_block)
assert "cross_attn" in decoder_block and "cross_attn" not in gpt_block and gpt.blocks[0].cross_attn is None

# %% [markdown] lang="en"
# What stays is the **mask**. Position $i$ may attend to positions $j \le i$ only: the scores
# above the diagonal are set to $-\infty$ before the softmax, so their weights are exactly 0.
# Here is `causal_mask` and the attention weights of the first head of the first layer for the
# text "Anna sang", read by the (untrained) GPT:

# %% [markdown] lang="zh"
# 留下来的是**掩码**。位置 $i$ 只能关注位置 $j \le i$：对角线以上的分数在 softmax 之前被设成
# $-\infty$，所以它们的权重正好是 0。下面是 `causal_mask`，以及（未训练的）GPT 读 "Anna sang"
# 时第一层第一个头的注意力权重：

# %%
from glassformer.model.layers import causal_mask
from glassformer.observe.trace import Trace

ids = torch.tensor([tok.encode("Anna sang")])
print(causal_mask(5, 5).int())
with torch.no_grad(), Trace(gpt) as trace:
    logits = gpt(ids)
weights = trace["blocks.0.self_attn.core.probs"][0, 0]  # (T, T): the first head's attention weights
print(weights.numpy().round(2))
T = ids.size(1)
assert (weights[~causal_mask(T, T)] == 0).all()  # nothing above the diagonal
assert torch.allclose(weights.sum(-1), torch.ones(T))

# %% [markdown] lang="en"
# So the prediction at position $i$ depends on tokens $0..i$ only. Change the last character
# and every earlier position's logits stay the same, to the last bit of float32. This is what
# lets a GPT train on all positions of a text at once: each one predicts the next token
# without seeing it.

# %% [markdown] lang="zh"
# 所以位置 $i$ 的预测只取决于词元 $0..i$。改掉最后一个字符，前面每个位置的 logits 都完全不变
# （float32 的每一位都一样）。正因为如此，GPT 可以同时在一段文本的所有位置上训练：每个位置都在
# 预测下一个词元，却看不到它。

# %%
changed = ids.clone()
changed[0, -1] = tok.encode("X")[0]
with torch.no_grad():
    other = gpt(changed)
print("largest change at positions 0..T-2:", (other[0, :-1] - logits[0, :-1]).abs().max().item())
print("largest change at the last position:", round((other[0, -1] - logits[0, -1]).abs().max().item(), 4))
assert torch.equal(other[0, :-1], logits[0, :-1])

# %% [markdown] lang="en"
# ## Segment embedding
#
# A GPT's input is the sum of a token embedding and a position embedding. A task that feeds
# two texts at once (a question and a passage, two sentences to compare) can add a third: a
# **segment embedding**, one learned vector per segment, added to every token of that segment.
# BERT has one (its "token type"); GPT-2 has none. glassformer's GPT adds one when `n_segments`
# is above 0, and then asks for `segment_ids` beside the ids:
#
# $$x_i = E_{\text{token}}[t_i] + E_{\text{position}}[i] + E_{\text{segment}}[s_i]$$

# %% [markdown] lang="zh"
# ## 段嵌入
#
# GPT 的输入是词嵌入和位置嵌入之和。如果一个任务同时输入两段文本（一个问题和一段文章，或者两个要
# 比较的句子），还可以再加第三项：**段嵌入**（segment embedding），每一段一个学出来的向量，加到
# 这一段的每个词元上。BERT 有段嵌入（它叫 token type）；GPT-2 没有。glassformer 的 GPT 在
# `n_segments` 大于 0 时加上段嵌入，这时除了词元编号还要传入 `segment_ids`：
#
# $$x_i = E_{\text{词元}}[t_i] + E_{\text{位置}}[i] + E_{\text{段}}[s_i]$$

# %%
torch.manual_seed(0)
seg_gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=4, n_embd=64,
                        n_segments=2)).eval()
first, second = tok.encode("Anna sang."), tok.encode("Bram slept.")
pair = torch.tensor([first + second])
segments = torch.tensor([[0] * len(first) + [1] * len(second)])
print("segment ids:", segments[0].tolist())
print("segment table:", tuple(seg_gpt.seg_emb.weight.shape))
with torch.no_grad():
    x, _ = seg_gpt.embed(pair, segment_ids=segments)
    by_hand = (seg_gpt.tok_emb.weight[pair] + seg_gpt.pos_emb.weight[: pair.size(1)]
               + seg_gpt.seg_emb.weight[segments])
assert torch.allclose(x, by_hand, atol=1e-7)
try:
    seg_gpt(pair)
except ValueError as e:
    print("without segment ids:", e)

# %% [markdown] lang="en"
# ## Post-LN or pre-LN
#
# The 2017 Transformer and GPT-1 normalise *after* each residual addition ("Add & Norm",
# **post-LN**). GPT-2 moved the LayerNorm to the *input* of each sublayer (**pre-LN**) and added
# one more LayerNorm after the last block:
#
# $$\text{post-LN:}\quad x \leftarrow \mathrm{LN}(x + f(x)) \qquad\qquad
#   \text{pre-LN:}\quad x \leftarrow x + f(\mathrm{LN}(x))$$
#
# `GPTConfig(norm_position="post")` or `"pre"` chooses. Built with the same seed, the two models
# have the very same weights (the post-LN one lacks only the final norm); one block computed
# by hand in both orders gives what glassformer's block gives:

# %% [markdown] lang="zh"
# ## 后置归一化还是前置归一化
#
# 2017 年的 Transformer 和 GPT-1 在每次残差相加*之后*做层归一化（“Add & Norm”，叫 **post-LN**）。
# GPT-2 把层归一化挪到了每个子层的*输入*上（**pre-LN**），并在最后一个块之后再加一个层归一化：
#
# $$\text{post-LN:}\quad x \leftarrow \mathrm{LN}(x + f(x)) \qquad\qquad
#   \text{pre-LN:}\quad x \leftarrow x + f(\mathrm{LN}(x))$$
#
# 用 `GPTConfig(norm_position="post")` 或 `"pre"` 选择。用同一个随机种子搭出的两个模型权重完全相同
# （post-LN 的只是少了最后那个归一化）；按两种顺序手算一个块，结果和 glassformer 的块一致：

# %%
def small_gpt(norm_position: str) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=64,
                         norm_position=norm_position))


pre, post = small_gpt("pre"), small_gpt("post")
shared = post.state_dict()
assert all(torch.equal(w, shared[k]) for k, w in pre.state_dict().items() if k in shared)
print("only in pre-LN:", sorted(set(pre.state_dict()) - set(shared)))

sentence = torch.tensor([tok.encode("Anna the baker found a key by the river.")])
with torch.no_grad():
    x, _ = pre.embed(sentence)
    b = pre.blocks[0]
    h = x + b.self_attn(b.attn_norm(x), is_causal=True)  # pre-LN: the norm on the branch
    pre_by_hand = h + b.ffn(b.ffn_norm(h))
    h = b.attn_norm(x + b.self_attn(x, is_causal=True))  # post-LN: the norm on the sum
    post_by_hand = b.ffn_norm(h + b.ffn(h))
    assert torch.allclose(pre.blocks[0](x, is_causal=True), pre_by_hand, atol=1e-6)
    assert torch.allclose(post.blocks[0](x, is_causal=True), post_by_hand, atol=1e-6)
print("pre-LN: x + f(LN(x)) as the block computes it; post-LN: LN(x + f(x)) as the block computes it")

# %% [markdown] lang="en"
# The difference shows in the **residual stream**, the vector each position carries from
# block to block. Post-LN normalises it at every block, so its length stays at about
# $\sqrt{C} = 8$ (times the LayerNorm's learned scale). Pre-LN never normalises the stream
# itself, only the copy each sublayer reads, so the blocks' outputs pile up and the stream
# grows with depth; that is why it needs the final norm before the output layer. Here are
# the mean lengths of the stream per layer (the embeddings, then after each block), before
# training and after 60 steps of Adam at learning rate $10^{-3}$ on the village stories, the
# same batches for both:

# %% [markdown] lang="zh"
# 区别体现在**残差流**上，也就是每个位置从一个块带到下一个块的那个向量。post-LN 在每个块都对它做
# 归一化，所以它的长度一直在 $\sqrt{C} = 8$ 左右（再乘以层归一化学到的缩放）。pre-LN 从不对残差流
# 本身归一化，只对每个子层读到的那份拷贝做归一化，所以各个块的输出不断叠加，残差流随深度变长；
# 这也是它在输出层之前需要最后一个归一化的原因。下面是每层残差流的平均长度（先是嵌入，然后是每个块
# 之后），分别在训练之前和在村庄故事上用 Adam（学习率 $10^{-3}$）训练 60 步之后，两个模型用同样的批次：

# %%
corpus_ids = torch.tensor(tok.encode(text))


def stream_norms(model: GPT) -> list[float]:
    """The mean length of the residual stream over the sentence's positions: embeddings, then each block."""
    with torch.no_grad():
        h, _ = model.embed(sentence)
        norms = [h.norm(dim=-1).mean().item()]
        for block in model.blocks:
            h = block(h, is_causal=True)
            norms.append(h.norm(dim=-1).mean().item())
    return norms


def train(model: GPT, steps: int = 60) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)  # the same batches for both models
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(corpus_ids) - 33, (8,), generator=g)
        xb = torch.stack([corpus_ids[s:s + 32] for s in starts])
        yb = torch.stack([corpus_ids[s + 1:s + 33] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(xb).flatten(0, 1), yb.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


before = {"pre": stream_norms(pre), "post": stream_norms(post)}
losses = {"pre": train(pre), "post": train(post)}
after = {"pre": stream_norms(pre), "post": stream_norms(post)}
for name in ("pre", "post"):
    print(f"{name:>4}-LN  before training: {np.round(before[name], 2)}")
    print(f"{name:>4}-LN  after 60 steps:  {np.round(after[name], 2)}")
for name in ("pre", "post"):
    print(f"{name:>4}-LN  loss every 10 steps: {np.round(losses[name][::10], 2)}, "
          f"last 10: {np.mean(losses[name][-10:]):.3f}")
assert all(abs(n - 8.0) < 0.1 for n in before["post"][1:])  # LN's output: length √C at the initial scale 1
assert all(a < b for a, b in zip(after["pre"], after["pre"][1:]))  # pre-LN: the stream grows with depth
assert np.mean(losses["pre"][-10:]) < np.mean(losses["post"][-10:]) - 0.15

# %% [markdown] lang="en"
# Pre-LN learned faster here, in the same steps with the same batches: measured on this tiny
# run, not a law (other seeds give a gap of the same size; the assert above asks for 0.15).
# The reason usually given (Xiong et al., 2020, "On Layer Normalization in the Transformer
# Architecture") is the gradient's path. In pre-LN the stream is a plain sum,
# $x_L = x_0 + \sum_l f_l(\mathrm{LN}(x_l))$, so the loss's gradient reaches every layer through
# the identity, with no norm in the way. In post-LN it must pass through the LayerNorm of every
# layer above, each of which rescales it. Xiong et al. find that at initialisation post-LN's
# gradients near the output are large, so that it needs a learning-rate warmup, where pre-LN
# can do without one. GPT-2 and nearly every model since are pre-LN.

# %% [markdown] lang="zh"
# 在这次小实验里，同样的步数、同样的批次，pre-LN 学得更快：这只是在这个小例子上测到的结果，不是定律
# （换别的随机种子，差距也差不多大；上面的断言只要求 0.15）。通常给出的原因
# （Xiong 等，2020，《On Layer Normalization in the Transformer Architecture》）是梯度的路径。pre-LN
# 的残差流是一个简单的和，$x_L = x_0 + \sum_l f_l(\mathrm{LN}(x_l))$，损失的梯度沿着恒等路径直达每一层，
# 中间没有归一化挡路。post-LN 的梯度则要穿过上面每一层的层归一化，每一个都会重新缩放它。Xiong 等发现，
# 初始化时 post-LN 靠近输出层的梯度很大，所以它需要学习率预热（warmup），而 pre-LN 可以不要。GPT-2
# 以及之后几乎所有模型都用 pre-LN。

# %% [markdown] lang="en"
# ## GPT-2's shapes: 124M parameters
#
# GPT-2's smallest model has 12 blocks of width $C = 768$ with 12 heads of $d = 64$, a
# feed-forward of $4C = 3072$, a context of 1024 tokens and a vocabulary of 50257 BPE tokens.
# `glassformer.explain.shapes` derives every activation's and every weight's shape from that
# configuration alone, without building a weight. The data flow, for a batch of B texts of t
# tokens (the rows marked ×12 happen in every block):

# %% [markdown] lang="zh"
# ## GPT-2 的形状：1.24 亿个参数
#
# 最小的 GPT-2 有 12 个块，宽度 $C = 768$，12 个头、每个头 $d = 64$，前馈网络宽 $4C = 3072$，
# 上下文 1024 个词元，词表有 50257 个 BPE 词元。`glassformer.explain.shapes` 只凭这份配置推出
# 每个激活值和每个权重的形状，一个权重也不用建。下面是数据流，批里有 B 段文本、每段 t 个词元
# （标 ×12 的行在每个块里都发生一次）：

# %%
from glassformer.explain.shapes import parameter_total, shapes

rows = shapes("gpt2")
flow = {r.name: r for r in rows if r.kind == "activation"}


def table(lang: str) -> str:
    return "\n".join(f"{r.name:15} {str(r.shape).replace(chr(39), ''):16} "
                     f"{'×' + str(r.repeat) if r.repeat > 1 else '':4}{r.describe(lang)}" for r in flow.values())


learn.show(en=table("en"), zh=table("zh"))
assert flow["Q, K, V heads"].shape == ("B", 12, "t", 64)  # 12 heads of 64
assert flow["scores"].shape == ("B", 12, "t", "t")
assert flow["up"].shape == ("B", "t", 3072)  # the feed-forward: 4 × 768
assert flow["logits"].shape == ("B", "t", 50257)
assert {r.repeat for r in flow.values()} == {1, 12}  # 12 blocks

# %% [markdown] lang="en"
# And the weights. The output layer is the token embedding table itself (tied weights), so it
# is counted once:

# %% [markdown] lang="zh"
# 再看权重。输出层就是词嵌入表本身（共享权重），所以只计一次：

# %%
weights = [r for r in rows if r.kind == "weight"]
for r in weights:
    count = "tied" if r.tied_to else f"{r.numel * r.repeat:,}"
    print(f"{r.name:33} {str(r.shape):13} {'×' + str(r.repeat) if r.repeat > 1 else '':4} {count:>11}")
assert {r.name: r for r in weights}["pos_emb.weight"].shape == (1024, 768)  # a context of 1024 tokens
total, symbolic = parameter_total(rows)
print(f"total: {total:,}")
assert total == 124_439_808 and not symbolic  # GPT-2 small, tied embeddings

# %% [markdown] lang="en"
# The table is computed from the config; the model is code. To check one against the other,
# build the real 124M GPT on PyTorch's *meta* device, where modules get shapes but no memory,
# and count its parameters:

# %% [markdown] lang="zh"
# 这张表是从配置算出来的，模型则是代码。为了互相核对，在 PyTorch 的 *meta* 设备上搭出真正的
# 124M GPT（模块有形状，但不占内存），数一数它的参数：

# %%
from glassformer.model.config import PRESETS

with torch.device("meta"):
    gpt2 = GPT(PRESETS["gpt2"].model)
print(f"GPT(PRESETS['gpt2']) on the meta device: {gpt2.num_params():,} parameters")
assert gpt2.num_params() == total

# %% [markdown] lang="en"
# ### Exercise 1
#
# Count the parameters of one GPT-2 block by hand: four attention matrices and the
# feed-forward's two, each with its bias, and two LayerNorms.

# %% [markdown] lang="zh"
# ### 练习 1
#
# 手算 GPT-2 一个块的参数：注意力的四个矩阵、前馈网络的两个矩阵（各带偏置），以及两个层归一化。

# %%
answer = None  # your number here
learn.check("gpt.block_params", answer)

# %% tags=["solution"]
C = 768
attention = 4 * (C * C + C)
feed_forward = C * 4 * C + 4 * C + 4 * C * C + C
norms = 2 * 2 * C
assert learn.check("gpt.block_params", attention + feed_forward + norms)

# %% [markdown] lang="en"
# The same tables in the terminal:
#
# ```bash
# glassformer explain shapes --preset gpt2 --lang en
# ```

# %% [markdown] lang="zh"
# 在终端里用中文打印同样的表：
#
# ```bash
# glassformer explain shapes --preset gpt2 --lang zh
# ```

# %% [markdown] lang="en"
# ## Generation, token by token, with the KV cache
#
# A GPT generates by predicting one token, appending it, and predicting again. Run naively,
# step $n$ recomputes all $n$ positions. But thanks to the causal mask the keys and values of
# the old positions never change, so they can be kept: the **KV cache**. Each step then runs
# only the newest token; its query attends to every cached key. Each layer's cache holds keys
# and values of shape $(B, h, n, d)$. Here the untrained GPT of the first section reads "Anna"
# and then greedily picks 4 more characters, once with a cache and once recomputing
# everything at every step:

# %% [markdown] lang="zh"
# ## 逐词生成与 KV 缓存
#
# GPT 生成文本的方式是：预测一个词元，把它接到后面，再预测下一个。如果天真地去算，第 $n$ 步要把
# 全部 $n$ 个位置重新算一遍。但是有因果掩码，旧位置的键和值永远不会变，所以可以存起来：这就是
# **KV 缓存**。于是每一步只需要算最新的那个词元，它的查询去关注缓存里所有的键。每一层的缓存存着
# 形状为 $(B, h, n, d)$ 的键和值。下面让第一节那个未训练的 GPT 读入 "Anna"，然后用贪心解码再选
# 4 个字符，一次用缓存，一次每步都全部重算：

# %%
prompt = torch.tensor([tok.encode("Anna")])
cache = gpt.new_cache()
seq = prompt
with torch.no_grad():
    new = prompt  # the first step reads the whole prompt, later steps one token
    for step in range(4):
        cached = gpt.next_logits(new, cache)[0]  # only the new positions run
        recomputed = gpt(seq)[0, -1]  # every position again
        k, v = cache.self_attn[0].keys_values()
        print(f"step {step}: input {tuple(new.shape)}, layer 0 keys {tuple(k.shape)}, "
              f"|cached - recomputed| <= {(cached - recomputed).abs().max().item():.1e}")
        assert torch.allclose(cached, recomputed, atol=1e-5)  # float32 sums in another order
        new = cached.argmax().view(1, 1)
        seq = torch.cat([seq, new], dim=1)
print("text:", repr(tok.decode(seq[0].tolist())))

# %% [markdown] lang="en"
# The cache grows by one position per step, the work per step stays one token. For GPT-2 each
# of the 12 layers keeps keys and values of shape $(1, 12, n, 64)$ after $n$ tokens:

# %% [markdown] lang="zh"
# 缓存每步多一个位置，而每步的计算量始终只有一个词元。对 GPT-2 来说，读了 $n$ 个词元之后，12 层中
# 每一层都存着形状为 $(1, 12, n, 64)$ 的键和值：

# %%
cache = gpt2.new_cache()
with torch.device("meta"):  # shapes only: the 124M model is never allocated
    x, rotary = gpt2.embed(torch.zeros(1, 100, dtype=torch.long), 0, None, cache)
    for i, block in enumerate(gpt2.blocks):
        x = block(x, is_causal=True, cache=cache.self_attn[i], rotary=rotary)
k, v = cache.self_attn[0].keys_values()
print("after 100 tokens, layer 0: keys", tuple(k.shape), "values", tuple(v.shape), "; layers:", len(cache.self_attn))
assert tuple(k.shape) == (1, 12, 100, 64)

# %% [markdown] lang="en"
# ### Exercise 2
#
# How many numbers does GPT-2's KV cache hold after 100 tokens, keys and values of all
# layers together?

# %% [markdown] lang="zh"
# ### 练习 2
#
# GPT-2 读了 100 个词元之后，KV 缓存里一共有多少个数（所有层的键和值加在一起）？

# %%
answer = None  # your number here
learn.check("gpt.kv_cache_numbers", answer)

# %% tags=["solution"]
assert learn.check("gpt.kv_cache_numbers", 2 * 12 * 12 * 100 * 64)

# %% [markdown] lang="en"
# ### Choosing the next token: temperature, top-k, top-p
#
# Greedy decoding always takes the most likely token. Sampling draws it from the softmax, after
# three optional stages: divide the logits by a **temperature** $T$ (below 1 sharpens the
# distribution, above 1 flattens it), keep only the $k$ most likely tokens (**top-k**), and keep
# the smallest set of most likely tokens whose probabilities reach $p$ (**top-p**, nucleus
# sampling); the rest get probability 0 and the kept ones are renormalised:
#
# $$p_i = \frac{e^{z_i / T}}{\sum_j e^{z_j / T}}$$
#
# `glassformer.explain.generation.stages` shows each stage with the same filters the sampler
# uses. Six candidates, temperature 0.5, top-k 4, top-p 0.9:

# %% [markdown] lang="zh"
# ### 选出下一个词元：温度、top-k、top-p
#
# 贪心解码总是选最可能的词元。采样则从 softmax 中抽取，之前还有三个可选的步骤：把 logits 除以
# **温度** $T$（小于 1 让分布更尖锐，大于 1 让它更平坦）；只保留最可能的 $k$ 个词元（**top-k**）；
# 只保留概率加起来达到 $p$ 的最小一组最可能词元（**top-p**，核采样）。其余词元的概率变成 0，
# 保留下来的重新归一化：
#
# $$p_i = \frac{e^{z_i / T}}{\sum_j e^{z_j / T}}$$
#
# `glassformer.explain.generation.stages` 用和采样器相同的过滤函数展示每一步。六个候选，温度 0.5，
# top-k 4，top-p 0.9：

# %%
from glassformer.explain.generation import stages

toy_logits = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0, -1.0])
data, final = stages(toy_logits, temperature=0.5, top_k=4, top_p=0.9, labels=list("abcdef"))
print("token  logit  softmax  T=0.5   top-4   top-p 0.9")
for c in data["candidates"]:
    print(f"  {c['token']}   {c['logit']:5.1f}   {c['softmax']:.3f}   {c['temperature']:.3f}   "
          f"{c['top_k']:.3f}   {c['top_p']:.3f}")
print("tokens kept:", data["kept"])
assert data["kept"] == {"vocab": 6, "top_k": 4, "top_p": 2}
assert np.isclose(final.sum().item(), 1.0)

# %% [markdown] lang="en"
# ### Exercise 3
#
# The first candidate's probability at temperature 0.5, before top-k and top-p.

# %% [markdown] lang="zh"
# ### 练习 3
#
# 温度 0.5 时（还没做 top-k 和 top-p）第一个候选的概率。

# %%
answer = None  # your number here
learn.check("gpt.temperature_prob", answer)

# %% tags=["solution"]
e = np.exp(np.array([3.0, 2.0, 1.0, 0.5, 0.0, -1.0]) / 0.5)
assert learn.check("gpt.temperature_prob", e[0] / e.sum())

# %% [markdown] lang="en"
# ## Now your own model
#
# A GPT-2-shaped model of your own: LayerNorm before each sublayer, GELU, learned positions,
# biases, tied embeddings; one block of width 128 with 4 heads, trained for 150 steps on the
# village stories (the default recipe of `glassformer train lm`, with GPT-2's pieces in place
# of its modern ones). A few seconds on a CPU:

# %% [markdown] lang="zh"
# ## 现在轮到你自己的模型
#
# 一个 GPT-2 形状的模型：每个子层之前做层归一化、GELU、学习的位置嵌入、
# 带偏置、共享词嵌入；一个块，宽 128，4 个头，在村庄故事上训练 150 步（`glassformer train lm`
# 的默认配方，把其中的新式部件换成 GPT-2 的）。在 CPU 上只要几秒钟：

# %%
import glassformer
from glassformer.training.lm import train_lm

GPT2_PIECES = ["norm=layernorm", "activation=gelu_tanh", "position=learned", "bias=true", "d_ff=512",
               "qk_norm=false", "embed_norm=false", "bigram=false", "zero_init=false", "tie_weights=true"]
metrics = train_lm("runs/gpt", overrides=GPT2_PIECES + ["max_iters=150", "lr_decay_iters=150", "eval_interval=150"],
                   progress=False, overwrite=True)
model, run_tok = glassformer.load("runs/gpt")
c = model.config
print(f"validation loss {metrics['val_loss']:.3f}; {model.num_params():,} parameters")
print(f"n_layer {c.n_layer}, n_head {c.n_head}, n_embd {c.n_embd}, d_ff {c.ff_dim}, block_size {c.block_size}")
print(f"vocab_size {c.vocab_size}, norm_position {c.norm_position}, tie_weights {c.tie_weights}")
assert metrics["val_loss"] < 1.5  # far below a uniform guess over the characters, ln(59) ≈ 4.08

# %% [markdown] lang="en"
# Its shapes, from its config, and its real parameter count:

# %% [markdown] lang="zh"
# 它的形状（从配置算出）和实际的参数个数：

# %%
from glassformer.explain.shapes import config_shapes

own_rows = config_shapes(model.config)
for r in own_rows:
    if r.kind == "activation" and r.name in ("x", "Q, K, V heads", "scores", "up", "logits"):
        print(f"{r.name:15} {str(r.shape).replace(chr(39), '')}")
assert parameter_total(own_rows)[0] == model.num_params()

# %% [markdown] lang="en"
# Its samples at four temperatures, from the same prompt and seed. At 0 (greedy) it always takes
# the likeliest character; at 0.5 it writes sentences much like the corpus's; at 1.0 and above
# the rarer characters get enough probability to break the words:

# %% [markdown] lang="zh"
# 同一个开头、同一个随机种子，在四个温度下的采样。温度 0（贪心）时它总是选最可能的字符；0.5 时写出
# 和语料很像的句子；1.0 及以上，罕见字符的概率变大，单词就被打散了：

# %%
from glassformer.generation.sampling import generate

start = run_tok.encode("Anna")
samples = {}
for temperature in (0.0, 0.5, 1.0, 1.5):
    out = generate(model, start, 80, temperature=temperature, seed=0)[0]
    samples[temperature] = run_tok.decode(out)
    print(f"T={temperature}: {samples[temperature]!r}")
    assert out == generate(model, start, 80, temperature=temperature, seed=0, use_cache=False)[0]

# %% [markdown] lang="en"
# (Each sample above was generated twice, with and without the KV cache; the assert checks
# that the tokens are the same.) And the generation step by step, as `glassformer explain
# --generate` shows it: the cache's shape, the newest query's attention over the text so far
# (layer 1, head 1), and the stages of the choice at temperature 0.8, top-k 10, top-p 0.9:

# %% [markdown] lang="zh"
# （上面每段采样都生成了两次，一次用 KV 缓存，一次不用；断言检查两次的词元完全相同。）下面是逐步
# 的生成过程，和 `glassformer explain --generate` 显示的一样：缓存的形状，最新查询对已有文本的注意力
# （第 1 层第 1 个头），以及温度 0.8、top-k 10、top-p 0.9 时选词的各个阶段：

# %%
from glassformer.explain.generation import gpt_generation

run = gpt_generation(model, run_tok, "Anna", 3, temperature=0.8, top_k=10, top_p=0.9, seed=0)
for s in run.steps:
    row = " ".join(f"{t}:{w:.2f}" for t, w in zip(s["context"], s["attention"][0][0]))
    print(f"cache keys {s['cache']['k_shape']}, attention: {row}")
    print(f"  kept by top-k {s['kept']['top_k']}, by top-p {s['kept']['top_p']};",
          ", ".join(f"{c['token']!r} {c['softmax']:.2f}→{c['top_p']:.2f}" for c in s["candidates"][:3]),
          f"; picked {s['picked']['token']!r}")
same = generate(model, start, 3, temperature=0.8, top_k=10, top_p=0.9, seed=0)[0][len(start):]
assert [s["picked"]["id"] for s in run.steps] == same  # the sampler's own tokens

# %% [markdown] lang="en"
# The same run in the terminal: trained, sampled, explained step by step, and opened in the
# explorer, whose tabs show these views on your model for any text you type:
#
# ```bash
# glassformer train lm --out runs/gpt --overwrite \
#   --set norm=layernorm --set activation=gelu_tanh --set position=learned --set bias=true --set d_ff=512 \
#   --set qk_norm=false --set embed_norm=false --set bigram=false --set zero_init=false --set tie_weights=true \
#   --set max_iters=150 --set lr_decay_iters=150 --set eval_interval=150
# glassformer sample --model runs/gpt --prompt Anna --max-new-tokens 80 --temperature 0.5
# glassformer explain --model runs/gpt --text Anna --generate 3 --temperature 0.8 --top-k 10 --top-p 0.9
# glassformer explore --model runs/gpt
# ```
#
# Next: 7. Modern models, where RMSNorm, RoPE and SwiGLU replace GPT-2's pieces ([the course](../index.md)).

# %% [markdown] lang="zh"
# 在终端里做同样的事：训练、采样、逐步解释生成过程，再用浏览器打开探索器，它的各个标签页会对你输入的
# 任何文本在你的模型上显示这些视图：
#
# ```bash
# glassformer train lm --out runs/gpt --overwrite \
#   --set norm=layernorm --set activation=gelu_tanh --set position=learned --set bias=true --set d_ff=512 \
#   --set qk_norm=false --set embed_norm=false --set bigram=false --set zero_init=false --set tie_weights=true \
#   --set max_iters=150 --set lr_decay_iters=150 --set eval_interval=150
# glassformer sample --model runs/gpt --prompt Anna --max-new-tokens 80 --temperature 0.5
# glassformer explain --model runs/gpt --text Anna --generate 3 --temperature 0.8 --top-k 10 --top-p 0.9 --lang zh
# glassformer explore --model runs/gpt --lang zh
# ```
#
# 下一章：7. 现代模型，RMSNorm、RoPE 和 SwiGLU 取代了 GPT-2 的部件（[课程目录](../index.md)）。
