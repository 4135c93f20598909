"""The explorer against hostile and careless requests: every row of the table is answered with a 4xx
status and one JSON line naming what was wrong (or, for the rows that are fine, 200), never a 500,
a traceback or a hang; loopback addresses other than 127.0.0.1 (127.0.0.2, ::1) serve as loopback;
and Hypothesis posts random JSON bodies to every endpoint and random bytes as Host and Origin."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from conftest import build_tiny_seq2seq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from glassformer.data.tokenizers import WordTokenizer
from glassformer.explain.walkthrough import Subject, load_subject
from glassformer.explore.api import Explorer
from glassformer.explore.server import LOOPBACK_NAMES, access, address, host_name, make_app

TEXT = "ROMEO: so"


@pytest.fixture(scope="module")
def gpt(checkpoint, static):
    explorer = Explorer(load_subject(checkpoint), checkpoint.name)
    return explorer, TestClient(make_app(explorer, static=static), base_url="http://127.0.0.1",
                                raise_server_exceptions=False)


@pytest.fixture(scope="module")
def s2s(static):
    """A tiny untrained Seq2Seq over a word vocabulary (no training: the answers need not make sense)."""
    words = WordTokenizer.train("the cat sat on a mat\nthe dog ran to a cat")
    model = build_tiny_seq2seq(src_vocab_size=words.vocab_size, tgt_vocab_size=words.vocab_size,
                               pad_id=words.pad_id, bos_id=words.bos_id, eos_id=words.eos_id)
    explorer = Explorer(Subject(model, words, words), "tiny")
    return explorer, TestClient(make_app(explorer, static=static), base_url="http://127.0.0.1",
                                raise_server_exceptions=False)


def one_json_line(response, status: int | None = None) -> str:
    """The error line of a refused request, after checking its form: JSON {"error": one line}."""
    assert response.status_code < 500, response.text[:300]
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]
    assert "\n" not in error["error"] and "Traceback" not in response.text and "internal error" not in response.text
    return error["error"]


def post_raw(client, endpoint: str, body: str | bytes):
    """POSTs `body` exactly (a str may hold JSON escapes such as \\ud800, sent as written)."""
    data = body.encode("ascii") if isinstance(body, str) else body
    return client.post(f"/api/{endpoint}", content=data, headers={"content-type": "application/json"})


def asgi_get(app, headers: list[tuple[bytes, bytes]], path: str = "/api/info") -> tuple[int, bytes]:
    """(status, body) of a GET sent straight to the ASGI app with `headers` as raw bytes: an HTTP
    client refuses to send a non-ASCII or malformed header, a hostile one does not."""
    sent = []

    async def receive():  # the request, then nothing (the client waits; no disconnect)
        if len(sent) > 100:
            raise AssertionError("the app keeps asking for the request")
        await asyncio.sleep(0)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


# -- the table ------------------------------------------------------------------------------------

EDIT = '{"name": "lm_head.weight", "index": [0, 0], "value": %s}'
# (what the row shows, endpoint, the body exactly as sent, status, what the error line says)
GPT_ROWS = [
    ("float past its range", "sample", '{"text": "R", "temperature": 1e400}', 400, r"1e400 is out of range"),
    ("negative float past its range", "sample", '{"text": "R", "top_p": -1e999}', 400, r"out of range"),
    ("largest float", "sample", '{"text": "R", "temperature": 1e308}', 422, r"temperature must be between 0 and 100"),
    ("tiny float", "sample", '{"text": "R", "top_p": 1e-400}', 422, r"top_p must be in \(0, 1\]"),
    ("integer of 5000 digits", "sample", '{"text": "R", "top_k": 1%s}' % ("0" * 4999), 400,
     r"integer of 5000 digits is out of range"),
    ("integer of 25 digits", "sample", '{"text": "R", "top_k": 1%s}' % ("0" * 24), 422, r"top_k must be between"),
    ("seed past 64 bits", "next", '{"text": "R", "seed": 18446744073709551616}', 422, r"seed must be between"),
    ("negative seed", "next", '{"text": "R", "seed": -1}', 422, r"seed must be between"),
    ("negative max_values", "run", '{"text": "R", "max_values": -5}', 422, r"max_values must be between 1"),
    ("zero max_values", "run", '{"text": "R", "max_values": 0}', 422, r"max_values must be between 1"),
    ("negative top_k", "sample", '{"text": "R", "top_k": -1}', 422, r"top_k must be between 1"),
    ("float top_k", "sample", '{"text": "R", "top_k": 2.5}', 422, r"top_k must be an integer"),
    ("string temperature", "sample", '{"text": "R", "temperature": "1"}', 422, r"temperature must be a number"),
    ("boolean temperature", "sample", '{"text": "R", "temperature": true}', 422, r"temperature must be a number"),
    ("NaN", "sample", '{"text": "R", "temperature": NaN}', 400, r"NaN is not JSON"),
    ("Infinity", "sample", '{"text": "R", "top_p": -Infinity}', 400, r"Infinity is not JSON"),
    ("edit value 1e308", "run", '{"text": "R", "edits": [%s]}' % (EDIT % "1e308"), 422, r"finite number"),
    ("edit value of 29 digits", "run", '{"text": "R", "edits": [%s]}' % (EDIT % ("9" * 29)), 422, r"finite number"),
    ("edit index huge", "run", '{"text": "R", "edits": [{"name": "lm_head.weight", "index": [0, %s], "value": 1}]}'
     % ("9" * 29), 422, r"outside lm_head.weight"),
    ("edit index negative", "run", '{"text": "R", "edits": [{"name": "lm_head.weight", "index": [-1, 0], '
     '"value": 1}]}', 422, r"outside lm_head.weight"),
    ("edit name a list", "run", '{"text": "R", "edits": [{"name": ["x"], "index": [0], "value": 1}]}', 422,
     r"name must be a parameter's name"),
    ("edit name an object", "run", '{"text": "R", "edits": [{"name": {"a": 1}, "index": [0], "value": 1}]}', 422,
     r"name must be a parameter's name"),
    ("ablated module a list", "run", '{"text": "R", "ablate": [{"module": ["x"], "head": 0}]}', 422,
     r"module must be an attention module"),
    ("ablated head a float", "run", '{"text": "R", "ablate": [{"module": "blocks.0.self_attn", "head": 1e300}]}',
     422, r"head must be an integer"),
    ("text a list", "run", '{"text": ["R"]}', 422, r"text must be a string"),
    ("edits nested junk", "run", '{"text": "R", "edits": [[[[]]]]}', 422, r"edits must be a list of objects"),
    ("lone high surrogate", "run", '{"text": "\\ud800"}', 400, r"lone surrogate '\\ud800'"),
    ("lone low surrogate inside", "run", '{"text": "RO\\udc00MEO"}', 400, r"lone surrogate '\\udc00'"),
    ("surrogate in a key", "run", '{"text": "R", "\\udfff": 1}', 400, r"lone surrogate"),
    ("surrogate in a step id", "step", '{"text": "R", "id": "\\ud800"}', 400, r"lone surrogate"),
    ("surrogate in an edit name", "run", '{"text": "R", "edits": [{"name": "\\udbff", "index": [0], "value": 1}]}',
     400, r"lone surrogate"),
    ("invalid UTF-8", "run", b'{"text": "\xed\xa0\x80"}', 400, r"not JSON"),
    ("nested 100,000 deep", "run", "[" * 100_000 + "]" * 100_000, 413, r"request body"),
    ("nested 30,000 deep", "run", "[" * 30_000 + "]" * 30_000, 400, r"nested too deeply"),
    ("a list of 20,000 edits", "run", '{"text": "R", "edits": [%s]}' % ",".join(["{}"] * 20_000), 413,
     r"at most 64"),
    ("top_p a huge list", "sample", '{"text": "R", "top_p": [%s]}' % ",".join(["1"] * 20_000), 422,
     r"top_p must be a number"),
    ("beam on a GPT", "beam", '{"text": "R", "beam": -1}', 422, r"applies to a translation"),
]
S2S_ROWS = [
    ("negative beam", "beam", '{"text": "the cat", "beam": -3}', 422, r"beam must be between 1 and 8"),
    ("huge beam", "beam", '{"text": "the cat", "beam": 100000000000}', 422, r"beam must be between 1 and 8"),
    ("beam 1e400", "beam", '{"text": "the cat", "beam": 1e400}', 400, r"out of range"),
    ("surrogate source", "next", '{"text": "the \\udc80 cat"}', 400, r"lone surrogate"),
    ("sampling a translation", "sample", '{"text": "the cat"}', 422, r"applies to a GPT"),
]


@pytest.mark.parametrize("row", GPT_ROWS, ids=[r[0] for r in GPT_ROWS])
def test_gpt_table(gpt, row):
    _, endpoint, body, status, match = row
    line = one_json_line(post_raw(gpt[1], endpoint, body), status)
    assert re.search(match, line), line
    assert len(line) < 200  # the user's input is cut, not echoed whole


@pytest.mark.parametrize("row", S2S_ROWS, ids=[r[0] for r in S2S_ROWS])
def test_seq2seq_table(s2s, row):
    _, endpoint, body, status, match = row
    line = one_json_line(post_raw(s2s[1], endpoint, body), status)
    assert re.search(match, line), line


def test_a_surrogate_pair_is_a_character_not_refused(gpt):
    """The surrogate check refuses halves, not whole characters written as a JSON pair (an emoji)."""
    response = post_raw(gpt[1], "run", '{"text": "ROMEO \\ud83d\\ude00"}')
    assert response.status_code == 200, response.text[:300]
    assert response.json()["tokens"][-1]["unknown"]  # read as <unk>


def test_the_library_call_refuses_a_lone_surrogate_too(gpt):
    """Explorer.call without the server (whose body check comes first) still refuses one, in a line."""
    from glassformer.explore.api import ApiError

    with pytest.raises(ApiError, match="lone surrogate") as refused:
        gpt[0].call("run", {"text": "R\ud800"})
    assert refused.value.status == 422
    with pytest.raises(ApiError, match="temperature must be between") as refused:
        gpt[0].call("sample", {"text": "R", "temperature": 10**400})  # an int past a float: no OverflowError
    assert refused.value.status == 422


HEADER_ROWS = [  # (what the row shows, headers as raw bytes, status, what the error line says)
    ("non-ASCII host", [(b"host", "hést".encode())], 400, r"malformed Host header"),
    ("latin-1 host", [(b"host", b"h\xe9st:80")], 400, r"malformed Host header"),
    ("unclosed IPv6 host", [(b"host", b"[::1")], 400, r"malformed Host header '\[::1'"),
    ("IPv6 host unbracketed", [(b"host", b"::1")], 400, r"malformed Host header"),
    ("bad IPv6 in brackets", [(b"host", b"[zz::1]:80")], 400, r"malformed Host header"),
    ("host:port:port", [(b"host", b"127.0.0.1:80:80")], 400, r"malformed Host header"),
    ("port past 65535", [(b"host", b"127.0.0.1:99999")], 400, r"malformed Host header"),
    ("empty host", [(b"host", b"")], 400, r"malformed Host header"),
    ("no host", [], 400, r"malformed Host header"),
    ("host with a path", [(b"host", b"127.0.0.1/x")], 400, r"malformed Host header"),
    ("host with user info", [(b"host", b"evil@127.0.0.1")], 400, r"malformed Host header"),
    ("NUL in host", [(b"host", b"127.0.0.1\x00")], 400, r"malformed Host header"),
    ("another host", [(b"host", b"evil.example")], 403, r"addressed to 127\.0\.0\.1 or localhost or ::1"),
    ("another loopback address", [(b"host", b"127.0.0.2:80")], 403, r"addressed to"),
    ("unclosed IPv6 origin", [(b"host", b"127.0.0.1"), (b"origin", b"http://[::1")], 400, r"malformed Origin"),
    ("non-ASCII origin", [(b"host", b"127.0.0.1"), (b"origin", "http://é".encode())], 400, r"malformed Origin"),
    ("origin without a scheme", [(b"host", b"127.0.0.1"), (b"origin", b"127.0.0.1")], 400, r"malformed Origin"),
    ("empty origin", [(b"host", b"127.0.0.1"), (b"origin", b"")], 400, r"malformed Origin"),
    ("origin with port:port", [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1:1:2")], 400,
     r"malformed Origin"),
    ("null origin", [(b"host", b"127.0.0.1"), (b"origin", b"null")], 403, r"another origin"),
    ("another origin", [(b"host", b"127.0.0.1"), (b"origin", b"http://evil.example")], 403, r"another origin"),
]


@pytest.mark.parametrize("row", HEADER_ROWS, ids=[r[0] for r in HEADER_ROWS])
def test_header_table(gpt, static, row):
    _, headers, status, match = row
    got, body = asgi_get(make_app(gpt[0], static=static), headers)
    assert got == status, body[:300]
    error = json.loads(body)
    assert list(error) == ["error"] and "\n" not in error["error"] and re.search(match, error["error"]), error


@pytest.mark.parametrize("host", [b"127.0.0.1", b"127.0.0.1:8000", b"localhost:8000", b"LOCALHOST", b"[::1]:8000",
                                  b"[0:0:0:0:0:0:0:1]", b"[::1]"])
def test_loopback_names_and_addresses_are_accepted(gpt, static, host):
    status, body = asgi_get(make_app(gpt[0], static=static), [(b"host", host)])
    assert status == 200, body[:300]


@pytest.mark.parametrize("bound", ["127.0.0.2", "127.255.255.254", "::1", "0:0:0:0:0:0:0:1", "localhost"])
def test_any_loopback_address_serves_as_loopback(gpt, static, bound):
    """--host with any loopback address: no token, and the address it prints is accepted."""
    token, hosts = access(bound)
    assert token is None and set(LOOPBACK_NAMES) <= set(hosts)
    client = TestClient(make_app(gpt[0], token, hosts, static=static), base_url=address(bound, 8000, None))
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"host": "evil.example:8000"}).status_code == 403  # rebinding still refused
    if bound.startswith("127.0.0.2"):
        assert client.get("/api/info", headers={"host": "127.0.0.3"}).status_code == 403  # only the bound one


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.2", "[::1]"])
def test_command_on_another_loopback_address(checkpoint, host):
    """The real command on 127.0.0.2 (or ::1, given in brackets): it prints an address without a
    token, and that address answers."""
    if "::1" in host and not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "glassformer", "explore", "--no-browser", "--port", "0",
                                "--host", host, "--model", str(checkpoint)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"glassformer explore: (http://(127\.0\.0\.2|\[::1\]):(\d+)/)\n", line)
        assert match, line + process.stderr.read() if not line else line
        with urllib.request.urlopen(match.group(1) + "api/info", timeout=30) as response:
            assert json.loads(response.read())["kind"] == "gpt"
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130


def test_host_name_parses_only_well_formed_values():
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost") == "localhost"
    assert host_name("127.0.0.1:65535") == "127.0.0.1"
    for bad in ("", "[::1", "::1", "a:1:2", "a:65536", "a b", "a/b", "[::1]x", "a:", "é"):
        assert host_name(bad) is None, bad


# -- Hypothesis: random bodies and headers ---------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                      st.sampled_from([TEXT, "the cat", "", "ROMEO: \ud800", "blocks.0.self_attn", "lm_head.weight"]))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
PARAMS = ["lm_head.weight", "blocks.0.self_attn.q_proj.weight", "decoder.0.self_attn.o_proj.weight"]
MODULES = ["blocks.0.self_attn", "decoder.0.cross_attn", "encoder.1.self_attn"]
small_int = st.integers(min_value=-3, max_value=40)
edit = st.fixed_dictionaries({}, optional={"name": st.sampled_from(PARAMS) | json_value,
                                           "index": st.lists(small_int, max_size=3) | json_value,
                                           "value": st.floats(-2e4, 2e4) | json_value})
ablation = st.fixed_dictionaries({}, optional={"module": st.sampled_from(MODULES) | json_value,
                                               "head": small_int | json_value})
FIELDS = {  # the fields the endpoints read, each with values near its range and random JSON
    "text": st.sampled_from([TEXT, "the cat", "", "o" * 600, "ROMEO: \ud800"]) | json_value,
    "edits": st.lists(edit, max_size=3) | json_value, "ablate": st.lists(ablation, max_size=3) | json_value,
    "max_values": small_int | json_value, "id": st.sampled_from(["embed", "logits", "x"]) | json_value,
    "temperature": st.floats(-1, 200) | json_value, "top_k": small_int | json_value,
    "top_p": st.floats(-0.5, 1.5) | json_value, "seed": st.integers(-1, 2**64) | json_value,
    "greedy": json_value, "beam": small_int | json_value, "lang": st.sampled_from(["en", "zh", "fr"]) | json_value,
}


COMMON = ("text", "edits", "ablate")
READS = {"run": COMMON + ("max_values",), "step": COMMON + ("id",), "export": COMMON + ("lang",),
         "sample": COMMON + ("temperature", "top_k", "top_p"), "beam": COMMON + ("beam",),
         "next": COMMON + ("temperature", "top_k", "top_p", "seed", "greedy")}


def random_body(endpoint: str):
    """A JSON object of the fields `endpoint` reads (so the fuzz gets past its unknown-field check),
    each with values near its range or random JSON, a text the model reads most of the time, and
    now and then another field."""
    fields = st.fixed_dictionaries({}, optional={name: FIELDS[name] for name in READS[endpoint]})
    text = st.sampled_from([{"text": TEXT}, {"text": "the cat"}, {}])
    extra = st.just({}) | st.dictionaries(st.sampled_from(sorted(FIELDS)) | st.text(max_size=6), json_value,
                                          min_size=1, max_size=1)
    return st.builds(lambda t, f, e: {**t, **f, **e}, text, fields, extra)


def one_field_wrong(endpoint: str, explorer: Explorer):
    """A body the endpoint answers except for one field, or one field of an edit or an ablation,
    which is random JSON: every check is reached, not only the first (a body with several wrong
    fields stops at the first)."""
    items = {"edits": {"name": "lm_head.weight", "index": [0, 0], "value": 0.5},
             "ablate": {"module": next(iter(explorer.attention)), "head": 0}}
    targets = [(name,) for name in READS[endpoint]] + [(field, key) for field in items for key in items[field]]

    def build(text: str, target: tuple, value) -> dict:
        body = {"text": text}
        if len(target) == 1:
            body[target[0]] = value
        else:
            body[target[0]] = [{**items[target[0]], target[1]: value}]
        return body

    return st.builds(build, st.sampled_from([TEXT, "the cat"]), st.sampled_from(targets), json_value)


def body_strategy(endpoint: str, explorer: Explorer):
    return one_field_wrong(endpoint, explorer) | random_body(endpoint)


def fuzz(client, endpoint, body):
    raw = json.dumps(body)  # ensure_ascii: a lone surrogate goes as its \\u escape
    response = post_raw(client, endpoint, raw)
    assert response.status_code < 500, (raw, response.text[:300])
    data = response.json()
    if response.status_code >= 400:
        one_json_line(response)
    else:
        assert isinstance(data, dict)


FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
ENDPOINTS = ["run", "step", "sample", "next", "beam", "export"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_random_bodies_never_answer_500_gpt(gpt, endpoint):
    @FUZZ
    @given(body=body_strategy(endpoint, gpt[0]))
    def check(body):
        fuzz(gpt[1], endpoint, body)

    check()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_random_bodies_never_answer_500_seq2seq(s2s, endpoint):
    @FUZZ
    @given(body=body_strategy(endpoint, s2s[0]))
    def check(body):
        fuzz(s2s[1], endpoint, body)

    check()


@FUZZ
@given(host=st.binary(max_size=30) | st.sampled_from([b"127.0.0.1", b"[::1]:80", b"localhost:1"]),
       origin=st.none() | st.binary(max_size=30) | st.sampled_from([b"http://127.0.0.1", b"null", b"http://[::1"]))
def test_random_host_and_origin_headers_never_answer_500(gpt, static, host, origin):
    headers = [(b"host", host)] + ([] if origin is None else [(b"origin", origin)])
    status, body = asgi_get(make_app(gpt[0], static=static), headers)
    assert status in (200, 400, 403), body[:300]
    if status != 200:
        error = json.loads(body)
        assert list(error) == ["error"] and "\n" not in error["error"]
