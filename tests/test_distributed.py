"""torchrun with the gloo backend: 2 processes train what 1 process trains with the same global batch.

DDP and FSDP2 (fully_shard) runs are compared tensor by tensor with a single-process run, and
a checkpoint written by N processes is resumed by M processes.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")

# Global batch 6 rows x 2 micro-batches; each of 2 processes trains on 3 rows of every micro-batch.
SETTINGS = ["--preset", "gpt-tiny", "--set", "block_size=16", "--set", "batch_size=6",
            "--set", "gradient_accumulation_steps=2", "--set", "dropout=0.0", "--set", "dtype=float32",
            "--set", "lr_schedule=constant", "--set", "learning_rate=3e-3", "--set", "eval_interval=4",
            "--set", "eval_iters=2", "--set", "log_interval=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    words = ["tide", "moon", "salt", "wave", "shell", "sand", "gull", "reef"]
    lines = [f"{words[i % 8]} and {words[(i * 3) % 8]} by the {words[(i * 5) % 8]} {i}" for i in range(300)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(corpus, out, processes: int, *extra: str) -> str:
    command = ["-m", "glassformer", "train", "lm", "--data", str(corpus), "--out", str(out), *SETTINGS, *extra]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLASSFORMER_DEBUG": "1"}
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def final_state(out):
    return torch.load(out / "resume.pt", weights_only=True)


def assert_same_training(a, b, atol=2e-5):
    sa, sb = final_state(a), final_state(b)
    assert sa["iter"] == sb["iter"]
    assert sa["model"].keys() == sb["model"].keys()
    for name in sa["model"]:
        torch.testing.assert_close(sa["model"][name], sb["model"][name], atol=atol, rtol=1e-4, msg=name)
    # The optimizer's moments too: what a resumed run continues from.
    for name, moments in sa["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(moments[key], sb["optimizer"]["state"][name][key], atol=atol, rtol=1e-3)
    losses = [[r["train_loss"] for r in map(json.loads, (d / "log.jsonl").read_text().splitlines())
               if "train_loss" in r] for d in (a, b)]
    assert len(losses[0]) == len(losses[1]) > 0  # process 0 alone writes the log: no line twice
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    stdout = train(corpus, out, 1, "--set", "max_iters=8")
    return out, stdout


def assert_one_voice_and_a_whole_model(stdout: str, out, single_out) -> None:
    """A run of two processes: one process speaks for it, and the model it saved is whole (not one
    process's shard) and loads without torch.distributed."""
    assert stdout.count('"iter": "final"') == 1
    from glassformer import load

    model, _ = load(out)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in load(single_out)[0].parameters())


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)], ids=["ddp-then-single", "single-then-fsdp"])
def test_two_processes_train_like_one_and_resume_with_another_number(corpus, single, tmp_path, first, then):
    """Iterations 1-4 in one setting and 5-8 resumed in the other end where one process ends, weights,
    Adam moments and every logged loss: DDP trains like one process (the first half of ddp-then-single),
    FSDP2 too (the second half of single-then-fsdp), and resume.pt carries a run across the change."""
    resumed = tmp_path / "resumed"
    stdout = train(corpus, resumed, first, "--set", "max_iters=4")  # parallel=ddp, the default
    if first == 2:
        assert_one_voice_and_a_whole_model(stdout, resumed, single[0])
    stdout = train(corpus, resumed, then, "--resume", "--set", "max_iters=8", "--set", "parallel=fsdp")
    if then == 2:
        assert_one_voice_and_a_whole_model(stdout, resumed, single[0])
    assert_same_training(single[0], resumed)
    one = json.loads(single[1].strip().splitlines()[-1])
    assert json.loads(stdout.strip().splitlines()[-1])["val_loss"] == pytest.approx(one["val_loss"], abs=1e-5)


def test_translation_on_two_sharded_processes_trains_like_one(tmp_path):
    """Token-budget batches split by rows: each process's loss is weighted by its share of the target tokens."""
    from test_translation import numbers, write_pairs

    (tsrc, ttgt), (vsrc, vtgt) = write_pairs(tmp_path, "train", numbers(200, 0)), write_pairs(tmp_path, "v",
                                                                                              numbers(12, 1))
    settings = ["--set", "d_model=32", "--set", "n_head=2", "--set", "n_encoder_layers=1", "--set",
                "n_decoder_layers=1", "--set", "d_ff=64", "--set", "max_iters=6", "--set", "eval_interval=3",
                "--set", "batch_tokens=160", "--set", "dropout=0.0", "--set", "block_size=24",
                "--set", "dtype=float32", "--set", "log_interval=1", "--vocab-size", "300"]
    runs = []
    for processes, parallel in ((1, "ddp"), (2, "fsdp")):
        out = tmp_path / parallel
        command = ["-m", "glassformer", "train", "translation", "--train-src", str(tsrc), "--train-tgt", str(ttgt),
                   "--valid-src", str(vsrc), "--valid-tgt", str(vtgt), "--out", str(out), *settings,
                   "--set", f"parallel={parallel}"]
        if processes > 1:
            command = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *command]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GLASSFORMER_DEBUG": "1"}
        result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(out)
    assert_same_training(*runs)


def test_fine_tuning_a_qwen_directory_on_two_sharded_processes_trains_like_one(corpus, tmp_path):
    """`train lm --init-from` a Hugging Face Qwen2 directory (grouped-query attention, Q/K/V biases) under
    FSDP2 gives the weights, moments and losses of one process."""
    pytest.importorskip("transformers")
    from test_families import hf_model, tiny_tokenizer_files

    qwen = tmp_path / "qwen"
    hf_model("qwen2", n_head=4, n_kv_head=2).save_pretrained(qwen)
    tiny_tokenizer_files(qwen)
    extra = ["--init-from", str(qwen), "--set", "max_iters=4"]
    train(corpus, tmp_path / "one", 1, *extra)
    train(corpus, tmp_path / "two", 2, *extra, "--set", "parallel=fsdp")
    assert_same_training(tmp_path / "one", tmp_path / "two")
    from glassformer import load

    model, tok = load(tmp_path / "two")  # the family model, whole, with its tokenizer
    assert model.config.n_kv_head == 2 and model.config.qkv_bias and tok.eos_ids == [2, 0]
