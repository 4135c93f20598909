"""Before the transformer: a tiny network, one hand-derived training step, XOR, and a
next-character model, each computed step by step and printed in English or Chinese.

    sections = basics("en")          # numbers as data (numpy arrays, floats), nothing printed
    print_basics("zh")               # the same steps rendered with rich

The sections build on each other:
  leaf         a 4-3-2 network scores an object (R, G, B, volume) as leaf or flower; a loss
  backprop     the gradients of that network derived by hand, checked against autograd, one update
  activations  without one the network collapses to one weighted sum; ReLU, softmax, temperature
  dropout      the two ways of scaling dropout, equal in expectation
  xor          a single perceptron cannot learn XOR; two layers can
  humpty       a 12-character-window model learns a two-line text and writes more of it
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from glassformer.explain.basics.text import TEXT  # the chapter's words, en and zh


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


# -- section: leaf or flower ---------------------------------------------------------------------

# From the article: the object (32, 107, 56, 11.2); the first hidden neuron's weights
# (0.10, −0.29, −0.07, 0.46) and bias 0.25; the R and G weights of all three hidden neurons
# (R 0.10, 0.12, −0.36; G −0.29, −0.05, −0.21); and the weights (−0.17, 0.39, 0.1) from the
# hidden neurons into the output neuron whose formula it writes out (here the leaf score).
# The article names −47.1 for the second hidden neuron, but its B and volume weights are only
# in a figure: −0.75 and −0.32 are CHOSEN by us so that 32×0.12 + 107×(−0.05) + 56×B + 11.2×vol
# comes to −47.1 (−47.094). The third neuron's B and volume weights, the other biases and the
# flower score's weights are ours too, picked so that the untrained network gets this leaf
# wrong (calls it a flower) and the backprop section has something to fix.
LEAF_X = np.array([32.0, 107.0, 56.0, 11.2])  # R, G, B, volume (ml)
LEAF_W1 = np.array(
    [
        [0.10, -0.29, -0.07, 0.46],  # article
        [0.12, -0.05, -0.75, -0.32],  # R, G article; B, volume chosen to give the article's −47.1
        [-0.36, -0.21, 0.50, 0.80],  # R, G article; B, volume ours
    ]
)
LEAF_B1 = np.array([0.25, 0.0, 0.0])  # first: the article's 0.25; the others ours
LEAF_W2 = np.array(
    [
        [-0.17, 0.39, 0.10],  # leaf score: the article's output neuron
        [0.20, -0.10, 0.30],  # flower score (ours)
    ]
)
LEAF_Y = 0  # the object really is a leaf
# Inputs are raw, unnormalised values in the hundreds, so a step must be tiny.
LEAF_LR = 5e-4
# The article's loss example: the answer wanted (leaf 0.8, flower 0.2) and the one given.
LOSS_WANTED = np.array([0.8, 0.2])
LOSS_GOT = np.array([0.6, 0.4])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())  # shifting by the max changes nothing but avoids overflow
    return e / e.sum()


def forward(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, y: int, b1: np.ndarray | None = None) -> dict:
    """Every intermediate of the 4-3-2 network: hidden biases b1 (zeros if None), no output biases."""
    z1 = w1 @ x + (0.0 if b1 is None else b1)  # (3,) weighted sums plus bias
    h = np.maximum(z1, 0.0)  # (3,) ReLU
    z2 = w2 @ h  # (2,) scores
    p = softmax(z2)
    return {"z1": z1, "h": h, "z2": z2, "p": p, "loss": float(-np.log(p[y]))}


def absolute_loss(wanted: np.ndarray, got: np.ndarray) -> float:
    """Σ |wanted − got|: the loss that gives the article's 0.4 (squared differences would give 0.08)."""
    return float(np.abs(wanted - got).sum())


