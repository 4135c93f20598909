"""Before the transformer: a tiny network, one hand-derived training step, XOR, and a
next-character model, each computed step by step and printed in English or Chinese.

    sections = basics("en")          # numbers as data (numpy arrays, floats), nothing printed
    print_basics("zh")               # the same steps rendered with rich

The four sections build on each other:
  leaf      a 4-3-2 network scores an object (R, G, B, volume) as leaf or flower
  backprop  the gradients of that network derived by hand, checked against autograd, one update
  xor       a single perceptron cannot learn XOR; two layers can
  humpty    a fixed-window character model learns a two-line text and writes more of it
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

TEXT = {
    "en": {
        "leaf.title": "1. Leaf or flower? A 4-3-2 network",
        "leaf.explain": "Four numbers describe an object; weighted sums, ReLU and softmax turn them into two scores.",
        "backprop.title": "2. One gradient-descent step, gradients by hand",
        "backprop.explain": "The chain rule, written out in NumPy, gives each gradient; autograd agrees; loss drops.",
        "xor.title": "3. XOR: one layer fails, two layers succeed",
        "xor.explain": "No single straight line separates XOR; a hidden layer bends the space so one can.",
        "humpty.title": "4. Humpty dumpty: predicting the next character",
        "humpty.explain": "The previous characters are embedded, concatenated and scored against every character.",
        "input": "input (R, G, B, volume)",
        "hidden": "hidden neuron",
        "relu": "ReLU(z) = max(0, z)",
        "scores": "output scores",
        "probs": "softmax probabilities",
        "predicted": "predicted",
        "truth": "true label",
        "loss": "cross-entropy loss = −log p(true)",
        "classes": ("leaf", "flower"),
        "check": "max |hand − autograd|",
        "update": "update W ← W − lr·dW with lr",
        "before_after": "loss before → after the update",
        "perceptron": "perceptron accuracy per epoch",
        "mlp": "two-layer MLP loss (every 200 steps)",
        "accuracy": "accuracy",
        "vocab": "vocabulary",
        "pairs": "training pairs (context → next)",
        "train_loss": "training loss",
        "generated": "generated from",
    },
    "zh": {
        "leaf.title": "1. 叶子还是花?一个 4-3-2 的神经网络",
        "leaf.explain": "四个数字描述一个物体;加权求和、ReLU 和 softmax 把它们变成两个分数。",
        "backprop.title": "2. 一步梯度下降,手推梯度",
        "backprop.explain": "用 NumPy 写出链式法则得到每个梯度;与自动求导一致;损失下降。",
        "xor.title": "3. 异或:一层做不到,两层可以",
        "xor.explain": "没有一条直线能分开异或;隐藏层把空间弯折,使一条直线就够了。",
        "humpty.title": "4. Humpty dumpty:预测下一个字符",
        "humpty.explain": "前几个字符被嵌入、拼接,再与每个字符打分。",
        "input": "输入 (R, G, B, 体积)",
        "hidden": "隐藏神经元",
        "relu": "ReLU(z) = max(0, z)",
        "scores": "输出分数",
        "probs": "softmax 概率",
        "predicted": "预测",
        "truth": "真实标签",
        "loss": "交叉熵损失 = −log p(真实)",
        "classes": ("叶子", "花"),
        "check": "最大 |手推 − 自动求导|",
        "update": "更新 W ← W − lr·dW,学习率 lr",
        "before_after": "更新前 → 更新后的损失",
        "perceptron": "感知机每轮的准确率",
        "mlp": "两层 MLP 的损失(每 200 步)",
        "accuracy": "准确率",
        "vocab": "词表",
        "pairs": "训练样本(上下文 → 下一个字符)",
        "train_loss": "训练损失",
        "generated": "生成,起始于",
    },
}


@dataclass
class Matrix:
    """A named array with row and column labels, so a renderer can draw it as a table."""

    name: str
    values: np.ndarray
    rows: list[str]
    cols: list[str]


@dataclass
class Section:
    key: str
    title: str
    explanation: str
    lines: list[str] = field(default_factory=list)  # ready-to-print steps, in the chosen language
    matrices: list[Matrix] = field(default_factory=list)
    values: dict = field(default_factory=dict)  # the raw numbers, for tests and other renderers


# -- formatting ---------------------------------------------------------------------------------


def _num(v: float, fmt: str = ".2f") -> str:
    s = format(float(v), fmt)
    if float(s) == 0:
        s = s.lstrip("-")  # no "−0.000" for values that round to zero
    return s.replace("-", "−")  # a typographic minus, as the articles print it


def _vec(v: np.ndarray, fmt: str = ".3f") -> str:
    return "[" + ", ".join(_num(x, fmt) for x in v) + "]"


def weighted_sum_text(x: np.ndarray, w: np.ndarray) -> str:
    """'32×0.10 + 107×(−0.29) + ... = −26.6': one neuron's sum written out by hand."""
    terms = []
    for xi, wi in zip(x, w):
        ws = _num(wi)
        terms.append(f"{xi:g}×({ws})" if wi < 0 else f"{xi:g}×{ws}")
    return " + ".join(terms) + " = " + _num(x @ w, ".1f")


