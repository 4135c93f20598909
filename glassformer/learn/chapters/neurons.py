# %% [markdown] lang="en"
# # 1. Neurons from nothing
#
# The articles start with pen and paper: an object described by four numbers, a network of
# 4 inputs, 3 hidden neurons and 2 outputs, and the question *leaf or flower?* This chapter
# computes every number they compute, with glassformer's own code beside each step, and
# asserts the articles' figures (−26.6, −26.35, −47.1, the loss 0.4), so that nothing here can
# drift from what they print.

# %% [markdown] lang="zh"
# # 1. 从零开始的神经元
#
# 文章从纸和笔开始：一个物体用四个数描述，一个 4 个输入、3 个隐藏神经元、2 个输出的网络，
# 问题是：*这是叶子还是花？* 本章把文章里算过的每一个数都重新算一遍，每一步旁边都有
# glassformer 自己的代码，并且断言文章给出的数字（−26.6、−26.35、−47.1、损失 0.4），
# 这样这里的数字永远不会和文章对不上。

# %%
import numpy as np

from glassformer import learn
from glassformer.explain.basics import network as net

# %% [markdown] lang="en"
# ## One neuron is a weighted sum
#
# The object is a colour and a volume: $x = (R, G, B, \text{volume}) = (32, 107, 56, 11.2)$.
# The first hidden neuron has the weights $w = (0.10, -0.29, -0.07, 0.46)$. It multiplies each
# input by its weight and adds them up:
#
# $$z_1 = \sum_i w_i x_i = 32 \times 0.10 + 107 \times (-0.29) + 56 \times (-0.07) + 11.2 \times 0.46$$

# %% [markdown] lang="zh"
# ## 一个神经元就是一次加权求和
#
# 物体由颜色和体积描述：$x = (R, G, B, \text{体积}) = (32, 107, 56, 11.2)$。
# 第一个隐藏神经元的权重是 $w = (0.10, -0.29, -0.07, 0.46)$。它把每个输入乘以对应的权重，再全部加起来：
#
# $$z_1 = \sum_i w_i x_i = 32 \times 0.10 + 107 \times (-0.29) + 56 \times (-0.07) + 11.2 \times 0.46$$

# %%
x = net.LEAF_X
w = net.LEAF_W1[0]
products = x * w
print("x        =", x)
print("w        =", w)
print("x * w    =", products.round(3))
print("sum      =", products.sum().round(3))
print(net.weighted_sum_text(x, w))
assert round(products.sum(), 1) == -26.6  # the article's first neuron

# %% [markdown] lang="en"
# The neuron also has a **bias** $b = 0.25$, a number added whatever the input: a weight on a
# constant input of 1. With it the first neuron gives −26.35, as the article says. The second
# neuron's weighted sum is the article's −47.1. (The article shows only the R and G weights of
# that neuron in its text; glassformer chose the B and volume weights so that the sum comes to
# −47.1, and says so in `glassformer explain basics`.)

# %% [markdown] lang="zh"
# 神经元还有一个**偏置** $b = 0.25$：不管输入是什么都会加上的一个数，相当于一个常数输入 1 的权重。
# 加上偏置后第一个神经元得到 −26.35，和文章一致。第二个神经元的加权和就是文章里的 −47.1。
# （文章正文只给出了这个神经元 R 和 G 的权重；B 和体积的权重是 glassformer 选的，使加权和正好等于
# −47.1，`glassformer explain basics` 里也这样说明。）

# %%
sums = net.LEAF_W1 @ x  # (3, 4) @ (4,) -> (3,): all three hidden neurons at once
with_bias = sums + net.LEAF_B1
print("weighted sums:", sums.round(3))
print("plus biases:  ", with_bias.round(3))
assert round(with_bias[0], 2) == -26.35  # the article's first neuron with its bias
assert round(sums[1], 1) == -47.1  # the article's second neuron

# %% [markdown] lang="en"
# ### Exercise 1
#
# Compute the first neuron's weighted sum yourself, by hand or in Python, and check it. Replace
# `None` with your number; `learn.check` compares it with what the library computes.

# %% [markdown] lang="zh"
# ### 练习 1
#
# 自己算一下第一个神经元的加权和（手算或用 Python 都可以），然后检查。把 `None` 换成你的答案；
# `learn.check` 会把它和程序算出的值比较。

# %%
answer = None  # your number here
learn.check("neurons.first_neuron", answer)

# %% tags=["solution"]
assert learn.check("neurons.first_neuron", 32 * 0.10 + 107 * -0.29 + 56 * -0.07 + 11.2 * 0.46)

