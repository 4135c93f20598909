"""The explorer's JSON API (glassformer explore) through Starlette's TestClient, against the library
computed independently: the walkthrough of a copy of the model edited by hand, analysis.ablate's
logits, next_token's stages, gpt_generation and seq2seq_generation; the checkpoint's bytes after
edits; the caps, malformed requests, the access token, the host and origin checks, path traversal;
and the real command, started, asked over HTTP, and stopped with Ctrl-C."""

import asyncio
import copy
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
import torch
from conftest import EXPLORER_PAGE as PAGE
from starlette.testclient import TestClient

from glassformer.cli import main
from glassformer.explain import recompute
from glassformer.explain.generation import gpt_generation, seq2seq_generation, stages
from glassformer.explain.labels import token_labels
from glassformer.explain.walkthrough import CORPUS, load_subject, walkthrough_data
from glassformer.explore.api import Explorer
from glassformer.explore.server import LOOPBACK_NAMES, access, load, make_app
from glassformer.observe import analysis

TEXT = "ROMEO: so"


def roundtrip(data):
    return json.loads(json.dumps(data, allow_nan=False))


@pytest.fixture(scope="module")
def gpt(checkpoint, static):
    explorer = Explorer(load_subject(checkpoint), checkpoint.name)
    return explorer, TestClient(make_app(explorer, static=static), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def s2s(static):
    explorer = Explorer(*load(None), lang="zh")  # the articles' example, as the command loads it
    return explorer, TestClient(make_app(explorer, static=static), base_url="http://127.0.0.1")


def post(client, endpoint, body, status=200):
    response = client.post(f"/api/{endpoint}", json=body)
    assert response.status_code == status, response.text[:500]
    return response.json()


def refused(client, endpoint, body, status, match):
    """A request answered with `status` and one JSON line {"error": ...} matching `match`."""
    response = client.post(f"/api/{endpoint}", content=body if isinstance(body, bytes) else json.dumps(body),
                           headers={"content-type": "application/json"})
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and "\n" not in error["error"] and "Traceback" not in response.text
    assert re.search(match, error["error"]), error["error"]


# -- info ---------------------------------------------------------------------------------------


def test_info(gpt, s2s):
    info = gpt[1].get("/api/info").json()
    assert info["kind"] == "gpt" and info["example"] == "ROMEO:" and info["lang"] == "en"
    assert info["config"]["n_layer"] == 2 and info["limits"]["beam"] == 8 and info["limits"]["text_tokens"] == 16
    assert {"name": "blocks.0.self_attn.q_proj.weight", "shape": [32, 32]} in info["params"]
    info = s2s[1].get("/api/info").json()
    assert info["kind"] == "seq2seq" and info["example"] == CORPUS[0] and info["lang"] == "zh"
    assert info["name"] == "the articles' example" and set(info["limits"]) >= {"text_chars", "new_tokens", "edits"}


def test_page_and_static_files(gpt):
    client = gpt[1]
    assert client.get("/").text == PAGE
    script = client.get("/static/matrices.js")  # the walkthrough's own scripts, from templates/
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/explore.html").text == PAGE


# -- /api/run against the library ------------------------------------------------------------


def test_run_is_the_walkthrough_of_a_copy_edited_by_hand(gpt):
    explorer, client = gpt
    name, index, value = "blocks.0.self_attn.q_proj.weight", [3, 5], 1.75
    before = explorer.params[name].clone()
    data = post(client, "run", {"text": TEXT, "edits": [{"name": name, "index": index, "value": value}],
                                "max_values": 16384})
    edited = copy.deepcopy(explorer.model)
    with torch.no_grad():
        edited.get_parameter(name)[tuple(index)] = value
    subject = copy.copy(explorer.subject)
    subject.model = edited
    expected = walkthrough_data(subject.walkthrough(TEXT), 16384)
    assert data["walkthrough"] == roundtrip(expected)
    assert recompute.check(data["walkthrough"]) == []  # nothing truncated: every step recomputes
    assert not any(s.get("truncated") for s in data["walkthrough"]["steps"])
    assert data["walkthrough"] != roundtrip(walkthrough_data(explorer.subject.walkthrough(TEXT), 16384))
    assert torch.equal(explorer.params[name], before)  # the served model is back as it was
    tok = explorer.tok
    assert [t["token"] for t in data["tokens"]] == token_labels(tok, tok.encode(TEXT))
    lens = analysis.logit_lens(edited, tok.encode(TEXT))
    assert len(data["lens"]["top"]) == 3 and len(data["next"]) == min(20, tok.vocab_size)
    assert data["next"][0]["id"] == int(lens[-1, -1].argmax())
    assert data["next"][0]["logit"] == pytest.approx(float(lens[-1, -1].max()), abs=1e-5)


def test_run_on_the_articles_example_with_an_edit(s2s):
    explorer, client = s2s
    name = "encoder.0.ffn.up.weight" if "encoder.0.ffn.up.weight" in explorer.params else \
        next(n for n in explorer.params if n.startswith("encoder.0.ffn") and n.endswith("weight"))
    data = post(client, "run", {"text": CORPUS[0], "edits": [{"name": name, "index": [0, 0], "value": -2.5}]})
    edited = copy.deepcopy(explorer.model)
    with torch.no_grad():
        edited.get_parameter(name)[0, 0] = -2.5
    subject = copy.copy(explorer.subject)
    subject.model = edited
    assert data["walkthrough"] == roundtrip(walkthrough_data(subject.walkthrough(CORPUS[0]), 4096))
    assert recompute.check(data["walkthrough"]) == []
    assert data["lens"] is None and data["next"] is None and data["ms"] > 0
    assert [t["token"] for t in data["tokens"]] == CORPUS[0].split()
    assert not any(t["unknown"] for t in data["tokens"])
    assert post(client, "run", {"text": "when you dance"})["tokens"][2]["unknown"]


def test_ablation_equals_analysis_ablate(gpt):
    explorer, client = gpt
    ids = explorer.tok.encode(TEXT)
    data = post(client, "run", {"text": TEXT, "ablate": [{"module": "blocks.1.self_attn", "head": 1}]})
    logits = analysis.ablate(explorer.model, ids, [(1, 1)])[-1]
    assert [n["id"] for n in data["next"]] == logits.argsort(descending=True, stable=True)[:20].tolist()
    torch.testing.assert_close(torch.tensor([n["logit"] for n in data["next"]]),
                               logits.sort(descending=True, stable=True).values[:20], rtol=1e-5, atol=1e-5)
    plain = post(client, "run", {"text": TEXT})
    assert plain["next"] != data["next"]
    step = "dec.1.self.out.weight"
    ids_of = {s["id"]: s for s in data["walkthrough"]["steps"]}
    if step in ids_of:  # the walkthrough shows W_O with the head's columns zeroed
        assert all(v == 0 for row in ids_of[step]["values"] for v in row[16:32])


def test_checkpoint_files_unchanged_by_edits(gpt, checkpoint):
    explorer, client = gpt

    def digests():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(checkpoint.iterdir())}

    before = digests()
    state = {k: v.clone() for k, v in explorer.model.state_dict().items()}
    edits = [{"name": "lm_head.weight", "index": [0, 0], "value": 9.0},
             {"name": "tok_emb.weight", "index": [0, 0], "value": -3.0},  # the same tied entry, twice
             {"name": "blocks.0.ffn.up.weight" if "blocks.0.ffn.up.weight" in explorer.params
              else "blocks.0.self_attn.k_proj.weight", "index": [1, 1], "value": 1e4}]
    for endpoint in ("run", "sample", "next", "export"):
        post(client, endpoint, {"text": TEXT, "edits": edits,
                                "ablate": [{"module": "blocks.0.self_attn", "head": 0}]})
    assert digests() == before
    assert all(torch.equal(v, explorer.model.state_dict()[k]) for k, v in state.items())


