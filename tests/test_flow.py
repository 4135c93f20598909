"""The explorer's flow, attribution and patching endpoints (/api/flow, /api/attribute, /api/patch)
through Starlette's TestClient, against the library called directly on the same ids: a Trace of the
model (residual streams, queries, attention weights, the MLP's hidden activation), analysis.logit_lens,
the probabilities recomputed from the logits with temperature and top-k by hand, analysis.ablate,
analysis.attribute and analysis.patch; and one-line 422s for what they cannot answer."""

import pytest
import torch
from starlette.testclient import TestClient

from glassformer import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from glassformer.data.tokenizers import CharTokenizer
from glassformer.explain.walkthrough import Subject, load_subject
from glassformer.explore.api import Explorer
from glassformer.explore.server import make_app
from glassformer.observe import analysis
from glassformer.observe.trace import Trace

TEXT = "ROMEO: so thou"
CORRUPT = "ROMEO: so thee"  # one character different: as many tokens


@pytest.fixture(scope="module")
def gpt(checkpoint, static):
    explorer = Explorer(load_subject(checkpoint), checkpoint.name)
    return explorer, TestClient(make_app(explorer, static=static), base_url="http://127.0.0.1")


def post(client, endpoint, body, status=200):
    response = client.post(f"/api/{endpoint}", json=body)
    assert response.status_code == status, response.text[:500]
    return response.json()


def refused(client, endpoint, body, match, status=422):
    """One JSON line {"error": ...} with `status`, containing `match`."""
    error = post(client, endpoint, body, status)["error"]
    assert "\n" not in error and match in error, error
    return error


def same(values, expected: torch.Tensor) -> None:
    """Values sent to 5 significant digits equal the model's: within half a unit of the fifth digit,
    5e-5 of each value (and a double's rounding of that decimal)."""
    torch.testing.assert_close(torch.tensor(values, dtype=torch.float64), expected.double().flatten(),
                               rtol=5e-5 + 1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# /api/flow


@pytest.mark.parametrize("position", [None, 3])
def test_flow_numbers_are_the_models(gpt, position):
    explorer, client = gpt
    model, ids = explorer.model, explorer.tok.encode(TEXT)
    data = post(client, "flow", {"text": TEXT, "position": position})
    p = len(ids) - 1 if position is None else position
    assert data["position"] == p and [t["id"] for t in data["tokens"]] == ids
    with torch.no_grad(), Trace(model) as trace:
        logits = model(torch.tensor([ids]))[0, p]
    n_layer = model.config.n_layer
    assert len(data["layers"]) == n_layer
    # Vectors come whole, each value the model's to 5 significant digits
    same(data["embedding"]["sum"]["values"], trace["blocks.0.in"][0, p])
    same(data["embedding"]["token"]["values"], trace["tok_emb"][0, p])
    for i, layer in enumerate(data["layers"]):
        core = f"blocks.{i}.self_attn.core"
        for part in ("q", "k", "v"):
            same(layer[part]["values"], trace[f"{core}.{part}"][0, :, p].flatten())
            assert layer[part]["heads"] == trace[f"{core}.{part}"].size(1)
        # the query's attention over the context: rounded to 5 decimals, so within 5e-6
        probs = trace[f"{core}.probs"][0, :, p, :p + 1]
        torch.testing.assert_close(torch.tensor(layer["attention"]), probs, rtol=0, atol=5e-6)
        same(layer["mlp_hidden"]["values"], trace[f"blocks.{i}.ffn.down.in"][0, p])
        same(layer["attn_out"]["values"], trace[f"blocks.{i}.self_attn.o_proj"][0, p])
        # the residual stream's norms: after attention is added (the ffn norm's input) and after the block;
        # float64 norms of the same float32 vector, so equal to float64 rounding
        sites = ((layer["resid_mid"]["norm"], f"blocks.{i}.ffn_norm.in"), (layer["resid"]["norm"], f"blocks.{i}"))
        for got, name in sites:
            assert got == pytest.approx(float(trace[name][0, p].double().norm()), rel=1e-12)
    # The logit lens's top token per layer: analysis.logit_lens on the same ids
    lens = analysis.logit_lens(model, ids)[:, p]  # (n_layer + 1, V)
    rows = [data["embedding"]["lens"]] + [layer["lens"] for layer in data["layers"]]
    probs = torch.softmax(lens, -1)
    for row, expected in zip(rows, probs):
        assert row[0]["id"] == int(expected.argmax())
        assert row[0]["p"] == pytest.approx(float(expected.max()), abs=1e-6)  # 6 decimals sent
    # The probabilities at the end, with no sampling settings: the softmax of the model's logits
    softmax = torch.softmax(logits.double(), -1)
    order = softmax.argsort(descending=True)[:10].tolist()
    assert [c["id"] for c in data["output"]["candidates"]] == order
    for c in data["output"]["candidates"]:
        assert c["top_p"] == pytest.approx(float(softmax[c["id"]]), abs=2e-6)


def test_flow_probabilities_follow_the_sampling_settings(gpt):
    explorer, client = gpt
    model, ids = explorer.model, explorer.tok.encode(TEXT)
    body = {"text": TEXT, "temperature": 0.5, "top_k": 3}
    full = post(client, "flow", body)
    only = post(client, "flow", {**body, "output_only": True})
    assert "layers" not in only and only["output"] == full["output"]
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1].double() / 0.5
    kept = logits.topk(3).indices
    expected = torch.zeros_like(logits)
    expected[kept] = torch.softmax(logits[kept], -1)  # the three largest, renormalised
    for c in full["output"]["candidates"]:
        assert c["top_p"] == pytest.approx(float(expected[c["id"]]), abs=2e-6)
    assert sum(c["top_p"] > 0 for c in full["output"]["candidates"]) == 3