def _leaf_section(t: dict) -> Section:
    f = forward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y, LEAF_B1)
    classes = t["classes"]
    sums = LEAF_W1 @ LEAF_X  # before the bias
    lines = [f"{t['input']}: {_vec(LEAF_X, 'g')}"]
    for i, w in enumerate(LEAF_W1):
        note = f"   ({t['chosen']})" if i == 1 else ""
        lines.append(f"{t['hidden']} {i + 1}: {weighted_sum_text(LEAF_X, w)}{note}")
    lines.append(f"{t['bias']}:")
    for i, (z, b) in enumerate(zip(sums, LEAF_B1)):
        lines.append(f"  {t['hidden']} {i + 1}: {_num(z, '.1f')} + {_num(b)} = {_num(z + b, '.2f')}")
    lines += [
        f"{t['relu']}: {_vec(f['z1'], '.2f')} → {_vec(f['h'], '.2f')}",
        f"{t['scores']} ({classes[0]}, {classes[1]}): {_vec(f['z2'])}",
        f"  {classes[0]} = " + " + ".join(f"{_num(h)}×({_num(w)})" for h, w in zip(f["h"], LEAF_W2[0]))
        + f" = {_num(f['z2'][0], '.3f')}",
        f"{t['probs']}: {_vec(f['p'])}",
        f"{t['predicted']}: {classes[int(np.argmax(f['p']))]}   {t['truth']}: {classes[LEAF_Y]}",
        f"{t['loss']}: {_num(f['loss'], '.4f')}",
    ]
    l1 = absolute_loss(LOSS_WANTED, LOSS_GOT)
    l2 = float(((LOSS_WANTED - LOSS_GOT) ** 2).sum())
    lines += [
        f"{t['loss_example']} {_vec(LOSS_WANTED, '.1f')}, {_vec(LOSS_GOT, '.1f')}:",
        "  " + " + ".join(f"|{w:g} − {g:g}|" for w, g in zip(LOSS_WANTED, LOSS_GOT)) + " = "
        + " + ".join(_num(abs(w - g)) for w, g in zip(LOSS_WANTED, LOSS_GOT)) + f" = {_num(l1, '.1f')}",
        f"  {t['squared']}: " + " + ".join(f"({w:g} − {g:g})²" for w, g in zip(LOSS_WANTED, LOSS_GOT))
        + f" = {_num(l2)}",
    ]
    inputs = ["R", "G", "B", "vol"]
    hidden = ["h1", "h2", "h3"]
    matrices = [Matrix("W1", LEAF_W1, hidden, inputs), Matrix("W2", LEAF_W2, list(classes), hidden)]
    values = dict(f, x=LEAF_X, w1=LEAF_W1, b1=LEAF_B1, w2=LEAF_W2, sums=sums,
                  predicted=int(np.argmax(f["p"])), loss_example=l1, loss_example_squared=l2)
    return Section("leaf", t["leaf.title"], t["leaf.explain"], lines, matrices, values)


# -- section: backpropagation by hand ------------------------------------------------------------


def backward(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, y: int, b1: np.ndarray | None = None) -> dict:
    """The gradients of the cross-entropy loss, one chain-rule step per line."""
    f = forward(x, w1, w2, y, b1)
    onehot = np.eye(len(f["p"]))[y]
    dz2 = f["p"] - onehot  # softmax + cross-entropy collapse to p − y
    dw2 = np.outer(dz2, f["h"])  # (2, 3): score j depends on w2[j, k] through h[k]
    dh = w2.T @ dz2  # (3,) each hidden unit feeds both scores
    mask = (f["z1"] > 0).astype(float)  # ReLU passes gradient only where it was active
    dz1 = dh * mask
    dw1 = np.outer(dz1, x)  # (3, 4)
    db1 = dz1  # a bias is a weight on a constant input of 1
    return {"dz2": dz2, "dw2": dw2, "dh": dh, "mask": mask, "dz1": dz1, "dw1": dw1, "db1": db1}


def autograd_grads(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, y: int, b1: np.ndarray | None = None) -> dict:
    """The same gradients from torch autograd, in float64 so the comparison is exact to ~1e-15."""
    tw1 = torch.tensor(w1, requires_grad=True)
    tb1 = torch.tensor(np.zeros(len(w1)) if b1 is None else b1, requires_grad=True)
    tw2 = torch.tensor(w2, requires_grad=True)
    scores = tw2 @ torch.relu(tw1 @ torch.tensor(x) + tb1)
    loss = torch.nn.functional.cross_entropy(scores[None], torch.tensor([y]))
    loss.backward()
    return {"dw1": tw1.grad.numpy(), "db1": tb1.grad.numpy(), "dw2": tw2.grad.numpy()}