# -- section 1: leaf or flower ---------------------------------------------------------------------

# The object and the first hidden neuron's weights (0.10, −0.29, −0.07, 0.46) are the
# article's. Its other weights live in a figure we could not retrieve, so hidden neurons
# 2-3 and the whole output layer are ours, picked so that the untrained network gets this
# leaf wrong (calls it a flower) and section 2 has something to fix.
LEAF_X = np.array([32.0, 107.0, 56.0, 11.2])  # R, G, B, volume (ml)
LEAF_W1 = np.array(
    [
        [0.10, -0.29, -0.07, 0.46],  # article
        [0.02, 0.05, -0.03, 0.10],  # ours
        [-0.04, 0.03, 0.08, -0.20],  # ours
    ]
)
LEAF_W2 = np.array(
    [
        [0.30, 0.25, -0.10],  # leaf score (ours)
        [-0.20, 0.10, 0.40],  # flower score (ours)
    ]
)
LEAF_Y = 0  # the object really is a leaf
# Inputs are raw, unnormalised values in the hundreds, so a step must be tiny.
LEAF_LR = 5e-4


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())  # shifting by the max changes nothing but avoids overflow
    return e / e.sum()


def forward(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, y: int) -> dict:
    """Every intermediate of the 4-3-2 network (no biases, as in the article)."""
    z1 = w1 @ x  # (3,) weighted sums
    h = np.maximum(z1, 0.0)  # (3,) ReLU
    z2 = w2 @ h  # (2,) scores
    p = softmax(z2)
    return {"z1": z1, "h": h, "z2": z2, "p": p, "loss": float(-np.log(p[y]))}


def _leaf_section(t: dict) -> Section:
    f = forward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y)
    classes = t["classes"]
    lines = [f"{t['input']}: {_vec(LEAF_X, 'g')}"]
    for i, w in enumerate(LEAF_W1):
        lines.append(f"{t['hidden']} {i + 1}: {weighted_sum_text(LEAF_X, w)}")
    lines += [
        f"{t['relu']}: {_vec(f['z1'], '.1f')} → {_vec(f['h'], '.1f')}",
        f"{t['scores']} ({classes[0]}, {classes[1]}): {_vec(f['z2'])}",
        f"{t['probs']}: {_vec(f['p'])}",
        f"{t['predicted']}: {classes[int(np.argmax(f['p']))]}   {t['truth']}: {classes[LEAF_Y]}",
        f"{t['loss']}: {_num(f['loss'], '.4f')}",
    ]
    inputs = ["R", "G", "B", "vol"]
    hidden = ["h1", "h2", "h3"]
    matrices = [Matrix("W1", LEAF_W1, hidden, inputs), Matrix("W2", LEAF_W2, list(classes), hidden)]
    values = dict(f, x=LEAF_X, w1=LEAF_W1, w2=LEAF_W2, predicted=int(np.argmax(f["p"])))
    return Section("leaf", t["leaf.title"], t["leaf.explain"], lines, matrices, values)