# %% [markdown] lang="en"
# And with the bias, to two decimals:

# %% [markdown] lang="zh"
# 再加上偏置，保留两位小数：

# %%
answer = None  # your number here
learn.check("neurons.first_neuron_bias", answer)

# %% tags=["solution"]
assert learn.check("neurons.first_neuron_bias", -26.598 + 0.25)

# %% [markdown] lang="en"
# ## From sums to an answer: ReLU, scores, softmax
#
# A negative sum means "this feature is absent"; the **ReLU** activation keeps positive sums
# and turns negative ones into 0: $h = \max(0, z)$, so $h = 0$ wherever $z < 0$. The output
# layer weighs the hidden values into two scores, one for *leaf* and one for *flower*, and **softmax** turns scores into
# probabilities that add up to 1:
#
# $$p_j = \frac{e^{s_j}}{\sum_k e^{s_k}}$$

# %% [markdown] lang="zh"
# ## 从加权和到答案：ReLU、分数、softmax
#
# 加权和为负表示“这个特征不存在”；**ReLU** 激活函数保留正值，把负值变成 0：$h = \max(0, z)$，即 $z < 0$ 时 $h = 0$。
# 输出层把隐藏值加权成两个分数，一个是*叶子*，一个是*花*；**softmax** 把分数变成加起来等于 1 的概率：
#
# $$p_j = \frac{e^{s_j}}{\sum_k e^{s_k}}$$

# %%
f = net.forward(x, net.LEAF_W1, net.LEAF_W2, net.LEAF_Y, net.LEAF_B1)
print("z (sums + bias):", f["z1"].round(3))
print("h = ReLU(z):    ", f["h"].round(3))
print("scores (leaf, flower):", f["z2"].round(3))
print("probabilities:        ", f["p"].round(3))
learn.show(en=f"The untrained network says {'leaf' if f['p'][0] > f['p'][1] else 'flower'}; the object is a leaf.",
           zh=f"未训练的网络说这是{'叶子' if f['p'][0] > f['p'][1] else '花'}；其实它是叶子。")
assert np.isclose(f["p"].sum(), 1.0)

# %% [markdown] lang="en"
# ### Exercise 2
#
# The activations section of `glassformer explain basics` uses the scores $(2.0, 1.0, 0.1)$.
# What is the first probability of their softmax?

# %% [markdown] lang="zh"
# ### 练习 2
#
# `glassformer explain basics` 的激活函数一节用的分数是 $(2.0, 1.0, 0.1)$。它们经过 softmax 后第一个概率是多少？

# %%
answer = None  # your number here
learn.check("neurons.softmax_first", answer)

# %% tags=["solution"]
e = np.exp([2.0, 1.0, 0.1])
assert learn.check("neurons.softmax_first", e[0] / e.sum())

# %% [markdown] lang="en"
# ## How wrong is it? The loss
#
# The articles measure the error with an example: the answer wanted is (leaf 0.8, flower 0.2),
# the network gave (0.6, 0.4). Adding the absolute differences gives the article's loss 0.4.
# (Squaring them instead would give 0.08.) Training a classifier uses the **cross-entropy**
# $-\log p_{\text{true class}}$, which is what the backward pass below differentiates.

# %% [markdown] lang="zh"
# ## 错得有多离谱？损失函数
#
# 文章用一个例子来衡量误差：期望的答案是（叶子 0.8，花 0.2），网络给出的是 (0.6, 0.4)。
# 把差的绝对值加起来，就得到文章里的损失 0.4。（如果改成平方和，会得到 0.08。）
# 训练分类器通常用**交叉熵** $-\log p_{\text{正确类别}}$，下面的反向传播就是对它求导。

# %%
loss = net.absolute_loss(net.LOSS_WANTED, net.LOSS_GOT)
print("|0.8 - 0.6| + |0.2 - 0.4| =", round(loss, 4))
print("cross-entropy of the network above:", round(f["loss"], 4))
assert round(loss, 1) == 0.4  # the article's loss

# %%
answer = None  # your number here
learn.check("neurons.loss_example", answer)

# %% tags=["solution"]
assert learn.check("neurons.loss_example", abs(0.8 - 0.6) + abs(0.2 - 0.4))

