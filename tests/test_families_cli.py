"""Every command on a Llama/Qwen directory: sample (plain and --chat, stopping at an end id),
eval lm, explain --json (recomputes), the analysis tools, train lm --init-from, export."""

import json

import pytest
import torch
from test_families import TEMPLATE, hf_model, tiny_tokenizer_files

import glassformer
from glassformer.cli import main
from glassformer.explain.recompute import check
from glassformer.generation.sampling import generate
from glassformer.hf.families import render_chat

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A tiny Qwen2 (grouped-query attention, Q/K/V biases) with tokenizer files, chat template and two end ids."""
    path = tmp_path_factory.mktemp("qwen")
    hf_model("qwen2", n_head=4, n_kv_head=2).save_pretrained(path)
    tiny_tokenizer_files(path)
    return path


def test_sample_chat_renders_the_template_and_stops_at_an_end_id(qwen, capsys):
    model, tok = glassformer.load(qwen, dtype="float32")
    prompt = render_chat(TEMPLATE, [{"role": "user", "content": "the cat?"}], eos_token="<|im_end|>")
    ids = tok.encode(prompt)
    expected = generate(model, ids, 12, temperature=0, eos_id=[2, 0])[0][len(ids):]  # stops at 2 or 0
    assert main(["sample", "--model", str(qwen), "--chat", "--prompt", "the cat?", "--max-new-tokens", "12",
                 "--temperature", "0", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip("\n") == tok.decode(expected).rstrip("\n") and "<|im_start|>" not in out
    assert main(["sample", "--model", str(qwen), "--system", "be brief", "--prompt", "x"]) == 1
    assert "--system" in capsys.readouterr().err


def test_eval_lm_on_a_text_file(qwen, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 3)
    assert main(["eval", "lm", "--model", str(qwen), "--data", str(tmp_path / "t.txt"), "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    model, tok = glassformer.load(qwen, dtype="float32")
    ids = torch.tensor([tok.encode("the cat sat on the mat. " * 3)])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:]).item()
    assert f"{loss:.4f}" in out  # the whole file, one window: the same mean cross-entropy


def test_explain_json_recomputes_and_the_tools_run(qwen, tmp_path, capsys):
    path = tmp_path / "w.json"
    assert main(["explain", "--model", str(qwen), "--text", "the cat sat", "--json", str(path),
                 "--max-values", "0"]) == 0
    data = json.loads(path.read_text())
    assert check(data) == []
    ids = [s["id"] for s in data["steps"]]
    assert "dec.0.self.kv1.k" in ids and "dec.0.self.h3.q" in ids  # 4 query heads read 2 K/V heads
    assert main(["explain", "--model", str(qwen), "--text", "the cat sat", "--lens", "--ablate", "1.1",
                 "--generate", "3"]) == 0
    out = capsys.readouterr().out
    assert "Logit lens" in out and "KV cache: 2 layers, K and V each (1, 2, " in out


def test_train_init_from_fine_tunes_and_export_round_trips(qwen, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("the cat sat on the mat. hello there. " * 40)
    assert main(["train", "lm", "--init-from", str(qwen), "--data", str(tmp_path / "t.txt"), "--out",
                 str(tmp_path / "run"), "--preset", "gpt-tiny", "--set", "max_iters=4", "--set", "eval_interval=4",
                 "--set", "eval_iters=1", "--set", "block_size=16"]) == 0
    tuned, tok = glassformer.load(tmp_path / "run")
    original, _ = glassformer.load(qwen, dtype="float32")
    assert tuned.config.n_kv_head == 2 and tok.eos_ids == [2, 0]
    assert not torch.equal(tuned.blocks[0].self_attn.q_proj.weight, original.blocks[0].self_attn.q_proj.weight)
    assert main(["export", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert "qwen2 directory" in capsys.readouterr().out
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.tensor([tok.encode("the cat sat")])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, tuned(x), rtol=0, atol=1e-4)
    assert main(["train", "lm", "--init-from", str(qwen), "--resume", "--out", str(tmp_path / "run")]) == 2


def test_the_explorer_runs_a_qwen_directory(qwen):
    from starlette.testclient import TestClient

    from glassformer.explain.walkthrough import load_subject
    from glassformer.explore.api import Explorer
    from glassformer.explore.server import make_app

    client = TestClient(make_app(Explorer(load_subject(qwen), qwen.name)), base_url="http://127.0.0.1")
    run = client.post("/api/run", json={"text": "the cat", "edits": [], "ablate": [
        {"module": "blocks.1.self_attn", "head": 3}], "max_values": 16384})
    assert run.status_code == 200, run.text
    data = run.json()["walkthrough"]
    assert check(data) == [] and any(s["id"] == "dec.1.self.kv1.kT" for s in data["steps"])
    step = client.post("/api/next", json={"text": "the cat", "edits": [], "ablate": [], "temperature": 1.0,
                                          "top_k": None, "top_p": None, "seed": 0, "greedy": True})
    assert step.status_code == 200 and step.json()["cache"]["k_shape"][1] == 2  # the K/V heads
