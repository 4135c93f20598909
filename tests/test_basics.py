"""The basics chapter: every printed number checked against hand arithmetic or torch autograd."""

import io

import numpy as np
import pytest
from rich.console import Console

from glassformer.explain.basics.network import (
    CONTEXT,
    HUMPTY_TEXT,
    LEAF_B1,
    LEAF_W1,
    LEAF_W2,
    LEAF_X,
    LEAF_Y,
    TEXT,
    autograd_grads,
    backward,
    basics,
    char_pairs,
    dropout_expectations,
    dropout_samples,
    forward,
    generate_chars,
    generate_steps,
    linear_collapse,
    print_basics,
    train_char_model,
    train_mlp,
    train_perceptron,
    weighted_sum_text,
)


@pytest.fixture(scope="module")
def sections_en():
    return {s.key: s for s in basics("en")}


def test_first_hidden_neuron_matches_the_article(sections_en):
    sums = sections_en["leaf"].values["sums"]  # before the bias
    assert sums[0] == pytest.approx(32 * 0.10 + 107 * -0.29 + 56 * -0.07 + 11.2 * 0.46)  # -26.598
    assert round(sums[0], 1) == -26.6
    assert weighted_sum_text(LEAF_X, LEAF_W1[0]) == "32×0.10 + 107×(−0.29) + 56×(−0.07) + 11.2×0.46 = −26.6"


def test_the_articles_other_leaf_numbers(sections_en):
    v = sections_en["leaf"].values
    # With its bias of 0.25 the first neuron is the article's −26.35.
    assert LEAF_B1[0] == 0.25
    assert round(v["z1"][0], 2) == -26.35
    # The article's R and G weights of the three hidden neurons, and the output neuron it writes out.
    assert LEAF_W1[:, 0].tolist() == [0.10, 0.12, -0.36]
    assert LEAF_W1[:, 1].tolist() == [-0.29, -0.05, -0.21]
    assert LEAF_W2[0].tolist() == [-0.17, 0.39, 0.1]
    # The second neuron's sum is the article's −47.1, by hand: 3.84 − 5.35 − 42 − 3.584.
    assert 32 * 0.12 + 107 * -0.05 + 56 * LEAF_W1[1, 2] + 11.2 * LEAF_W1[1, 3] == pytest.approx(-47.094)
    assert round(v["sums"][1], 1) == -47.1
    assert weighted_sum_text(LEAF_X, LEAF_W1[1]).endswith("= −47.1")
    # The article's loss: wanted (0.8, 0.2), got (0.6, 0.4) -> 0.4 is the sum of absolute differences.
    assert v["loss_example"] == pytest.approx(abs(0.8 - 0.6) + abs(0.2 - 0.4)) and round(v["loss_example"], 6) == 0.4
    assert v["loss_example_squared"] == pytest.approx(0.08)


def test_leaf_forward_is_consistent(sections_en):
    v = sections_en["leaf"].values
    assert v["p"].sum() == pytest.approx(1.0)
    assert np.array_equal(v["h"], np.maximum(v["z1"], 0))
    assert v["loss"] == pytest.approx(-np.log(v["p"][LEAF_Y]))
    # The same network in torch: Linear layers loaded with the article's weights.
    import torch

    hidden = torch.nn.Linear(4, 3).double()
    out = torch.nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor(LEAF_W1))
        hidden.bias.copy_(torch.tensor(LEAF_B1))
        out.weight.copy_(torch.tensor(LEAF_W2))
        scores = out(torch.relu(hidden(torch.tensor(LEAF_X))))
    assert np.allclose(v["z2"], scores.numpy())
    assert v["predicted"] != LEAF_Y  # untrained, it calls the leaf a flower: the backprop step has work to do