# -- section 2: backpropagation by hand ------------------------------------------------------------


def backward(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, y: int) -> dict:
    """The gradients of the cross-entropy loss, one chain-rule step per line."""
    f = forward(x, w1, w2, y)
    onehot = np.eye(len(f["p"]))[y]
    dz2 = f["p"] - onehot  # softmax + cross-entropy collapse to p − y
    dw2 = np.outer(dz2, f["h"])  # (2, 3): score j depends on w2[j, k] through h[k]
    dh = w2.T @ dz2  # (3,) each hidden unit feeds both scores
    mask = (f["z1"] > 0).astype(float)  # ReLU passes gradient only where it was active
    dz1 = dh * mask
    dw1 = np.outer(dz1, x)  # (3, 4)
    return {"dz2": dz2, "dw2": dw2, "dh": dh, "mask": mask, "dz1": dz1, "dw1": dw1}


def autograd_grads(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, y: int) -> dict:
    """The same gradients from torch autograd, in float64 so the comparison is exact to ~1e-15."""
    tw1 = torch.tensor(w1, requires_grad=True)
    tw2 = torch.tensor(w2, requires_grad=True)
    scores = tw2 @ torch.relu(tw1 @ torch.tensor(x))
    loss = torch.nn.functional.cross_entropy(scores[None], torch.tensor([y]))
    loss.backward()
    return {"dw1": tw1.grad.numpy(), "dw2": tw2.grad.numpy()}


def _backprop_section(t: dict) -> Section:
    before = forward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y)
    g = backward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y)
    ref = autograd_grads(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y)
    diffs = {k: float(np.abs(g[k] - ref[k]).max()) for k in ("dw1", "dw2")}
    w1_new = LEAF_W1 - LEAF_LR * g["dw1"]
    w2_new = LEAF_W2 - LEAF_LR * g["dw2"]
    after = forward(LEAF_X, w1_new, w2_new, LEAF_Y)
    lines = [
        f"{t['probs']}: {_vec(before['p'])}   {t['loss']}: {_num(before['loss'], '.4f')}",
        f"dL/dz2 = p − y = {_vec(g['dz2'])}",
        f"dL/dW2 = (dL/dz2) ⊗ h, h = {_vec(before['h'], '.2f')}",
        f"dL/dh = W2ᵀ · dL/dz2 = {_vec(g['dh'])}",
        f"ReLU mask (z1 > 0) = {_vec(g['mask'], '.0f')}",
        f"dL/dz1 = dL/dh ⊙ mask = {_vec(g['dz1'])}",
        "dL/dW1 = (dL/dz1) ⊗ x",
        f"{t['check']}: dW1 {diffs['dw1']:.1e}, dW2 {diffs['dw2']:.1e}",
        f"{t['update']} = {LEAF_LR:g}",
        f"{t['before_after']}: {_num(before['loss'], '.4f')} → {_num(after['loss'], '.4f')}",
        f"{t['probs']}: {_vec(before['p'])} → {_vec(after['p'])}",
    ]
    hidden, classes = ["h1", "h2", "h3"], list(t["classes"])
    matrices = [
        Matrix("dL/dW2", g["dw2"], classes, hidden),
        Matrix("dL/dW1", g["dw1"], hidden, ["R", "G", "B", "vol"]),
        Matrix("W1 (new)", w1_new, hidden, ["R", "G", "B", "vol"]),
    ]
    values = dict(
        g,
        autograd=ref,
        max_diff=diffs,
        loss_before=before["loss"],
        loss_after=after["loss"],
        w1_new=w1_new,
        w2_new=w2_new,
        lr=LEAF_LR,
    )
    return Section("backprop", t["backprop.title"], t["backprop.explain"], lines, matrices, values)


# -- section 3: XOR --------------------------------------------------------------------------------

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0.0, 1.0, 1.0, 0.0])