def _backprop_section(t: dict) -> Section:
    before = forward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y, LEAF_B1)
    g = backward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y, LEAF_B1)
    ref = autograd_grads(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y, LEAF_B1)
    diffs = {k: float(np.abs(g[k] - ref[k]).max()) for k in ("dw1", "db1", "dw2")}
    w1_new = LEAF_W1 - LEAF_LR * g["dw1"]
    b1_new = LEAF_B1 - LEAF_LR * g["db1"]
    w2_new = LEAF_W2 - LEAF_LR * g["dw2"]
    after = forward(LEAF_X, w1_new, w2_new, LEAF_Y, b1_new)
    lines = [
        f"{t['probs']}: {_vec(before['p'])}   {t['loss']}: {_num(before['loss'], '.4f')}",
        f"dL/dz2 = p − y = {_vec(g['dz2'])}",
        f"dL/dW2 = (dL/dz2) ⊗ h, h = {_vec(before['h'], '.2f')}",
        f"dL/dh = W2ᵀ · dL/dz2 = {_vec(g['dh'])}",
        f"ReLU mask (z1 > 0) = {_vec(g['mask'], '.0f')}",
        f"dL/dz1 = dL/dh ⊙ mask = {_vec(g['dz1'])}",
        "dL/dW1 = (dL/dz1) ⊗ x,   dL/db1 = dL/dz1",
        f"{t['check']}: dW1 {diffs['dw1']:.1e}, db1 {diffs['db1']:.1e}, dW2 {diffs['dw2']:.1e}",
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
        b1_new=b1_new,
        w2_new=w2_new,
        lr=LEAF_LR,
    )
    return Section("backprop", t["backprop.title"], t["backprop.explain"], lines, matrices, values)


# -- section: activations ---------------------------------------------------------------------------

RELU_XS = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
SOFTMAX_Z = np.array([2.0, 1.0, 0.1])
TEMPERATURES = (0.5, 1.0, 2.0)