def test_flow_sees_the_ablation(gpt):
    explorer, client = gpt
    ids = explorer.tok.encode(TEXT)
    data = post(client, "flow", {"text": TEXT, "ablate": [{"module": "blocks.1.self_attn", "head": 0}]})
    expected = torch.softmax(analysis.ablate(explorer.model, ids, heads=[(1, 0)])[-1].double(), -1)
    for c in data["output"]["candidates"]:
        assert c["softmax"] == pytest.approx(float(expected[c["id"]]), abs=2e-6)
    plain = post(client, "flow", {"text": TEXT})
    assert plain["output"] != data["output"]  # and the next request has the model back


def test_flow_refusals(gpt):
    _, client = gpt
    n = len(TEXT)
    refused(client, "flow", {"text": TEXT, "position": n}, f"position must be between 0 and {n - 1}")
    refused(client, "flow", {"text": TEXT, "position": "last"}, "position must be an integer")
    refused(client, "flow", {"text": TEXT, "output_only": 1}, "output_only must be true or false")
    refused(client, "flow", {"text": TEXT, "top_p": 0}, "top_p")
    refused(client, "flow", {"text": TEXT, "layer": 1}, "unknown field 'layer'")


# ---------------------------------------------------------------------------------------------
# /api/attribute


def test_attribution_is_the_librarys(gpt):
    explorer, client = gpt
    model, ids = explorer.model, explorer.tok.encode(TEXT)
    data = post(client, "attribute", {"text": TEXT})
    with torch.no_grad():
        top = int(model(torch.tensor([ids]))[0, -1].argmax())
    assert data["target"] == top  # the default: the model's likeliest next token
    expected = analysis.attribute(model, ids, top)
    torch.testing.assert_close(torch.tensor(data["heads"]), expected.heads, rtol=0, atol=0)
    torch.testing.assert_close(torch.tensor(data["ffn"]), expected.ffn, rtol=0, atol=0)
    assert data["logit"] == expected.logit and data["remaining"] == expected.remaining
    assert [(t["layer"], t["head"]) for t in data["top"][:5]] == [(i, h) for i, h, _ in expected.top(5)]
    # a token named by its text
    o = explorer.tok.encode("o")[0]
    named = post(client, "attribute", {"text": TEXT, "target": "o"})
    assert named["target"] == o and named["heads"] == analysis.attribute(model, ids, o).heads.tolist()


def test_attribution_refusals(gpt):
    explorer, client = gpt
    refused(client, "attribute", {"text": TEXT, "target": "so"}, "must be one token; 'so' encodes to 2 tokens")
    refused(client, "attribute", {"text": TEXT, "target": 10**6}, "target must be a token id from 0")
    refused(client, "attribute", {"text": TEXT, "target": True}, "target must be a token id")


# ---------------------------------------------------------------------------------------------
# /api/patch