# %% [markdown] lang="en"
# ## Gradient descent, step by step
#
# To make the loss smaller, change each weight a little against its **gradient**, the slope of
# the loss with respect to that weight. The chain rule gives every gradient from the output
# backwards. For softmax followed by cross-entropy the first step is remarkably simple:
# $\partial L / \partial s = p - y$, with $y$ the one-hot true answer. glassformer computes each
# gradient by hand and checks it against PyTorch's autograd:

# %% [markdown] lang="zh"
# ## 梯度下降，一步一步来
#
# 要让损失变小，就把每个权重沿着它的**梯度**（损失对这个权重的斜率）的反方向改一点点。
# 链式法则从输出往回算出所有梯度。softmax 加交叉熵的第一步特别简单：
# $\partial L / \partial s = p - y$，其中 $y$ 是正确答案的独热向量。glassformer 手工算出每个梯度，
# 并和 PyTorch 的自动求导对比：

# %%
g = net.backward(x, net.LEAF_W1, net.LEAF_W2, net.LEAF_Y, net.LEAF_B1)
auto = net.autograd_grads(x, net.LEAF_W1, net.LEAF_W2, net.LEAF_Y, net.LEAF_B1)
print("dL/ds = p - y:", g["dz2"].round(4))
print("dL/dh = W2ᵀ (p - y):", g["dh"].round(4))
print("ReLU lets the gradient through where z > 0:", g["mask"])
for name in ("dw1", "db1", "dw2"):
    print(f"{name}: by hand vs autograd, largest difference {np.abs(g[name] - auto[name]).max():.1e}")
    assert np.allclose(g[name], auto[name], rtol=0, atol=1e-12)  # float64 both ways

# %% [markdown] lang="en"
# One step of size $\eta = 0.0005$ (the inputs are in the hundreds, so the steps must be tiny):
# $w \leftarrow w - \eta\, \partial L/\partial w$. Eight steps, printing the loss and the three
# hidden sums $z$ each time:

# %% [markdown] lang="zh"
# 走一步，步长 $\eta = 0.0005$（输入是几十到上百的数，所以步子必须很小）：
# $w \leftarrow w - \eta\, \partial L/\partial w$。走八步，每一步打印损失和三个隐藏神经元的加权和 $z$：

# %%
w1, b1, w2 = net.LEAF_W1.copy(), net.LEAF_B1.copy(), net.LEAF_W2.copy()
losses = []
for step in range(8):
    f = net.forward(x, w1, w2, net.LEAF_Y, b1)
    losses.append(f["loss"])
    print(f"step {step}: loss {f['loss']:.4f}   z = {f['z1'].round(2)}   p = {f['p'].round(3)}")
    g = net.backward(x, w1, w2, net.LEAF_Y, b1)
    w1, b1, w2 = w1 - net.LEAF_LR * g["dw1"], b1 - net.LEAF_LR * g["db1"], w2 - net.LEAF_LR * g["dw2"]
assert all(a > b for a, b in zip(losses[:5], losses[1:5]))  # four steps down
assert np.isclose(losses[-1], np.log(2)) and (f["z1"] <= 0).all()  # then stuck at 50/50

# %% [markdown] lang="en"
# The loss falls for four steps, then stops at $\ln 2 \approx 0.6931$: the network says 50/50
# and learns nothing more. The printout shows why. The first two neurons were negative from the
# start, and the steps pushed the third below zero as well. With every $z \le 0$, ReLU outputs
# zeros, both scores are 0, and — since ReLU's slope is 0 for negative inputs — every gradient
# through the hidden layer is 0 too. These are **dead ReLUs**; raw inputs in the hundreds make
# them likely. Real networks normalise their inputs and start from small random weights, as
# the network at the end of this chapter does.

# %% [markdown] lang="zh"
# 损失下降了四步，然后停在 $\ln 2 \approx 0.6931$：网络给出 50/50，再也学不到东西。
# 打印结果说明了原因：前两个神经元一开始就是负的，梯度下降又把第三个也推到了零以下。
# 所有 $z \le 0$ 时，ReLU 输出全是 0，两个分数都是 0；而 ReLU 在负数处斜率为 0，
# 所以经过隐藏层的梯度也全是 0。这就是“**死亡 ReLU**”；输入是几十上百的原始数值时很容易出现。
# 实际的网络会先把输入归一化，并从较小的随机权重开始，就像本章最后训练的网络那样。

# %%
answer = None  # two numbers, e.g. [0.1, -0.1]
learn.check("neurons.output_gradient", answer)

# %% tags=["solution"]
p = net.forward(x, net.LEAF_W1, net.LEAF_W2, net.LEAF_Y, net.LEAF_B1)["p"]
assert learn.check("neurons.output_gradient", p - np.array([1.0, 0.0]))

