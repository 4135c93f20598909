# %% [markdown] lang="en"
# # 7. Modern models
#
# GPT-2 is from 2019. The models people run today — Llama, Mistral, Qwen — are the same
# decoder-only stack of chapter 6 with five pieces changed: **RMSNorm** instead of LayerNorm,
# **RoPE** (rotating queries and keys) instead of a table of positions, the gated **SwiGLU**
# feed-forward, **grouped-query attention** (fewer keys and values than queries) and, in Qwen3,
# **q/k norms**. Each is an option of glassformer's `GPTConfig`; this chapter computes each one
# on a few numbers, builds a Llama/Qwen-shaped model on the spot, checks it against Hugging Face
# `transformers`, and then trains a small one to ask it *why* it predicts what it predicts.

# %% [markdown] lang="zh"
# # 7. 现代模型
#
# GPT-2 是 2019 年的模型。今天大家在用的 Llama、Mistral、Qwen，仍然是第 6 章那种只有解码器的堆叠，
# 只是换了五个零件：用 **RMSNorm** 代替层归一化，用 **RoPE**（旋转查询和键）代替位置编码表，
# 带门控的 **SwiGLU** 前馈网络，**分组查询注意力**（键和值比查询少），以及 Qwen3 的 **q/k 归一化**。
# 它们都是 glassformer 的 `GPTConfig` 里的选项。本章先用几个数把每个零件算一遍，再当场搭一个
# Llama/Qwen 结构的模型，和 Hugging Face `transformers` 逐个 logit 对比；最后训练一个小模型，
# 问它*为什么*这样预测。

# %%
import numpy as np
import torch

import glassformer
from glassformer import GPT, GPTConfig, learn
from glassformer.model.layers import FeedForward, LayerNorm, RMSNorm, repeat_kv
from glassformer.model.positions import RotaryEmbedding, apply_rotary
from glassformer.observe import analysis

# %% [markdown] lang="en"
# ## RMSNorm: LayerNorm without the mean
#
# LayerNorm (chapter 4) centres a row and divides by its standard deviation, then scales and
# shifts: $\gamma \odot (x - \mu)/\sigma + \beta$. RMSNorm skips the centring and the shift and
# divides by the root of the mean square:
#
# $$\text{RMSNorm}(x) = \gamma \odot \frac{x}{\sqrt{\tfrac{1}{d}\sum_i x_i^2 + \varepsilon}}$$
#
# One statistic instead of two, and the same quality in practice. On the row $(1, 2, 3, 6)$:

# %% [markdown] lang="zh"
# ## RMSNorm：去掉均值的层归一化
#
# 层归一化（第 4 章）先把一行数减去均值、除以标准差，再缩放和平移：$\gamma \odot (x - \mu)/\sigma + \beta$。
# RMSNorm 不减均值、也不平移，只除以均方根：
#
# $$\text{RMSNorm}(x) = \gamma \odot \frac{x}{\sqrt{\tfrac{1}{d}\sum_i x_i^2 + \varepsilon}}$$
#
# 少算一个统计量，实际效果却差不多。对 $(1, 2, 3, 6)$ 这一行：

# %%
x = torch.tensor([1.0, 2.0, 3.0, 6.0])
layer_norm, rms_norm = LayerNorm(4), RMSNorm(4)  # γ = 1 (and β = 0): as a model starts
with torch.no_grad():
    ln, rms = layer_norm(x), rms_norm(x)
print("row:        ", x.numpy())
print("LayerNorm:  ", ln.numpy().round(3), "  mean", round(float(ln.mean()), 3))
print("RMSNorm:    ", rms.numpy().round(3), "  mean", round(float(rms.mean()), 3))
stats = {**layer_norm.statistics(x), **rms_norm.statistics(x)}  # what each divides by (and subtracts)
print("statistics: ", {k: round(float(v), 4) for k, v in stats.items()})
by_hand = x.numpy() / np.sqrt((x.numpy() ** 2).mean() + 1e-5)
assert np.allclose(rms.numpy(), by_hand, atol=1e-6)
assert round(float(rms_norm.statistics(x)["rms"]), 4) == 3.5355  # √12.5, the divisor the prose quotes
assert round(float(ln.mean()), 6) == 0 and round(float(rms.mean()), 3) == 0.849  # LayerNorm centres; RMSNorm does not

# %% [markdown] lang="en"
# LayerNorm's output has mean 0 (and two negative values); RMSNorm keeps every sign and only
# rescales the row so that its root mean square is 1; the divisor is $\sqrt{12.5} = 3.5355$.
#
# ### Exercise 1
#
# The last value of RMSNorm$(1, 2, 3, 6)$, by hand.