def linear_collapse(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Without an activation, W2 (W1 x + b1) = (W2 W1) x + W2 b1: two layers are one weighted sum.

    Returns (coefficients (2, 4): one per input for each score, constants (2,))."""
    return w2 @ w1, w2 @ b1


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z) = z − logsumexp(z), with logsumexp shifted by the max so it cannot overflow."""
    m = z.max()
    return z - (m + np.log(np.exp(z - m).sum()))


def entropy(p: np.ndarray) -> float:
    """−Σ p log p in nats: 0 for a certain choice, log n for a uniform one over n."""
    return float(-(p * np.log(p)).sum())


def _activations_section(t: dict) -> Section:
    coef, const = linear_collapse(LEAF_W1, LEAF_B1, LEAF_W2)
    classes = t["classes"]
    lines = [t["collapse"]]
    for name, c, k in zip(classes, coef, const):
        terms = " + ".join(f"({_num(ci, '.4f')})·{v}" for ci, v in zip(c, ("R", "G", "B", t["volume"])))
        lines.append(f"  {name} = {terms} + ({_num(k, '.4f')})")
    two_layer = LEAF_W2 @ (LEAF_W1 @ LEAF_X + LEAF_B1)
    lines.append(f"  x = {_vec(LEAF_X, 'g')}: W2(W1x + b1) = {_vec(two_layer, '.4f')},  "
                 f"(W2·W1)x + W2·b1 = {_vec(coef @ LEAF_X + const, '.4f')}")
    relu_alt = (RELU_XS + np.abs(RELU_XS)) / 2
    lines += [
        f"ReLU(x) = (x + |x|)/2: x = {_vec(RELU_XS, '.1f')} → {_vec(relu_alt, '.1f')};"
        f"  max(0, x) = {_vec(np.maximum(RELU_XS, 0), '.1f')}",
    ]
    p = softmax(SOFTMAX_Z)
    lsm = log_softmax(SOFTMAX_Z)
    lse = float(np.log(np.exp(SOFTMAX_Z).sum()))
    lines += [
        f"z = {_vec(SOFTMAX_Z, '.1f')}:  softmax(z) = e^z / Σ e^z = {_vec(p, '.4f')}",
        f"  logsumexp(z) = log Σ e^z = {_num(lse, '.4f')};  log-softmax(z) = z − logsumexp(z) = {_vec(lsm, '.4f')}",
        f"  log(softmax(z)) = {_vec(np.log(p), '.4f')}",
        t["temperature"],
    ]
    temps = {}
    for temp in TEMPERATURES:
        q = softmax(SOFTMAX_Z / temp)
        temps[temp] = {"p": q, "max": float(q.max()), "entropy": entropy(q)}
        lines.append(f"  T = {temp:g}: {_vec(q, '.4f')}   max p = {_num(q.max(), '.4f')}   "
                     f"{t['entropy']} = {_num(entropy(q), '.4f')}")
    lines.append(t["temperature.verdict"])
    values = {"coefficients": coef, "constants": const, "relu_x": RELU_XS, "relu_alt": relu_alt,
              "z": SOFTMAX_Z, "softmax": p, "log_softmax": lsm, "logsumexp": lse, "temperature": temps}
    matrices = [Matrix("W2·W1", coef, list(classes), ["R", "G", "B", "vol"])]
    return Section("activations", t["activations.title"], t["activations.explain"], lines, matrices, values)


# -- section: dropout -------------------------------------------------------------------------------

DROPOUT_A = np.array([1.0, 2.0, 3.0, 4.0])  # one layer's activations
DROPOUT_P = 0.25  # the probability of dropping a unit
DROPOUT_SAMPLES = 20_000


def dropout_expectations(a: np.ndarray, p: float) -> dict:
    """The exact mean training output of both conventions, by enumerating all 2^n keep/drop masks.

    "scale at test" (the article): train a·m, test a·(1 − p).
    "inverted" (torch's F.dropout, which glassformer uses): train a·m/(1 − p), test a.
    Either way the mean training output equals that convention's test output."""
    n = len(a)
    masks = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # (2^n, n) every mask, 1 = kept
    probs = np.prod(np.where(masks == 1, 1 - p, p), axis=1)  # (2^n,)
    return {"test_scaled": probs @ (a * masks), "inverted": probs @ (a * masks / (1 - p))}


def dropout_samples(a: np.ndarray, p: float, n: int = DROPOUT_SAMPLES, seed: int = 0) -> dict:
    """Mean training output over n random masks, for each convention, with a fixed seed.

    The article's convention is drawn with NumPy; the inverted one is torch's own F.dropout."""
    keep = np.random.default_rng(seed).random((n, len(a))) >= p  # (n, 4) True = kept
    with torch.random.fork_rng(devices=[]):  # leave the caller's global seed alone
        torch.manual_seed(seed)
        inverted = torch.nn.functional.dropout(torch.tensor(a).expand(n, -1), p, training=True).numpy()
    return {"test_scaled": (a * keep).mean(0), "inverted": inverted.mean(0), "inverted_rows": inverted}


def _dropout_section(t: dict) -> Section:
    a, p = DROPOUT_A, DROPOUT_P
    exact = dropout_expectations(a, p)
    sampled = dropout_samples(a, p)
    eval_out = torch.nn.functional.dropout(torch.tensor(a), p, training=False).numpy()
    lines = [
        f"a = {_vec(a, '.1f')},  p = {p:g}",
        t["dropout.article"],
        f"  {t['exact_mean']}: {_vec(exact['test_scaled'])}",
        f"  {t['sampled_mean']} ({DROPOUT_SAMPLES}): {_vec(sampled['test_scaled'])}",
        f"  {t['at_test']}: a·(1 − p) = {_vec(a * (1 - p))}",
        t["dropout.inverted"],
        f"  {t['exact_mean']}: {_vec(exact['inverted'])}",
        f"  {t['sampled_mean']} ({DROPOUT_SAMPLES}): {_vec(sampled['inverted'])}",
        f"  {t['at_test']} (F.dropout, training=False): a = {_vec(eval_out)}",
        t["dropout.same"],
    ]
    values = {"a": a, "p": p, "exact": exact, "sampled": sampled, "eval": eval_out, "n": DROPOUT_SAMPLES}
    return Section("dropout", t["dropout.title"], t["dropout.explain"], lines, [], values)


# -- section: XOR --------------------------------------------------------------------------------

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


# -- section: humpty dumpty next-character model ---------------------------------------------

# Our own two lines; the nursery rhyme only lends its hero. The model reads a fixed window of
# the 12 previous characters, as the article's does. Both lines begin "humpty dumpty " (14
# characters), so the window "mpty dumpty " is followed once by "h" and once by "s": no model
# can be sure there, and the mean loss over the 61 pairs cannot fall below 2·ln 2 / 61 ≈ 0.023.
HUMPTY_TEXT = "humpty dumpty hummed a tune,\nhumpty dumpty sang to the moon.\n"
CONTEXT = 12


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
def generate_steps(model: CharModel, seed_text: str, n: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    """Sample one character at a time, sliding the window forward; same seed, same text.

    Returns one (window, next character) pair per step: the window is exactly the CONTEXT
    characters the model was given, and the next one is the character it chose."""
    if len(seed_text) < CONTEXT:
        raise ValueError(f"seed_text needs at least {CONTEXT} characters (the window); got {len(seed_text)}")
    g = torch.Generator().manual_seed(seed)
    window, steps = seed_text[-CONTEXT:], []
    for _ in range(n):
        ids = torch.tensor([[model.chars.index(c) for c in window]])  # (1, CONTEXT)
        probs = torch.softmax(model.logits(ids)[0], dim=-1)
        nxt = model.chars[int(torch.multinomial(probs, 1, generator=g))]
        steps.append((window, nxt))
        window = window[1:] + nxt  # drop the oldest character, append the new one
    return steps


def generate_chars(model: CharModel, seed_text: str, n: int = 60, seed: int = 0) -> str:
    """seed_text followed by n sampled characters (see generate_steps)."""
    return seed_text + "".join(nxt for _, nxt in generate_steps(model, seed_text, n, seed))


def _shown(text: str) -> str:
    return text.replace("\n", "⏎")  # one visible character per character, so windows line up


def _humpty_section(t: dict) -> Section:
    model, losses = train_char_model()
    xs, ys = char_pairs(HUMPTY_TEXT, model.chars)
    pairs = [f"  [{_shown(''.join(model.chars[i] for i in x))}] → [{_shown(model.chars[y])}]"
             for x, y in zip(xs[:4].tolist(), ys[:4])]
    seed_text = HUMPTY_TEXT[:CONTEXT]
    steps = generate_steps(model, seed_text, n=30)
    sample = seed_text + "".join(nxt for _, nxt in steps)
    lines = [
        f"{t['vocab']} ({len(model.chars)}): {_shown(''.join(model.chars))}",
        f"{t['pairs']}:",
        *pairs,
        f"{t['train_loss']}: " + " → ".join(f"{loss:.3f}" for loss in losses[::25] + losses[-1:]),
        f"{t['floor']}: 2·ln 2 / {len(xs)} = {2 * np.log(2) / len(xs):.4f}",
        f"{t['window']}:",
        *(f"  {i + 1:2d}  [{_shown(w)}] → [{_shown(c)}]" for i, (w, c) in enumerate(steps)),
        f"{t['generated']} [{_shown(seed_text)}]:",
        *sample.splitlines(),
    ]
    values = {"vocab": model.chars, "losses": losses, "sample": sample, "seed_text": seed_text, "steps": steps}
    return Section("humpty", t["humpty.title"], t["humpty.explain"], lines, [], values)


# -- public API --------------------------------------------------------------------------------


def basics(lang: str = "en") -> list[Section]:
    """Compute every section's numbers and text in `lang` ("en" or "zh")."""
    if lang not in TEXT:
        raise ValueError(f"unknown language {lang!r}; choose one of {sorted(TEXT)}")
    t = TEXT[lang]
    return [_leaf_section(t), _backprop_section(t), _activations_section(t), _dropout_section(t), _xor_section(t),
            _humpty_section(t)]


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