def test_without_activation_two_layers_are_one_weighted_sum():
    coef, const = linear_collapse(LEAF_W1, LEAF_B1, LEAF_W2)
    rng = np.random.default_rng(0)
    for x in rng.uniform(-200, 200, (20, 4)):
        hidden = [sum(LEAF_W1[j, i] * x[i] for i in range(4)) + LEAF_B1[j] for j in range(3)]  # no activation
        scores = [sum(LEAF_W2[k, j] * hidden[j] for j in range(3)) for k in range(2)]
        assert np.allclose(coef @ x + const, scores, rtol=1e-12, atol=1e-9)
    # Each coefficient is the sum over hidden paths input -> neuron j -> score, e.g. c_R of the leaf score.
    assert coef[0, 0] == pytest.approx(-0.17 * 0.10 + 0.39 * 0.12 + 0.10 * -0.36)


def test_activations_section(sections_en):
    import torch

    v = sections_en["activations"].values
    assert np.array_equal(v["relu_alt"], np.maximum(v["relu_x"], 0))
    z = torch.tensor(v["z"])
    assert np.allclose(v["softmax"], torch.softmax(z, 0).numpy())
    assert np.allclose(v["log_softmax"], torch.log_softmax(z, 0).numpy())
    assert np.allclose(v["log_softmax"], v["z"] - np.log(np.exp(v["z"]).sum()))
    temps = v["temperature"]
    assert sorted(temps) == [0.5, 1.0, 2.0]
    for t, row in temps.items():
        q = torch.softmax(z / t, 0).numpy()
        assert np.allclose(row["p"], q)
        assert row["entropy"] == pytest.approx(-(q * np.log(q)).sum())
    # Higher temperature, flatter distribution: entropy rises and the largest probability falls.
    assert temps[0.5]["entropy"] < temps[1.0]["entropy"] < temps[2.0]["entropy"] < np.log(3)
    assert temps[0.5]["max"] > temps[1.0]["max"] > temps[2.0]["max"] > 1 / 3
    assert "higher temperature flattens" in " ".join(sections_en["activations"].lines)


def test_dropout_conventions_match_in_expectation():
    import torch

    a, p = np.array([1.0, 2.0, 3.0, 4.0]), 0.25
    exact = dropout_expectations(a, p)
    # E[mask] = 1 − p per unit, so the article's training mean is a·(1 − p), its test output, and the
    # inverted one's a·(1 − p)/(1 − p) = a, its (identity) test output.
    assert np.allclose(exact["test_scaled"], a * (1 - p), rtol=0, atol=1e-12)
    assert np.allclose(exact["inverted"], a, rtol=0, atol=1e-12)
    n = 20_000
    s = dropout_samples(a, p, n=n, seed=0)
    # torch's F.dropout is the inverted convention: each unit is 0 or a/(1 − p), and the identity in eval.
    rows = s["inverted_rows"]
    assert np.all(np.isclose(rows, 0) | np.isclose(rows, a / (1 - p)))
    assert np.array_equal(torch.nn.functional.dropout(torch.tensor(a), p, training=False).numpy(), a)
    # A unit's training output is a·m (m ~ Bernoulli(1 − p)), variance a²p(1 − p), or a²p/(1 − p) inverted.
    # The mean of n independent masks has standard error sqrt(variance / n); by the central limit theorem
    # it lies within 6 standard errors of the expectation except with probability ~2e-9 per unit.
    # Forgetting the scale would be off by a·p/(1 − p), over 50 standard errors here.
    se_scaled = a * np.sqrt(p * (1 - p) / n)
    se_inverted = a * np.sqrt(p / (1 - p) / n)
    assert np.all(np.abs(s["test_scaled"] - a * (1 - p)) < 6 * se_scaled)
    assert np.all(np.abs(s["inverted"] - a) < 6 * se_inverted)


def test_hand_gradients_equal_autograd():
    hand = backward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y)
    ref = autograd_grads(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y)
    for k in ("dw1", "dw2"):
        assert np.abs(hand[k] - ref[k]).max() < 1e-6
    hand = backward(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y, LEAF_B1)
    ref = autograd_grads(LEAF_X, LEAF_W1, LEAF_W2, LEAF_Y, LEAF_B1)
    for k in ("dw1", "db1", "dw2"):
        assert np.abs(hand[k] - ref[k]).max() < 1e-6
    # A different label and random weights, so agreement is not an accident of the example.
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(0, 0.1, (3, 4)), rng.normal(0, 1, (2, 3))
    hand, ref = backward(LEAF_X, w1, w2, 1), autograd_grads(LEAF_X, w1, w2, 1)
    for k in ("dw1", "dw2"):
        assert np.abs(hand[k] - ref[k]).max() < 1e-6