def test_patching_is_the_librarys(gpt):
    explorer, client = gpt
    model, tok = explorer.model, explorer.tok
    data = post(client, "patch", {"text": TEXT, "corrupt": CORRUPT})
    expected = analysis.patch(model, tok.encode(TEXT), tok.encode(CORRUPT))
    assert (data["target"], data["foil"], data["clean"], data["corrupt"]) == \
        (expected.target, expected.foil, expected.clean, expected.corrupt)
    torch.testing.assert_close(torch.tensor(data["resid"]), expected.resid, rtol=0, atol=0)
    torch.testing.assert_close(torch.tensor(data["heads"]), expected.heads, rtol=0, atol=0)
    assert data["position_labels"][-1] == "u→e" and data["position_labels"][0] == "R"
    logprob = post(client, "patch", {"text": TEXT, "corrupt": CORRUPT, "metric": "logprob", "target": "o"})
    expected = analysis.patch(model, tok.encode(TEXT), tok.encode(CORRUPT), tok.encode("o")[0], metric="logprob")
    assert logprob["metric"] == "logprob" and logprob["clean"] == expected.clean
    torch.testing.assert_close(torch.tensor(logprob["resid"]), expected.resid, rtol=0, atol=0)


def test_patching_default_corruption_changes_one_token(gpt):
    explorer, client = gpt
    data = post(client, "patch", {"text": TEXT})
    clean, corrupt = explorer.tok.encode(TEXT), explorer.tok.encode(data["corrupt_text"])
    assert len(clean) == len(corrupt) and sum(a != b for a, b in zip(clean, corrupt)) == 1
    assert data["corrupt_ids"] == corrupt
    expected = analysis.patch(explorer.model, clean, corrupt)
    torch.testing.assert_close(torch.tensor(data["resid"]), expected.resid, rtol=0, atol=0)


def test_patching_refusals(gpt):
    _, client = gpt
    n = len(TEXT)
    refused(client, "patch", {"text": TEXT, "corrupt": TEXT + "o"},
            f"clean and corrupt inputs must have the same length; got {n} and {n + 1} tokens")
    refused(client, "patch", {"text": TEXT, "corrupt": TEXT}, "nothing to restore")
    refused(client, "patch", {"text": TEXT, "corrupt": 5}, "corrupt must be a string")
    refused(client, "patch", {"text": TEXT, "corrupt": ""}, "the corrupt text: the text encodes to no tokens")
    refused(client, "patch", {"text": TEXT, "corrupt": CORRUPT, "metric": "kl"},
            "metric must be one of logit_diff, logprob")


def test_a_translation_model_is_refused(static):
    src, tgt = CharTokenizer.train("abc de"), CharTokenizer.train("xyz w")
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=src.vocab_size, tgt_vocab_size=tgt.vocab_size, block_size=12,
                                  n_encoder_layers=1, n_decoder_layers=1, n_head=2, d_model=8, d_ff=16, dropout=0.0))
    client = TestClient(make_app(Explorer(Subject(model.eval(), src, tgt), "s2s"), static=static),
                        base_url="http://127.0.0.1")
    for endpoint in ("flow", "attribute", "patch"):
        refused(client, endpoint, {"text": "abc"}, f"/api/{endpoint} applies to a GPT")


LLAMA_LIKE = dict(position="rope", norm="rmsnorm", activation="swiglu", n_kv_head=1, bias=False)


@pytest.mark.parametrize("options", [LLAMA_LIKE, dict(norm_position="post")], ids=["llama-like", "post-ln"])
def test_flow_of_other_families(static, options):
    """RoPE (no position table), RMSNorm, SwiGLU and grouped keys; post-LN (no final norm, the stream
    after attention is the attention's Add & Norm): the flow's streams are still the model's."""
    tok = CharTokenizer.train("ROMEO: wherefore art thou so\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16, **options)).eval()
    client = TestClient(make_app(Explorer(Subject(model, tok, tok), "family"), static=static), base_url="http://127.0.0.1")
    data = post(client, "flow", {"text": TEXT})
    ids = tok.encode(TEXT)
    with torch.no_grad(), Trace(model) as trace:
        model(torch.tensor([ids]))
    post_ln = options.get("norm_position") == "post"
    assert (data["embedding"]["position"] is None) == (options.get("position") == "rope")
    assert (data["final"] is None) == post_ln
    for i, layer in enumerate(data["layers"]):
        mid = f"blocks.{i}.attn_norm" if post_ln else f"blocks.{i}.ffn_norm.in"
        assert layer["resid_mid"]["norm"] == pytest.approx(float(trace[mid][0, -1].double().norm()), rel=1e-12)
        same(layer["resid"]["values"], trace[f"blocks.{i}"][0, -1])
        same(layer["mlp_hidden"]["values"], trace[f"blocks.{i}.ffn.down.in"][0, -1])
    lens = analysis.logit_lens(model, ids)[:, -1].argmax(-1).tolist()
    assert [data["embedding"]["lens"][0]["id"]] + [layer["lens"][0]["id"] for layer in data["layers"]] == lens
    if post_ln:  # the library's own refusal, in one line
        refused(client, "attribute", {"text": TEXT}, "attribute needs a pre-LN model")