def train_perceptron(epochs: int = 20, lr: float = 0.1) -> list[float]:
    """Rosenblatt's rule with a step output; returns the accuracy after every epoch.

    A line can get at most 3 of XOR's 4 points right, so this never passes 75%: the
    weights keep cycling instead of converging."""
    w, b = np.zeros(2), 0.0
    accuracies = []
    for _ in range(epochs):
        for x, y in zip(XOR_X, XOR_Y):
            err = y - float(w @ x + b > 0)
            w, b = w + lr * err * x, b + lr * err
        accuracies.append(float(((XOR_X @ w + b > 0) == XOR_Y).mean()))
    return accuracies


def train_mlp(hidden: int = 8, steps: int = 1000, lr: float = 1.0, seed: int = 0) -> dict:
    """A 2-hidden-1 network (tanh, then sigmoid) trained on all four points with plain gradient descent."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(0, 1, (2, hidden)), np.zeros(hidden)
    w2, b2 = rng.normal(0, 1, hidden), 0.0
    losses = []
    for _ in range(steps):
        h = np.tanh(XOR_X @ w1 + b1)  # (4, hidden)
        p = 1 / (1 + np.exp(-(h @ w2 + b2)))  # (4,)
        losses.append(float(-np.mean(XOR_Y * np.log(p) + (1 - XOR_Y) * np.log(1 - p))))
        # Sigmoid + binary cross-entropy give (p − y), as softmax + CE did in section 2.
        dlogit = (p - XOR_Y) / len(XOR_Y)
        dh = np.outer(dlogit, w2) * (1 - h**2)  # tanh' = 1 − tanh²
        w2, b2 = w2 - lr * h.T @ dlogit, b2 - lr * dlogit.sum()
        w1, b1 = w1 - lr * XOR_X.T @ dh, b1 - lr * dh.sum(0)
    p = 1 / (1 + np.exp(-(np.tanh(XOR_X @ w1 + b1) @ w2 + b2)))
    return {"losses": losses, "probs": p, "accuracy": float(((p > 0.5) == XOR_Y).mean())}


def _xor_section(t: dict) -> Section:
    accs = train_perceptron()
    mlp = train_mlp()
    lines = [
        f"{t['perceptron']}: " + " ".join(f"{a:.2f}" for a in accs),
        f"{t['mlp']}: " + " → ".join(f"{loss:.3f}" for loss in mlp["losses"][::200] + mlp["losses"][-1:]),
        f"MLP {t['accuracy']}: {mlp['accuracy']:.0%}",
    ]
    table = np.column_stack([XOR_X, XOR_Y, mlp["probs"]])
    matrices = [Matrix("XOR", table, ["1", "2", "3", "4"], ["x1", "x2", "y", "MLP p(y=1)"])]
    values = {"perceptron_accuracy": accs, "mlp": mlp}
    return Section("xor", t["xor.title"], t["xor.explain"], lines, matrices, values)


# -- section 4: humpty dumpty next-character model ---------------------------------------------

# Our own two lines; the nursery rhyme only lends its hero. "pty " is followed by "d", "h"
# or "s", so no 4-character window can be certain there and the loss settles near 0.07.
HUMPTY_TEXT = "humpty dumpty hummed a tune,\nhumpty dumpty sang to the moon.\n"
CONTEXT = 4


@dataclass
class CharModel:
    """Embedding table, one tanh hidden layer, and an output layer: plain tensors, no nn.Module."""

    chars: list[str]
    emb: torch.Tensor  # (V, E)
    w1: torch.Tensor  # (CONTEXT*E, H)
    b1: torch.Tensor
    w2: torch.Tensor  # (H, V)
    b2: torch.Tensor

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb[ids].flatten(1)  # (N, CONTEXT) -> (N, CONTEXT, E) -> (N, CONTEXT*E)
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2  # (N, V)

    def params(self) -> list[torch.Tensor]:
        return [self.emb, self.w1, self.b1, self.w2, self.b2]


def char_pairs(text: str, chars: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (CONTEXT previous characters -> next character) pair, wrapping around the end
    so that generation can run past the last line."""
    ids = [chars.index(c) for c in text]
    n = len(ids)
    xs = [[ids[(i + j) % n] for j in range(CONTEXT)] for i in range(n)]
    ys = [ids[(i + CONTEXT) % n] for i in range(n)]
    return torch.tensor(xs), torch.tensor(ys)