# %% [markdown] lang="zh"
# 层归一化的输出均值为 0（还出现了两个负数）；RMSNorm 保留每个数的符号，只把整行缩放到均方根为 1：
# 除数是 $\sqrt{12.5} = 3.5355$。
#
# ### 练习 1
#
# 手算 RMSNorm$(1, 2, 3, 6)$ 的最后一个值。

# %%
answer = None  # your number here
learn.check("modern.rmsnorm", answer)

# %% tags=["solution"]
assert learn.check("modern.rmsnorm", 6 / np.sqrt((1 + 4 + 9 + 36) / 4))

# %% [markdown] lang="en"
# ## RoPE: positions as rotations
#
# Chapter 4 *added* a position vector to each token. RoPE (rotary position embedding) instead
# *rotates* each query and key. A head's $d$ channels form $d/2$ pairs — in Llama's layout
# channel $i$ with channel $i + d/2$ — and the pair $i$ of the token at position $m$ turns by the
# angle $m\,\theta_i$, with $\theta_i = 10000^{-2i/d}$:
#
# $$\begin{pmatrix} x_i \\ x_{i+d/2} \end{pmatrix} \mapsto
#   \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
#   \begin{pmatrix} x_i \\ x_{i+d/2} \end{pmatrix}$$
#
# The first pair turns by one radian a position, the last ones slowly: a clock with hands of
# many speeds. `RotaryEmbedding` computes the table of $\cos$ and $\sin$, `apply_rotary` turns:

# %% [markdown] lang="zh"
# ## RoPE：用旋转表示位置
#
# 第 4 章的位置编码是把一个位置向量*加*到每个词元上。RoPE（旋转位置编码）则是把每个查询和键*旋转*一下。
# 一个头的 $d$ 个通道分成 $d/2$ 对——按 Llama 的排法，第 $i$ 个通道和第 $i + d/2$ 个通道一对——
# 位置 $m$ 上的第 $i$ 对旋转 $m\,\theta_i$ 角，其中 $\theta_i = 10000^{-2i/d}$：
#
# $$\begin{pmatrix} x_i \\ x_{i+d/2} \end{pmatrix} \mapsto
#   \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
#   \begin{pmatrix} x_i \\ x_{i+d/2} \end{pmatrix}$$
#
# 第一对每个位置转一弧度，最后几对转得很慢，像一只有许多根不同速度指针的钟。
# `RotaryEmbedding` 算出 $\cos$ 和 $\sin$ 的表，`apply_rotary` 负责旋转：