# -- the other endpoints ------------------------------------------------------------------------


def test_step_sends_every_value(gpt):
    explorer, client = gpt
    run = post(client, "run", {"text": TEXT, "max_values": 64})
    cut = next(s for s in run["walkthrough"]["steps"] if s.get("truncated"))
    step = post(client, "step", {"text": TEXT, "id": cut["id"]})
    full = {s["id"]: s for s in walkthrough_data(explorer.subject.walkthrough(TEXT), 0)["steps"]}[cut["id"]]
    assert step.pop("ms") >= 0
    assert step == roundtrip(full) and "values" in step and step["shape"] == cut["shape"]
    refused(client, "step", {"text": TEXT, "id": "no.such.step"}, 422, "no step")
    refused(client, "step", {"text": TEXT, "id": 3}, 422, "id must be")


def test_run_keeps_to_its_budget_of_values(gpt, monkeypatch):
    explorer, client = gpt
    whole = post(client, "run", {"text": TEXT, "max_values": 16384})["walkthrough"]
    total = sum(s["stats"]["count"] if "stats" in s else 0 for s in whole["steps"])
    monkeypatch.setattr(explorer, "run_values", total // 4)
    data = post(client, "run", {"text": TEXT, "max_values": 16384})["walkthrough"]
    assert data["max_values"] < 16384 and data["max_values"] >= 64
    sent = sum(s["stats"]["count"] for s in data["steps"] if "values" in s and "stats" in s)
    assert sent <= total // 4
    cut = [s for s in data["steps"] if s.get("truncated")]
    assert cut and all(s["stats"]["count"] > data["max_values"] for s in cut)
    assert data == roundtrip(walkthrough_data(explorer.subject.walkthrough(TEXT), data["max_values"]))


def test_sample_is_next_tokens_stages(gpt, s2s):
    explorer, client = gpt
    ids = explorer.tok.encode(TEXT)
    data = post(client, "sample", {"text": TEXT, "temperature": 0.7, "top_k": 5, "top_p": 0.9})
    logits = analysis.ablate(explorer.model, ids)[-1]
    expected = stages(logits, 0.7, 5, 0.9, token_labels(explorer.tok, range(explorer.tok.vocab_size)), show=20)[0]
    del data["ms"]
    assert data == roundtrip(expected) and data["kept"]["top_k"] == 5
    refused(s2s[1], "sample", {"text": CORPUS[0]}, 422, "applies to a GPT")
    refused(client, "sample", {"text": TEXT, "top_p": 0}, 422, "top_p")


def test_next_is_one_generation_step(gpt, s2s):
    explorer, client = gpt
    data = post(client, "next", {"text": TEXT, "temperature": 0.9, "seed": 4})
    generation = gpt_generation(explorer.model, explorer.tok, TEXT, 1, temperature=0.9, seed=4)
    assert data["text"] == TEXT + generation.output_text
    assert data["picked"] == generation.steps[0]["picked"] and data["attention"] == generation.steps[0]["attention"]
    greedy = post(client, "next", {"text": TEXT, "greedy": True})
    assert greedy["picked"]["id"] == int(analysis.ablate(explorer.model, explorer.tok.encode(TEXT))[-1].argmax())
    explorer, client = s2s
    translation = post(client, "next", {"text": CORPUS[0]})
    expected = seq2seq_generation(explorer.model, explorer.tok, explorer.subject.tgt_tok, CORPUS[0]).to_dict()
    del translation["ms"]
    assert translation == roundtrip(expected) and translation["output_text"] == CORPUS[1]


def test_beam(gpt, s2s):
    explorer, client = s2s
    data = post(client, "beam", {"text": CORPUS[0], "beam": 3})
    expected = seq2seq_generation(explorer.model, explorer.tok, explorer.subject.tgt_tok, CORPUS[0], 3).to_dict()
    del data["ms"]
    assert data == roundtrip(expected) and data["kind"] == "beam"
    refused(client, "beam", {"text": CORPUS[0], "beam": 9}, 422, "beam must be between 1 and 8")
    refused(gpt[1], "beam", {"text": TEXT, "beam": 2}, 422, "Seq2Seq")


def test_export(s2s):
    html = post(s2s[1], "export", {"text": CORPUS[0], "lang": "zh"})["html"]
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert 'lang="zh"' in html
    refused(s2s[1], "export", {"text": CORPUS[0], "lang": "fr"}, 422, "unknown language")


# -- caps and malformed requests --------------------------------------------------------------


def test_caps(gpt):
    client = gpt[1]
    refused(client, "run", {"text": "o" * 513}, 413, "at most 512")
    refused(client, "run", {"text": "o" * 17}, 413, "17 tokens; this model reads at most 16")
    edit = {"name": "blocks.0.self_attn.q_proj.weight", "index": [0, 0], "value": 1.0}
    refused(client, "run", {"text": TEXT, "edits": [edit] * 65}, 413, "at most 64")
    refused(client, "run", {"text": TEXT, "edits": [{**edit, "value": 1e5}]}, 422, "finite number")
    refused(client, "run", b'{"text": "R", "edits": [{"name": "lm_head.weight", "index": [0, 0], "value": NaN}]}',
            400, "not JSON")
    refused(client, "run", {"text": TEXT, "padding": "x" * 70000}, 413, "request body")
    refused(client, "run", {"text": TEXT, "max_values": 20000}, 422, "max_values must be between 1 and 16384")
    refused(client, "sample", {"text": TEXT, "temperature": 1e9}, 422, "temperature")


def test_malformed_requests(gpt):
    client = gpt[1]
    refused(client, "run", b"{not json", 400, "not JSON")
    refused(client, "run", b"\xff\xfe", 400, "not JSON")
    refused(client, "run", [1, 2], 422, "JSON object")
    refused(client, "run", {}, 422, "text is missing")
    refused(client, "run", {"text": 5}, 422, "text must be a string")
    refused(client, "run", {"text": ""}, 422, "no tokens")
    refused(client, "run", {"text": TEXT, "edits": {"name": "x"}}, 422, "list of objects")
    refused(client, "run", {"text": TEXT, "edits": [{"name": "nope", "index": [0], "value": 1}]}, 422, "no parameter")
    refused(client, "run", {"text": TEXT, "edits": [{"name": "lm_head.weight", "index": [0, 99], "value": 1}]},
            422, "outside")
    refused(client, "run", {"text": TEXT, "edits": [{"name": "lm_head.weight", "index": [0], "value": 1}]},
            422, "2 integers")
    refused(client, "run", {"text": TEXT, "edits": [{"name": "lm_head.weight", "index": [0, 0], "value": True}]},
            422, "finite number")
    refused(client, "run", {"text": TEXT, "ablate": [{"module": "blocks.0", "head": 0}]}, 422, "attention module")
    refused(client, "run", {"text": TEXT, "ablate": [{"module": "blocks.0.self_attn", "head": 2}]}, 422,
            "from 0 to 1")
    refused(client, "run", {"text": TEXT, "topk": 3}, 422, "unknown field 'topk'")
    refused(client, "next", {"text": TEXT, "seed": "1"}, 422, "seed must be an integer")
    refused(client, "next", {"text": TEXT, "greedy": 1}, 422, "true or false")
    assert post(client, "run", {"text": "ROMEO: \u00e9"})["tokens"][-1]["unknown"]  # read as <unk>, not refused
    refused(client, "run", b"[" * 30000 + b"]" * 30000, 400, "nested too deeply")
    response = client.post("/api/run", json={"text": TEXT, "edits": [{"name": "x" * 5000, "index": [0], "value": 1}]})
    assert response.status_code == 422 and len(response.json()["error"]) < 120  # the name is cut, not echoed whole
    refused(client, "nothing", {"text": TEXT}, 404, "no endpoint")
    response = client.get("/api/run")
    assert response.status_code == 405 and list(response.json()) == ["error"]
    response = client.get("/no/such/page")
    assert response.status_code == 404 and list(response.json()) == ["error"]


def test_requests_at_once_take_turns(gpt):
    """Threads asking with different edits at the same time each get their own edited model's answer."""
    explorer = gpt[0]
    bodies = [{"text": TEXT, "edits": [{"name": "blocks.1.ffn.up.weight" if "blocks.1.ffn.up.weight" in explorer.params
                                        else "blocks.1.self_attn.v_proj.weight", "index": [i, 0], "value": 3.0}]}
              for i in range(4)]
    alone = [explorer.call("sample", dict(b)) for b in bodies]
    results: dict[int, dict] = {}

    def ask(i):
        for _ in range(3):
            results[i] = explorer.call("sample", dict(bodies[i]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert results[i]["candidates"] == alone[i]["candidates"]


def test_a_bug_answers_500_without_a_traceback(gpt, monkeypatch):
    explorer, client = gpt

    def broken(body):
        raise RuntimeError("boom\nTraceback (most recent call last): secret")

    monkeypatch.setitem(explorer.endpoints, "run", broken)
    response = client.post("/api/run", json={"text": TEXT})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the server's log has the details"}
    assert "Traceback" not in response.text and "boom" not in response.text
    monkeypatch.setattr(explorer, "info", lambda: 1 / 0)
    response = client.get("/api/info")
    assert response.status_code == 500 and list(response.json()) == ["error"] and "Traceback" not in response.text


# -- who may ask ------------------------------------------------------------------------------


def test_token_required_off_loopback(gpt, static):
    explorer = gpt[0]
    assert access("127.0.0.1") == (None, LOOPBACK_NAMES) and access("localhost")[0] is None
    assert access("::1")[0] is None
    token, hosts = access("0.0.0.0")
    assert isinstance(token, str) and len(token) >= 32 and hosts is None
    assert access("0.0.0.0")[0] != token  # a fresh token each time
    client = TestClient(make_app(explorer, token, hosts, static=static), base_url="http://192.168.1.5:8000")
    for path in ("/", "/api/info", "/static/matrices.js"):
        response = client.get(path)
        assert response.status_code == 401 and "token" in response.json()["error"]
    assert client.post("/api/run", json={"text": TEXT}).status_code == 401
    assert client.get("/api/info", headers={"X-Glassformer-Token": "wrong"}).status_code == 401
    assert client.get("/api/info", headers={"X-Glassformer-Token": token}).status_code == 200
    assert client.get(f"/api/info?token={token}").status_code == 200
    assert client.post("/api/run", json={"text": TEXT}, headers={"X-Glassformer-Token": token}).status_code == 200
    page = client.get(f"/?token={token}")  # the page's own files then load with the cookie it sets
    assert page.status_code == 200 and client.get("/static/matrices.js").status_code == 200


def test_loopback_needs_no_token_but_refuses_other_hosts_and_origins(gpt):
    client = gpt[1]
    assert client.get("/api/info").status_code == 200
    response = client.get("/api/info", headers={"host": "evil.example:80"})  # DNS rebinding
    assert response.status_code == 403 and "127.0.0.1" in response.json()["error"]
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
    response = client.post("/api/run", json={"text": TEXT}, headers={"origin": "http://evil.example"})
    assert response.status_code == 403 and "origin" in response.json()["error"]
    assert client.post("/api/run", json={"text": TEXT}, headers={"origin": "http://127.0.0.1"}).status_code == 200


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/..%2fserver.py", "/static/..%2f..%2fcli.py",
                                  "/static/%2e%2e/%2e%2e/cli.py", "/static//etc/passwd", "/static/%2Fetc%2Fpasswd",
                                  "/static/walkthrough.html.j2", "/static/", "/static/.",
                                  "/static/../../explain/templates/walkthrough.js"])
def test_path_traversal_finds_nothing(gpt, path):
    response = gpt[1].get(path)
    assert response.status_code == 404
    assert list(response.json()) == ["error"]


def raw_status(app, path: str) -> int:
    """The status the app answers for a GET of `path` exactly as given (no client normalises its dots)."""
    sent, received = [], []

    async def receive():  # the request, then nothing (the client waits; no disconnect)
        if received:
            await asyncio.Event().wait()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]