def train_char_model(
    text: str = HUMPTY_TEXT, steps: int = 150, emb_dim: int = 8, hidden: int = 64, seed: int = 0
) -> tuple[CharModel, list[float]]:
    chars = sorted(set(text))
    g = torch.Generator().manual_seed(seed)  # a private generator: the global seed is left alone
    v, fan_in = len(chars), CONTEXT * emb_dim
    model = CharModel(
        chars,
        torch.randn(v, emb_dim, generator=g),
        torch.randn(fan_in, hidden, generator=g) / fan_in**0.5,
        torch.zeros(hidden),
        torch.randn(hidden, v, generator=g) / hidden**0.5,
        torch.zeros(v),
    )
    for p in model.params():
        p.requires_grad_(True)
    xs, ys = char_pairs(text, chars)
    # A gentle rate so the printed losses show the descent, not just its end.
    opt = torch.optim.Adam(model.params(), lr=0.005)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model.logits(xs), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


@torch.no_grad()
def generate_chars(model: CharModel, seed_text: str, n: int = 60, seed: int = 0) -> str:
    """Sample one character at a time, sliding the window forward; same seed, same text."""
    g = torch.Generator().manual_seed(seed)
    out = seed_text
    for _ in range(n):
        ids = torch.tensor([[model.chars.index(c) for c in out[-CONTEXT:]]])
        probs = torch.softmax(model.logits(ids)[0], dim=-1)
        out += model.chars[int(torch.multinomial(probs, 1, generator=g))]
    return out


def _humpty_section(t: dict) -> Section:
    model, losses = train_char_model()
    xs, ys = char_pairs(HUMPTY_TEXT, model.chars)
    shown = "".join(model.chars).replace("\n", "⏎")
    pairs = [f"  {''.join(model.chars[i] for i in x)!r} → {model.chars[y]!r}" for x, y in zip(xs[:6].tolist(), ys[:6])]
    seed_text = HUMPTY_TEXT[:CONTEXT]
    sample = generate_chars(model, seed_text)
    lines = [
        f"{t['vocab']} ({len(model.chars)}): {shown}",
        f"{t['pairs']}:",
        *pairs,
        f"{t['train_loss']}: " + " → ".join(f"{loss:.3f}" for loss in losses[::25] + losses[-1:]),
        f"{t['generated']} {seed_text!r}:",
        *sample.splitlines(),
    ]
    values = {"vocab": model.chars, "losses": losses, "sample": sample, "seed_text": seed_text}
    return Section("humpty", t["humpty.title"], t["humpty.explain"], lines, [], values)


# -- public API --------------------------------------------------------------------------------


def basics(lang: str = "en") -> list[Section]:
    """Compute every section's numbers and text in `lang` ("en" or "zh")."""
    if lang not in TEXT:
        raise ValueError(f"unknown language {lang!r}; choose one of {sorted(TEXT)}")
    t = TEXT[lang]
    return [_leaf_section(t), _backprop_section(t), _xor_section(t), _humpty_section(t)]


def _matrix_table(m: Matrix):
    from rich.table import Table

    table = Table(title=m.name, show_header=True, header_style="bold")
    table.add_column("")
    for c in m.cols:
        table.add_column(c, justify="right")
    for label, row in zip(m.rows, m.values):
        table.add_row(label, *(_num(v, ".3g") for v in row))
    return table


def print_basics(lang: str = "en", console=None) -> None:
    """Render `basics(lang)` to the terminal (or to the given rich Console)."""
    from rich.console import Console

    console = console or Console()
    for s in basics(lang):
        console.rule(f"[bold]{s.title}")
        console.print(s.explanation, style="italic", markup=False)
        for line in s.lines:
            # markup off: lines hold literal brackets such as "[0.219, 0.781]"
            console.print(line, markup=False, highlight=False)
        for m in s.matrices:
            console.print(_matrix_table(m))
        console.print()