# %%
d = 8
rope = RotaryEmbedding(d, max_len=64)
print("θ_i per pair:", (1.0 / 10000 ** (np.arange(0, d, 2) / d)).round(4))
cos, sin = rope(torch.tensor([2]))  # position 2: angles 2 θ_i
print("position 2, cos:", cos[0].numpy().round(4))
q = torch.zeros(1, 1, 1, d)
q[..., 0] = 1.0  # the first pair points along its first channel
turned = apply_rotary(q, cos, sin)[0, 0, 0]
print("(1, 0) of pair 0 at position 2 ->", (round(float(turned[0]), 4), round(float(turned[d // 2]), 4)))
assert np.allclose([turned[0], turned[d // 2]], [np.cos(2), np.sin(2)], atol=1e-6)  # turned by 2 radians

# %% [markdown] lang="en"
# A rotation keeps lengths, and rotating both vectors changes their dot product only by the
# *difference* of their angles. So $q_m \cdot k_n$ after RoPE depends on $m - n$ alone, not on
# where the pair sits in the text. One query and one key, placed at different positions:

# %% [markdown] lang="zh"
# 旋转不改变长度；两个向量都旋转时，它们的点积只取决于两个旋转角之*差*。所以加了 RoPE 之后，
# $q_m \cdot k_n$ 只和相对位置 $m - n$ 有关，和这对词元在文中的绝对位置无关。
# 把同一个查询和同一个键放在不同位置上试试：

# %%
torch.manual_seed(0)
q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)


def score(m: int, n: int) -> float:
    """q at position m, k at position n, both rotated: their dot product."""
    return float((apply_rotary(q, *rope(torch.tensor([m]))) * apply_rotary(k, *rope(torch.tensor([n])))).sum())


for m, n in [(3, 1), (10, 8), (40, 38), (5, 1), (41, 37)]:
    print(f"q at {m:2}, k at {n:2}  (m − n = {m - n}):  q·k = {score(m, n):+.5f}")
print(f"without RoPE:                    q·k = {float((q * k).sum()):+.5f}")
assert abs(score(3, 1) - score(40, 38)) < 1e-5 and abs(score(5, 1) - score(41, 37)) < 1e-5  # float32
assert abs(score(3, 1) - score(5, 1)) > 0.01  # another distance, another score

# %% [markdown] lang="en"
# ### Exercise 2
#
# A head of width 2 has one pair, with $\theta_0 = 1$. Rotate the pair $(1, 2)$ at position 3.

# %% [markdown] lang="zh"
# ### 练习 2
#
# 宽度为 2 的头只有一对通道，$\theta_0 = 1$。把位置 3 上的一对数 $(1, 2)$ 旋转一下。

# %%
answer = None  # two numbers
learn.check("modern.rope_pair", answer)

# %% tags=["solution"]
a = 3 * 1.0
assert learn.check("modern.rope_pair", [1 * np.cos(a) - 2 * np.sin(a), 1 * np.sin(a) + 2 * np.cos(a)])

# %% [markdown] lang="en"
# ## SwiGLU: a feed-forward with a gate
#
# GPT-2's feed-forward is $W_\text{down}\,\text{GELU}(W_\text{up}\,x)$. SwiGLU adds a third
# matrix whose output, through SiLU ($z \cdot \sigma(z)$), multiplies the "up" values channel by
# channel — a gate deciding how much of each passes:
#
# $$\text{FFN}(x) = W_\text{down}\left(\text{SiLU}(W_\text{gate}\,x) \odot W_\text{up}\,x\right)$$
#
# Three matrices instead of two, so Llama-style models shrink the hidden width to about
# $\tfrac{8}{3} d$ to keep the parameter count. A width-4 example, recomputed by hand:

# %% [markdown] lang="zh"
# ## SwiGLU：带门控的前馈网络
#
# GPT-2 的前馈网络是 $W_\text{down}\,\text{GELU}(W_\text{up}\,x)$。SwiGLU 多了第三个矩阵：
# 它的输出经过 SiLU（$z \cdot \sigma(z)$）后，逐个通道乘上 "up" 的值，像一道门，决定每个通道放过多少：
#
# $$\text{FFN}(x) = W_\text{down}\left(\text{SiLU}(W_\text{gate}\,x) \odot W_\text{up}\,x\right)$$
#
# 矩阵从两个变成三个，所以 Llama 这类模型把隐藏层宽度缩小到约 $\tfrac{8}{3} d$，参数量保持不变。
# 一个宽度为 4 的例子，手算验证：

# %%
torch.manual_seed(1)
ffn = FeedForward(d_model=4, d_ff=3, activation="swiglu", bias=False)
x = torch.tensor([1.0, -1.0, 0.5, 2.0])
with torch.no_grad():
    gate, up = ffn.gate.weight @ x, ffn.up.weight @ x
    silu = gate * torch.sigmoid(gate)
    out = ffn(x)
print("gate = W_gate x:  ", gate.numpy().round(3))
print("SiLU(gate):       ", silu.numpy().round(3))
print("up = W_up x:      ", up.numpy().round(3))
print("SiLU(gate) ⊙ up:  ", (silu * up).numpy().round(3))
print("W_down (…):       ", out.numpy().round(3))
assert torch.allclose(out, ffn.down.weight @ (silu * up), atol=1e-6)
fast = glassformer.PRESETS["shakespeare-char-fast"].model  # the recipe trained below: width 128
print(f"d_ff of shakespeare-char-fast: {fast.d_ff} (8/3 × {fast.n_embd} = {8 / 3 * fast.n_embd:.1f})")
assert fast.activation == "swiglu" and abs(fast.d_ff - 8 / 3 * fast.n_embd) < 3

# %% [markdown] lang="en"
# A negative gate nearly closes its channel: SiLU of a large negative number is close to 0,
# whatever "up" says.
#
# ## Grouped-query attention: fewer keys and values
#
# Generating text, a model keeps every past token's keys and values (the KV cache of chapter 6);
# for long texts that cache, not the weights, fills the memory. Grouped-query attention keeps
# all the query heads but only `n_kv_head` key/value heads, each read by a group of
# `n_head / n_kv_head` query heads in a row (`n_kv_head = 1` is multi-query attention).
# `repeat_kv` hands each query head its group's K/V. With 8 query heads and 2 K/V heads, K/V
# head $j$ holding the number $j$:

# %% [markdown] lang="zh"
# 门为负时，这个通道几乎关闭：很大的负数经过 SiLU 接近 0，不管 "up" 是多少。
#
# ## 分组查询注意力：更少的键和值
#
# 生成文本时，模型要保存之前每个词元的键和值（第 6 章的 KV 缓存）；文本很长时，占满内存的是这个缓存，
# 而不是权重。分组查询注意力（GQA）保留全部查询头，但只有 `n_kv_head` 个键/值头，
# 每个键/值头依次由 `n_head / n_kv_head` 个查询头共用（`n_kv_head = 1` 就是多查询注意力）。
# `repeat_kv` 把各组的键/值交给对应的查询头。8 个查询头、2 个键/值头，第 $j$ 个键/值头里放数字 $j$：

# %%
kv = torch.arange(2.0).view(1, 2, 1, 1)  # (B, n_kv_head, T, d): K/V head j holds j
shared = repeat_kv(kv, 8 // 2)[0, :, 0, 0]  # (B, n_head, T, d)
for h in range(8):
    print(f"query head {h} reads K/V head {int(shared[h])}")
assert shared.tolist() == [h // 4 for h in range(8)]

# %% [markdown] lang="en"
# The saving is in the cache: it holds `n_kv_head` heads, not `n_head`. The same small model
# with 4 query heads, once with 4 K/V heads and once with 2, after a prompt of 10 tokens:

# %% [markdown] lang="zh"
# 省下的是缓存：它只存 `n_kv_head` 个头，而不是 `n_head` 个。同一个小模型，4 个查询头，
# 一次配 4 个键/值头、一次配 2 个，读入 10 个词元的提示之后：

# %%
base = dict(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_embd=32, norm="rmsnorm", position="rope",
            activation="swiglu", bias=False)
prompt = torch.arange(10).view(1, 10)
sizes = {}
for n_kv in (4, 2):
    m = GPT(GPTConfig(**base, n_kv_head=n_kv)).eval()
    cache = m.new_cache()
    with torch.no_grad():
        m.next_logits(prompt, cache)
    k_cached = cache.self_attn[0].keys_values()[0]
    sizes[n_kv] = 2 * len(cache.self_attn) * k_cached[0, :, 0].numel() * 4  # K and V, every layer, float32
    print(f"n_kv_head={n_kv}: layer 0 caches K of shape {tuple(k_cached.shape)}; "
          f"{sizes[n_kv]} bytes a token; W_K is {tuple(m.blocks[0].self_attn.k_proj.weight.shape)}")
assert sizes[4] == 2 * sizes[2]

# %% [markdown] lang="en"
# ### Exercise 3
#
# 6 query heads and 2 K/V heads (Qwen2's ratio of 3): which K/V head does query head 4 read?

# %% [markdown] lang="zh"
# ### 练习 3
#
# 6 个查询头、2 个键/值头（Qwen2 的 3 比 1）：查询头 4 读的是哪个键/值头？

# %%
answer = None  # a head number, from 0
learn.check("modern.gqa_head", answer)

# %% tags=["solution"]
assert learn.check("modern.gqa_head", 4 // (6 // 2))

# %% [markdown] lang="en"
# ## q/k norms (Qwen3)
#
# Qwen3 puts an RMSNorm over each head's query and key, before RoPE. Every head's $q$ and $k$
# then have a root mean square set by the norm's scale $\gamma$ (1 at the start), whatever the
# weights before it do, so $q \cdot k/\sqrt{d}$ cannot blow up as those weights grow in training —
# one cause of unstable large-model training removed.
# Recording the queries of a model with `qk_norm=True` (after the norm and the rotation, which
# keeps lengths):

# %% [markdown] lang="zh"
# ## q/k 归一化（Qwen3）
#
# Qwen3 在 RoPE 之前，对每个头的查询和键各做一次 RMSNorm。这样每个头的 $q$ 和 $k$ 的均方根都
# 由归一化的缩放 $\gamma$ 决定（开始时为 1），与它前面的权重无关；训练中那些权重变大时，
# $q \cdot k/\sqrt{d}$ 也不会跟着失控——去掉了大模型训练不稳定的一个原因。
# 记录一个 `qk_norm=True` 的模型的查询（在归一化和旋转之后；旋转不改变长度）：

# %%
from glassformer.observe.trace import Trace

for qk_norm in (False, True):
    torch.manual_seed(0)
    m = GPT(GPTConfig(**base, n_kv_head=2, qk_norm=qk_norm, init_std=0.3)).eval()
    with Trace(m, names={"blocks.0.self_attn.core.q"}) as trace, torch.no_grad():
        m(prompt)
    q_rms = trace["blocks.0.self_attn.core.q"].pow(2).mean(-1).sqrt()  # (B, h, T): per head, per token
    print(f"qk_norm={qk_norm!s:5}: the queries' RMS per head and token ranges {float(q_rms.min()):.3f} … "
          f"{float(q_rms.max()):.3f}")
assert torch.allclose(q_rms, torch.ones_like(q_rms), atol=1e-4)  # γ = 1: RMS 1 (ε = 1e-5 shaves a little)

# %% [markdown] lang="en"
# ## A Llama/Qwen-shaped model
#
# The five pieces together are one `GPTConfig`: the fields are `norm="rmsnorm"`,
# `position="rope"`, `activation="swiglu"`, `n_kv_head`, `qk_norm`, and `bias=False` (Llama has
# no biases; Qwen2 keeps them on Q, K and V: `qkv_bias=True`). A tiny one with random weights:

# %% [markdown] lang="zh"
# ## 一个 Llama/Qwen 结构的模型
#
# 五个零件合在一起，就是一个 `GPTConfig`：字段是 `norm="rmsnorm"`、`position="rope"`、
# `activation="swiglu"`、`n_kv_head`、`qk_norm`，以及 `bias=False`（Llama 没有偏置；
# Qwen2 只在 Q、K、V 上保留偏置：`qkv_bias=True`）。一个权重随机的小模型：

# %%
config = GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, d_ff=64, bias=False,
                   norm="rmsnorm", position="rope", activation="swiglu", qk_norm=True, tie_weights=False,
                   init_std=0.3)
torch.manual_seed(0)
model = GPT(config).eval()
print(model.blocks[0])
print(f"{model.num_params():,} parameters; position table: {model.pos_emb}; RoPE: {type(model.rotary).__name__}")
assert model.pos_emb is None and model.final_norm.__class__ is RMSNorm

# %% [markdown] lang="en"
# ### Against Hugging Face
#
# Is this *really* Llama? `transformers` builds a tiny Llama, Qwen2 and Qwen3 with random
# weights here (nothing is downloaded), `save_pretrained` writes each as a Hugging Face
# directory, `glassformer.load` reads it into the layers above, and the two libraries' logits
# are compared. Norm scales and biases are perturbed away from 1 and 0 first, so that a
# missing or swapped one would show.

# %% [markdown] lang="zh"
# ### 和 Hugging Face 对比
#
# 这*真的*是 Llama 吗？下面用 `transformers` 当场搭一个随机权重的小 Llama、Qwen2 和 Qwen3（不下载任何东西），
# 用 `save_pretrained` 存成 Hugging Face 目录，再用 `glassformer.load` 读进上面那些层，比较两边的 logits。
# 先把归一化的缩放和偏置从 1 和 0 扰动开，这样漏掉或弄错任何一个都会暴露出来。

# %%
import importlib.util
import tempfile

if importlib.util.find_spec("transformers") is None:
    learn.show(en="transformers is not installed (pip install transformers): the comparison is skipped.",
               zh="没有安装 transformers（pip install transformers）：跳过这一步对比。")
else:
    import warnings

    warnings.filterwarnings("ignore", module="tqdm")  # transformers' progress bars: not in a notebook's output
    import transformers

    transformers.utils.logging.disable_progress_bar()
    families = {name: getattr(transformers, cls) for name, cls in
                (("llama", "LlamaConfig"), ("qwen2", "Qwen2Config"), ("qwen3", "Qwen3Config"))
                if hasattr(transformers, cls)}  # Qwen3 needs transformers 4.51 or later
    ids = torch.randint(0, 61, (1, 16), generator=torch.Generator().manual_seed(0))
    for family, hf_config in families.items():
        torch.manual_seed(0)
        hf = transformers.AutoModelForCausalLM.from_config(
            hf_config(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5),
            attn_implementation="eager")
        with torch.no_grad():
            for name, p in hf.named_parameters():
                p.copy_(1 + 0.3 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
        with tempfile.TemporaryDirectory() as folder:
            hf.float().eval().save_pretrained(folder)
            ours, _ = glassformer.load(folder)
        with torch.no_grad():
            diff = float((ours(ids) - hf(ids).logits).abs().max())
        c = ours.config
        print(f"{family:6}: n_head {c.n_head}, n_kv_head {c.kv_heads}, qk_norm {c.qk_norm!s:5}, "
              f"qkv_bias {bool(c.qkv_bias)!s:5} | largest logit difference {diff:.1e}")
        assert diff < 1e-4  # float32, logits of a few units: rounding alone is ~1e-6

# %% [markdown] lang="en"
# The same numbers to within float32 rounding, for all three. `glassformer.load` reads a real
# download the same way (see the guide *Llama, Mistral, Qwen2 and Qwen3*).
#
# ## Asking why
#
# A model that predicts well still leaves the question *why*. glassformer's
# `glassformer.observe.analysis` has four tools, each a function of the model and a text:
#
# - **logit lens**: read the residual stream after each block as if it were the last — what
#   would the model predict if it stopped there?
# - **attribution**: split one logit into the direct contribution of each head and feed-forward;
# - **ablation**: remove a head and see the prediction change;
# - **activation patching**: run a *corrupted* text, copy one activation from the *clean* run,
#   and see how much of the clean answer comes back.
#
# To mean something they need a model that has learned something. The bundled corpus (the
# village stories that `glassformer train lm` uses without `--data`) counts things aloud —
# "one, two, three, …" — so after *"one, t"* comes *w* (two) and after *"two, t"* comes *h*
# (three): the next character depends on a word five characters back, which only attention
# can fetch. A modern-style model of 2 layers, 4 query heads sharing 2 K/V heads, q/k norms,
# trained for 300 steps (about ten seconds):

# %% [markdown] lang="zh"
# 三个模型都一样，差别只在 float32 的舍入误差以内。`glassformer.load` 读真正下载的模型也是这样
# （见指南 *Llama, Mistral, Qwen2 and Qwen3*）。
#
# ## 问一问为什么
#
# 模型预测得准，还留下一个问题：*为什么*？glassformer 的 `glassformer.observe.analysis` 提供四个工具，
# 都只需要模型和一段文本：
#
# - **logit 透镜**（logit lens）：把每一层之后的残差流当作最后一层来读——如果模型在这里停下，会预测什么？
# - **归因**（attribution）：把一个 logit 拆成每个注意力头和每个前馈网络的直接贡献；
# - **消融**（ablation）：去掉一个头，看预测怎么变；
# - **激活修补**（activation patching）：运行一段*被改坏*的文本，从*干净*文本的运行里拷贝一个激活值过来，
#   看干净的答案能恢复多少。
#
# 这些工具要在学到了东西的模型上才有意义。自带的语料（`glassformer train lm` 不给 `--data` 时用的村庄故事）
# 里经常数数——"one, two, three, …"——所以 *"one, t"* 后面是 *w*（two），*"two, t"* 后面是 *h*（three）：
# 下一个字符取决于五个字符之前的那个词，只有注意力能把它取过来。训练一个现代结构的模型：
# 2 层，4 个查询头共用 2 个键/值头，带 q/k 归一化，训练 300 步（大约十秒）：

# %%
from glassformer.training.lm import train_lm

result = train_lm("modern-run", preset="shakespeare-char-fast", overwrite=True, progress=False, overrides=[
    "n_kv_head=2", "qk_norm=true", "block_size=32", "batch_size=16", "max_iters=300", "lr_decay_iters=300",
    "warmup_iters=20", "eval_interval=300", "eval_iters=2"])
trained, tok = glassformer.load("modern-run")
c = trained.config
print(f"norm={c.norm} position={c.position} activation={c.activation} n_head={c.n_head} n_kv_head={c.n_kv_head} "
      f"qk_norm={c.qk_norm}; validation loss {result['val_loss']:.2f}")

clean, corrupt = "They counted: one, t", "They counted: two, t"
w, h = tok.encode("w")[0], tok.encode("h")[0]
for text in (clean, corrupt):
    with torch.no_grad():
        p = torch.softmax(trained(torch.tensor([tok.encode(text)]))[0, -1], -1)
    print(f"{text!r:24} → p(w) = {float(p[w]):.2f}, p(h) = {float(p[h]):.2f}")
    assert (p[w] > p[h]) == (text == clean)  # "one, t" → w (two); "two, t" → h (three)

# %% [markdown] lang="en"
# ### Logit lens
#
# The top prediction read after the embedding and after each block, at the last position of
# *"one, t"*. The last row is the model's own output (the lens's last entry equals the logits):

# %% [markdown] lang="zh"
# ### logit 透镜
#
# 在 *"one, t"* 的最后一个位置，分别读取词嵌入之后和每一层之后的最可能预测。最后一行就是模型自己的输出
# （透镜的最后一项等于模型的 logits）：

# %%
ids = tok.encode(clean)
lens = analysis.logit_lens(trained, ids, positions=[-1])  # (n_layer + 1, 1, V)
for i, row in enumerate(lens[:, 0]):
    p = torch.softmax(row, -1)
    best = p.topk(3)
    where = "embedding" if i == 0 else f"block {i}"
    print(f"{where:>9}: " + "  ".join(f"{tok.decode([j])!r} {float(v):.2f}"
                                      for v, j in zip(best.values, best.indices.tolist())))
with torch.no_grad():
    assert torch.allclose(lens[-1, 0], trained(torch.tensor([ids]))[0, -1], atol=1e-5)

# %% [markdown] lang="en"
# ### Attribution
#
# The logit of *w* split into each head's and each feed-forward's direct share, with the final
# RMSNorm's divisor frozen at its actual value (so the norm is linear and the shares add up):

# %% [markdown] lang="zh"
# ### 归因
#
# 把 *w* 的 logit 拆成每个头、每个前馈网络的直接贡献；最后那个 RMSNorm 的除数固定为它的实际值
# （这样归一化是线性的，各部分可以直接相加）：

# %%
attr = analysis.attribute(trained, ids, target=w)
print(attr)
layer, head, value = next(t for t in attr.top(c.n_layer * (c.n_head + 1)) if t[1] is not None)
against = value < 0  # a head may argue against the prediction
learn.show(en=f"The head with the largest direct effect: block {layer + 1}, head {head + 1} ({value:+.2f})"
              + ("; negative: it pushes against w." if against else "."),
           zh=f"直接作用最大的头：第 {layer + 1} 层第 {head + 1} 个头（{value:+.2f}）"
              + ("；是负的：它在压低 w。" if against else "。"))
assert abs(attr.total() - attr.logit) < 1e-3

# %% [markdown] lang="en"
# ### Exercise 4
#
# Attribution is exact bookkeeping: the parts add up to the logit. For the random
# Llama-shaped `model` built above (seed 0), on the ids `[3, 14, 15, 9, 26, 5]`, split the logit
# of token 7 and add up its parts.

# %% [markdown] lang="zh"
# ### 练习 4
#
# 归因是一本精确的账：各部分加起来正好是 logit。对上面搭的随机 Llama 结构模型 `model`（种子 0），
# 在 ids `[3, 14, 15, 9, 26, 5]` 上拆分词元 7 的 logit，再把各部分加起来。

# %%
answer = None  # your number here
learn.check("modern.attribution_sum", answer)

# %% tags=["solution"]
parts = analysis.attribute(model, [3, 14, 15, 9, 26, 5], target=7)
assert learn.check("modern.attribution_sum", float(parts.heads.sum() + parts.ffn.sum()) + sum(parts.remaining.values()))

# %% [markdown] lang="en"
# ### Ablation
#
# Attribution counts only *direct* effects. Removing a head (its output set to zero) also
# removes what later layers built on it. Each head in turn, and the change in $\log p(w)$:

# %% [markdown] lang="zh"
# ### 消融
#
# 归因只算*直接*贡献。去掉一个头（把它的输出置零），后面各层在它之上算出的东西也一起没了。
# 依次去掉每个头，看 $\log p(w)$ 的变化：

# %%
def log_p(logits: torch.Tensor) -> float:
    return float(torch.log_softmax(logits[-1], -1)[w])


before = log_p(analysis.ablate(trained, ids))  # nothing removed: the model itself
changes = {(i, j): log_p(analysis.ablate(trained, ids, heads=[(i, j)])) - before
           for i in range(c.n_layer) for j in range(c.n_head)}
print(f"log p(w) = {before:.3f}")
for i in range(c.n_layer):
    print(f"block {i + 1}: " + "  ".join(f"head {j + 1} {changes[i, j]:+.3f}" for j in range(c.n_head)))
worst = min(changes, key=changes.get)
learn.show(en=f"Removing block {worst[0] + 1}, head {worst[1] + 1} costs the most: "
              f"log p(w) falls by {-changes[worst]:.2f}.",
           zh=f"去掉第 {worst[0] + 1} 层第 {worst[1] + 1} 个头损失最大：log p(w) 下降 {-changes[worst]:.2f}。")
assert changes[worst] < 0

# %% [markdown] lang="en"
# ### Activation patching
#
# Run the corrupted *"two, t"* and, one site at a time (the residual stream at one layer and
# position, or one head's output), copy in the activation of the clean *"one, t"*. The score
# is $\text{logit}(w) - \text{logit}(h)$ at the last position, scaled so that the corrupt run
# scores 0 and the clean run 1. Rows: the residual stream after the
# embedding and after each block; columns: the last eight positions.

# %% [markdown] lang="zh"
# ### 激活修补
#
# 运行被改坏的 *"two, t"*，每次只把一处激活值（某一层某个位置的残差流，或一个头的输出）
# 换成干净文本 *"one, t"* 的。分数是最后一个位置的 $\text{logit}(w) - \text{logit}(h)$，
# 缩放到被改坏的运行为 0、干净的运行为 1。行是词嵌入之后和每一层之后的残差流，列是最后八个位置。

# %%
patched = analysis.patch(trained, ids, tok.encode(corrupt), target=w, foil=h)
T = len(ids)
print("          " + "".join(f"{clean[p]!r:>6}" for p in range(T - 8, T)))
for label, row in zip(patched.layer_labels, patched.resid[:, T - 8:]):
    print(f"{label:>9} " + "".join(f"{float(v):+6.2f}" for v in row))
print("heads (all positions):")
for i, row in enumerate(patched.heads):
    print(f"  block {i + 1}: " + "  ".join(f"head {j + 1} {float(v):+.2f}" for j, v in enumerate(row)))
assert abs(float(patched.resid[-1, -1]) - 1) < 1e-4  # the last stream at the last position is the whole answer
assert float(patched.resid[:, : T - 6].abs().max()) < 1e-6  # positions before "one" are identical in both texts
assert float(patched.resid[-1, :-1].abs().max()) < 1e-6  # nothing reads the last block's other positions
best, restored = divmod(int(patched.heads.argmax()), c.n_head), float(patched.heads.max())
learn.show(en=f"The head whose clean output restores most: block {best[0] + 1}, head {best[1] + 1} ({restored:+.2f}).",
           zh=f"换上干净输出后恢复最多的头：第 {best[0] + 1} 层第 {best[1] + 1} 个头（{restored:+.2f}）。")

# %% [markdown] lang="en"
# Read it from the top: right after the embedding only the positions of *one* matter (where the
# two texts differ); after the last block only the last position does. Between them, attention
# carried the word forward, and the heads whose clean output restores most of the answer are
# the ones that carry it.
#
# The three tools answer different questions, so they need not name the same head:
# attribution counts what a head writes *directly* into the logit of *w*; ablation what is
# lost without the head, through later layers too; patching what carries the *difference*
# between *one* and *two*. (Heads and blocks are counted from 1 in these printouts, as on the
# command line; the functions count from 0.)
#
# ## Now your own model
#
# Train the same kind of model from the command line, ask it the same questions, and open
# it in the explorer, whose Steps tab shows every intermediate of a forward pass — the
# RMSNorm divisors, the rotated queries and keys, each K/V head with the query heads that
# read it, the SwiGLU gate:
#
# ```bash
# glassformer train lm --out my-modern --overwrite --preset shakespeare-char-fast \
#     --set n_kv_head=2 --set qk_norm=true --set block_size=32 --set batch_size=16 \
#     --set max_iters=300 --set lr_decay_iters=300 --set eval_interval=300
# glassformer explain --model my-modern --text "They counted: one, t" --attribute w
# glassformer explain --model my-modern --text "They counted: one, t" --patch "They counted: two, t"
# glassformer explore --model my-modern
# ```
#
# Try `--set n_kv_head=1` (multi-query) or `--set qk_norm=false` and compare the printouts.
# Then a harder count: does your model continue *"four, f"* with *i* (five)? After 300 steps it
# may not yet; train longer (`--set max_iters=1000 --set lr_decay_iters=1000`) and ask again.

# %% [markdown] lang="zh"
# 从上往下读：刚过词嵌入时，只有 *one* 所在的几个位置有影响（两段文本只在那里不同）；最后一层之后，
# 只有最后一个位置有影响。在这中间，是注意力把这个词带到了后面；换上干净输出后恢复答案最多的那些头，
# 就是搬运它的头。
#
# 三个工具回答的是不同的问题，所以点名的头不一定相同：归因算的是一个头*直接*写进 *w* 的 logit 的量；
# 消融算的是去掉这个头之后损失了多少（包括经过后面各层的间接作用）；激活修补看的是谁在传递 *one* 和 *two*
# 之间的*差别*。（这些打印结果里层和头都从 1 开始数，和命令行一致；函数本身从 0 开始数。）
#
# ## 现在轮到你自己的模型
#
# 在命令行里训练同一种模型，问它同样的问题，再用浏览器里的 explorer 打开它。explorer 的 Steps
# 标签页会显示一次前向计算的每个中间结果：RMSNorm 的除数、旋转后的查询和键、每个键/值头以及读它的查询头、
# SwiGLU 的门：
#
# ```bash
# glassformer train lm --out my-modern --overwrite --preset shakespeare-char-fast \
#     --set n_kv_head=2 --set qk_norm=true --set block_size=32 --set batch_size=16 \
#     --set max_iters=300 --set lr_decay_iters=300 --set eval_interval=300
# glassformer explain --model my-modern --text "They counted: one, t" --attribute w --lang zh
# glassformer explain --model my-modern --text "They counted: one, t" --patch "They counted: two, t" --lang zh
# glassformer explore --model my-modern --lang zh
# ```
#
# 试试 `--set n_kv_head=1`（多查询注意力）或 `--set qk_norm=false`，比较打印结果。再考它一个难一点的：
# *"four, f"* 之后，你的模型会接 *i*（five）吗？训练 300 步时它可能还不会；多训练一会儿
# （`--set max_iters=1000 --set lr_decay_iters=1000`）再问它。