def test_unnormalised_dot_segments_find_nothing(gpt, static):
    app = make_app(gpt[0], static=static)
    assert raw_status(app, "/static/matrices.js") == 200
    for path in ("/static/../server.py", "/static/../../cli.py", "/static/../api.py", "/static/./../server.py",
                 "/static/../../explain/templates/walkthrough.html.j2", "/static/" + str(static / "explore.html")):
        assert raw_status(app, path) == 404, path


# -- the real command ---------------------------------------------------------------------------


def test_command_serves_and_stops_on_ctrl_c(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "glassformer", "explore", "--no-browser", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"glassformer explore: (http://127\.0\.0\.1:(\d+)/)\n", line)
        assert match, line
        with urllib.request.urlopen(match.group(1) + "api/info", timeout=20) as response:
            info = json.loads(response.read())
        # With no --model: the village GPT first, the articles' translation example beside it.
        assert info["kind"] == "gpt" and info["model"] == "village"
        assert [(m["key"], m["kind"]) for m in info["models"]] == [("village", "gpt"), ("articles", "seq2seq")]
        with urllib.request.urlopen(match.group(1) + "api/info?model=articles", timeout=20) as response:
            info = json.loads(response.read())
        assert info["kind"] == "seq2seq" and info["example"] == CORPUS[0]
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert stdout == "" and stderr.splitlines() == ["glassformer: interrupted"]


def test_command_errors_are_one_line(tmp_path, capsys):
    def explore(*args):
        status = main(["explore", "--no-browser", *args])
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return status, err

    status, err = explore("--model", str(tmp_path / "missing"))
    assert status == 1 and "not a checkpoint directory" in err
    status, err = explore("--lang", "fr")
    assert status == 2 and "--lang" in err
    status, err = explore("--port", "70000")
    assert status == 2 and "--port" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        status, err = explore("--port", str(taken.getsockname()[1]))
    assert status == 1 and "address already in use" in err.lower()