# %% [markdown] lang="en"
# ## Why activations matter
#
# Remove the ReLU and the two layers collapse into one: $W_2 (W_1 x + b_1) = (W_2 W_1) x + W_2 b_1$,
# a single weighted sum of the inputs. Stacking layers adds nothing without a nonlinearity between them.

# %% [markdown] lang="zh"
# ## 为什么需要激活函数
#
# 去掉 ReLU，两层就塌缩成一层：$W_2 (W_1 x + b_1) = (W_2 W_1) x + W_2 b_1$，
# 只是输入的一次加权求和。层与层之间没有非线性，叠再多层也没有用。

# %%
coef, const = net.linear_collapse(net.LEAF_W1, net.LEAF_B1, net.LEAF_W2)
two_layers = net.LEAF_W2 @ (net.LEAF_W1 @ x + net.LEAF_B1)
one_layer = coef @ x + const
print("W2 (W1 x + b1)   =", two_layers.round(4))
print("(W2 W1) x + W2 b1 =", one_layer.round(4))
assert np.allclose(two_layers, one_layer)

# %% [markdown] lang="en"
# ## XOR: what one neuron cannot learn
#
# XOR is 1 when exactly one of two inputs is 1. No straight line separates its four points, so a
# single perceptron never gets more than 3 of 4 right, however long it trains; a hidden layer
# solves it.

# %% [markdown] lang="zh"
# ## 异或：一个神经元学不会的东西
#
# 异或（XOR）在两个输入恰好有一个为 1 时输出 1。没有一条直线能把它的四个点分开，所以单个感知机
# 无论训练多久，最多只能对 4 个中的 3 个；加一个隐藏层就能解决。

# %%
accuracy = net.train_perceptron(epochs=50)
mlp = net.train_mlp()
print("perceptron accuracy per epoch (last 5):", accuracy[-5:])
print("two-layer network's p(y=1) for (0,0), (0,1), (1,0), (1,1):", mlp["probs"].round(3))
assert max(accuracy) <= 0.75
assert mlp["accuracy"] == 1.0

# %% [markdown] lang="en"
# ## Now your own network
#
# The same 4-3-2 network, trained by you: a hundred made-up objects (leaves greener, flowers
# redder and bigger), the weights learned with PyTorch in well under a second. Then the first
# neuron's sum for the articles' object, written out as the article writes it — with *your*
# weights. Change the seed or the data and run it again.

# %% [markdown] lang="zh"
# ## 现在训练你自己的网络
#
# 同样的 4-3-2 网络，由你来训练：一百个虚构的物体（叶子更绿，花更红、更大），用 PyTorch
# 在一秒内学出权重。然后用*你的*权重，像文章那样写出第一个神经元对文章里那个物体的加权和。
# 换个随机种子或者换组数据，再跑一遍。

# %%
import torch

torch.manual_seed(0)
n = 100
leaf = torch.rand(n, 1) < 0.5  # half leaves, half flowers
colour = torch.where(leaf, torch.tensor([40.0, 120.0, 50.0]), torch.tensor([180.0, 60.0, 90.0]))
volume = torch.where(leaf, torch.tensor([10.0]), torch.tensor([30.0]))
objects = torch.cat([colour, volume], 1) + 10 * torch.randn(n, 4)
labels = (~leaf).long().squeeze(1)  # 0 leaf, 1 flower
scale = objects.abs().mean(0)  # inputs in the hundreds: divided by their typical size to train with a normal step

model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for step in range(200):
    loss = torch.nn.functional.cross_entropy(model(objects / scale), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
accuracy = (model(objects / scale).argmax(1) == labels).float().mean().item()
print(f"loss after 200 steps: {loss.item():.3f}, accuracy: {accuracy:.0%}")

w_yours = (model[0].weight[0] / scale).detach().numpy()  # the first neuron, on raw inputs
print(net.weighted_sum_text(x, w_yours.round(2)))
assert accuracy > 0.9

# %% [markdown] lang="en"
# Next: 2. Predicting the next character, where the inputs become letters ([the course](../index.md)).
#
# To see the same steps printed in the terminal, in English or Chinese:
#
# ```bash
# glassformer explain basics --lang en
# ```

# %% [markdown] lang="zh"
# 下一章：预测下一个字符，输入变成了字母（[课程目录](../index.md)）。
#
# 在终端里用中文打印同样的步骤：
#
# ```bash
# glassformer explain basics --lang zh
# ```