def test_update_lowers_the_loss(sections_en):
    v = sections_en["backprop"].values
    assert max(v["max_diff"].values()) < 1e-6
    assert v["loss_after"] < v["loss_before"]
    after = forward(LEAF_X, v["w1_new"], v["w2_new"], LEAF_Y, v["b1_new"])
    assert after["loss"] == pytest.approx(v["loss_after"])


def test_perceptron_fails_xor_and_mlp_learns_it():
    accs = train_perceptron()
    assert max(accs) <= 0.75  # a line separates at most 3 of XOR's 4 points: a bound, not luck
    # The seeded MLP ends with p(y=1) of 0.0005, 0.998, 0.999, 0.002: nowhere near the 0.5 threshold.
    mlp = train_mlp()
    assert mlp["accuracy"] == 1.0
    assert (abs(mlp["probs"] - 0.5) > 0.4).all()


def test_humpty_model_learns_and_generates_deterministically():
    model, losses = train_char_model()
    assert losses[-1] < 0.2 * losses[0]  # the seeded run ends near 0.025 from 3.0: far inside the bound
    # Both lines begin "humpty dumpty ", so the window "mpty dumpty " has two next characters: the
    # mean loss can never fall below 2·ln 2 / (number of pairs).
    xs, ys = char_pairs(HUMPTY_TEXT, model.chars)
    assert len(xs) == len(HUMPTY_TEXT) and xs.shape[1] == CONTEXT == 12
    assert losses[-1] >= 2 * np.log(2) / len(xs)
    seed_text = "humpty dumpty "
    a = generate_chars(model, seed_text, n=40, seed=3)
    b = generate_chars(model, seed_text, n=40, seed=3)
    assert a == b and a.startswith(seed_text) and len(a) == len(seed_text) + 40
    assert set(a) <= set(model.chars)
    with pytest.raises(ValueError):
        generate_steps(model, "hump", n=1)


def test_humpty_window_slides_and_is_the_models_input(sections_en):
    model, _ = train_char_model()
    seen = []
    logits = model.logits

    def recording(ids):
        seen.append("".join(model.chars[i] for i in ids[0].tolist()))
        return logits(ids)

    model.logits = recording  # record exactly what the model is given at each step
    steps = generate_steps(model, HUMPTY_TEXT[:12], n=30, seed=0)
    assert [w for w, _ in steps] == seen
    assert all(len(w) == 12 for w in seen)
    assert steps[0][0] == HUMPTY_TEXT[:12]
    for (prev, chosen), (window, _) in zip(steps, steps[1:]):
        assert window == prev[1:] + chosen  # shifted by one, the generated character appended
    # The printed section shows these very steps (the trained model is seeded, so it is the same one).
    v = sections_en["humpty"].values
    assert v["steps"] == steps
    assert v["sample"] == HUMPTY_TEXT[:12] + "".join(c for _, c in steps)
    lines = sections_en["humpty"].lines
    for window, chosen in steps:
        shown = f"[{window}] → [{chosen}]".replace("\n", "⏎")
        assert any(line.endswith(shown) for line in lines)


def _render(lang: str) -> str:
    console = Console(record=True, width=100, file=io.StringIO())
    print_basics(lang, console=console)
    return console.export_text()


def test_print_basics_in_both_languages():
    en = _render("en")
    for number in ("−26.6", "−26.35", "−47.1", "= 0.4"):
        assert number in en
    assert "Leaf or flower" in en and "chosen by us" in en
    zh = _render("zh")
    for key in ("leaf", "backprop", "activations", "dropout", "xor", "humpty"):
        assert TEXT["zh"][f"{key}.title"] in zh
    assert "叶子" in zh and "−47.1" in zh and "我们选的" in zh
    assert set(TEXT["en"]) == set(TEXT["zh"])


def test_unknown_language_raises():
    with pytest.raises(ValueError):
        basics("fr")
    with pytest.raises(ValueError):
        print_basics("fr", console=Console(file=io.StringIO()))
