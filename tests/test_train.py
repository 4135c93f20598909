"""The trainer: learning-rate schedule, optimizer groups, exact resume, NaN handling."""

import json
import math
import platform
import sys

import numpy as np
import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.training.lm import LMTask, evaluate_lm
from glassformer.training.task import Task
from glassformer.training.trainer import (
    TrainConfig,
    Trainer,
    TrainingError,
    keep_freed_memory,
    learning_rate,
    make_optimizer,
)


def test_cosine_schedule_follows_nanogpt():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000, lr_decay_iters=2000)

    def nanogpt(it):  # nanoGPT's get_lr, restated
        if it < 100:
            return 1e-3 * (it + 1) / 101
        if it > 2000:
            return 1e-4
        ratio = (it - 100) / 1900
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * ratio)) * (1e-3 - 1e-4)

    for it in (0, 50, 99, 100, 101, 1000, 1999, 2000, 2500):
        assert learning_rate(it, cfg, 0) == pytest.approx(nanogpt(it))
    assert learning_rate(100, cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(2000, cfg, 0) == pytest.approx(1e-4)


def test_noam_schedule_peaks_at_warmup():
    cfg = TrainConfig(lr_schedule="noam", learning_rate=1.0, warmup_iters=4000)
    rates = [learning_rate(it, cfg, 512) for it in range(0, 20000, 100)]
    peak = max(range(len(rates)), key=rates.__getitem__) * 100
    assert 3900 <= peak <= 4000
    assert learning_rate(3999, cfg, 512) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)


def test_weight_decay_skips_biases_and_norms():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def tiny_run(out, max_iters=30, **train):
    torch.manual_seed(0)
    data = np.tile(np.random.default_rng(0).integers(0, 20, 37), 90).astype(np.uint16)  # learnable: period 37
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    cfg = TrainConfig(max_iters=max_iters, batch_size=4, eval_interval=10, eval_iters=3, log_interval=5,
                      warmup_iters=5, learning_rate=3e-3, **train)
    task = LMTask(data[:3000], data[3000:], 16, cfg)
    return Trainer(model, task, cfg, out, progress=False)


def crash_at_iteration_25(out, monkeypatch, **settings) -> None:
    """tiny_run into `out`, crashed at iteration 25, after the checkpoint of iteration 20."""
    interrupted = tiny_run(out, **settings)
    original_step = Trainer.train_step

    def dying_step(self):
        if self.iter == 25:
            raise KeyboardInterrupt
        return original_step(self)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    monkeypatch.setattr(Trainer, "train_step", original_step)


@pytest.mark.parametrize("settings", [{}, dict(optimizer="muon", muon_lr=0.02, muon_momentum_warmup=25)],
                         ids=["adamw", "muon"])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, settings):
    full = tiny_run(tmp_path / "full", **settings).run()
    crash_at_iteration_25(tmp_path / "cut", monkeypatch, **settings)
    assert torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)["iter"] == 20
    resumed = tiny_run(tmp_path / "cut", **settings).run(resume=True)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-6)


def test_resume_from_a_run_saved_with_the_older_norm_names(tmp_path, monkeypatch):
    """resume.pt written before the blocks' norms were their own (blocks.0.attn_res.norm.weight),
    weights and optimizer state keyed by those names, resumes as a run saved today does."""
    full = tiny_run(tmp_path / "full").run()
    crash_at_iteration_25(tmp_path / "cut", monkeypatch)
    path = tmp_path / "cut" / "resume.pt"
    state = torch.load(path, weights_only=True)

    def older(name):
        return name.replace(".attn_norm.", ".attn_res.norm.").replace(".ffn_norm.", ".ffn_res.norm.")

    state["model"] = {older(name): t for name, t in state["model"].items()}
    optim = state["optimizer"]
    assert "blocks.0.attn_norm.weight" in optim["state"]  # keyed by name
    optim["state"] = {older(name): s for name, s in optim["state"].items()}
    for group in optim["param_groups"]:
        group["params"] = [older(name) for name in group["params"]]
    torch.save(state, path)
    resumed = tiny_run(tmp_path / "cut").run(resume=True)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-6)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    # Two micro-batches of 4 equal one batch of 8 drawn from the same generator state.
    torch.manual_seed(0)
    data = np.random.default_rng(1).integers(0, 20, 3000).astype(np.uint16)

    def one_step(batch_size, accum):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16))
        cfg = TrainConfig(max_iters=1, batch_size=batch_size, gradient_accumulation_steps=accum, grad_clip=0,
                          dtype="float32")  # bf16 autocast rounds the two ways differently
        trainer = Trainer(model, LMTask(data, data, 16, cfg), cfg, tmp_path / f"r{accum}", progress=False)
        trainer.train_step()
        return model

    a, b = one_step(8, 1), one_step(4, 2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    trainer = tiny_run(tmp_path)
    original_step = Trainer.train_step

    def poisoned(self):
        loss, tokens = original_step(self)
        return (torch.tensor(float("nan")), tokens) if self.iter == 14 else (loss, tokens)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingError, match="nan at iteration 14.*last good checkpoint"):
        trainer.run()
    assert torch.load(tmp_path / "resume.pt", weights_only=True)["iter"] == 10
    assert (tmp_path / "model.safetensors").exists()


def test_log_and_plot_are_written(tmp_path):
    tiny_run(tmp_path, max_iters=20).run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "val_loss" in r] == [0, 10, 20]
    assert all(r["tokens_per_s"] > 0 for r in records if "train_loss" in r)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_first_false_skips_the_evaluation_before_the_first_step(tmp_path):
    tiny_run(tmp_path, max_iters=20, eval_first=False).run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "val_loss" in r] == [10, 20]


def test_training_reduces_loss(tmp_path):
    trainer = tiny_run(tmp_path, max_iters=60)
    first = trainer.evaluate()["val_loss"]
    assert trainer.run()["val_loss"] < first - 0.1


def test_both_tasks_provide_every_method_of_the_task_protocol():
    import dataclasses

    from glassformer import PRESETS
    from glassformer.training.translation import TranslationTask

    cfg = TrainConfig(batch_tokens=64)
    lm = LMTask(np.arange(100) % 7, np.arange(50) % 7, 8, cfg)
    config = dataclasses.replace(PRESETS["walkthrough"].model, src_vocab_size=10, tgt_vocab_size=10)
    translation = TranslationTask([([5, 2], [6])], [([5, 2], [6])], [("a", "b")], config, cfg, None, None)
    assert isinstance(lm, Task) and isinstance(translation, Task)
    assert lm.state_dict() == {}  # the trainer's generator alone places a language-model run in its data
    translation.train_batch(torch.Generator().manual_seed(0), "cpu")
    state = translation.state_dict()
    assert state["position"] == 1 and state["epoch"] == 1


def test_resume_file_holds_the_tasks_state(tmp_path):
    tiny_run(tmp_path, max_iters=10).run()
    assert torch.load(tmp_path / "resume.pt", weights_only=True)["task"] == {}


def test_lm_evaluations_are_the_mean_loss_per_token():
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = np.random.default_rng(0).integers(0, 20, 45).astype(np.uint16)
    # Every token once: 5 whole windows of 8 and a tail of 4, the tail its own short batch.
    x = torch.from_numpy(ids[:-1].astype(np.int64))[None]
    y = torch.from_numpy(ids[1:].astype(np.int64))[None]
    with torch.no_grad():
        logits = torch.cat([model(x[:, i: i + 8])[0] for i in range(0, 44, 8)])  # (44, V)
    expected = F.cross_entropy(logits, y[0], reduction="sum").item() / 44
    got = evaluate_lm(model, ids, batch_size=2)
    assert got["tokens"] == 44 and got["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    # The sampled evaluation: eval_iters equal batches, the mean of their mean losses.
    cfg = TrainConfig(batch_size=3, eval_iters=4, seed=5)
    task = LMTask(ids, ids, 8, cfg)
    from glassformer.data.batches import random_windows

    generator = torch.Generator().manual_seed(cfg.seed + 1)
    with torch.no_grad():
        losses = [F.cross_entropy(model(a).flatten(0, 1), b.flatten()).item()
                  for a, b in (random_windows(ids, 8, 3, generator) for _ in range(4))]
    assert task.evaluate(model, "cpu")["val_loss"] == pytest.approx(sum(losses) / 4, rel=1e-6)


def test_a_single_process_world_starts_no_process_group(monkeypatch):
    from glassformer.training import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group("cpu") as world:
        assert world == distributed.World() and world.main and not world.distributed
        assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = distributed.world_from_env()
    assert (world.rank, world.size, world.local_rank, world.main) == (3, 4, 1, False)
    assert world.place(torch.device("cuda")) == torch.device("cuda", 1)
    assert world.place(torch.device("cpu")) == torch.device("cpu")


def test_overrides_go_to_the_config_that_has_the_key():
    from glassformer.training.runs import configs_for_run, split_overrides

    train_sets, model_sets = split_overrides(["max_iters=5", "n_layer=3", "nonsense=1"], TrainConfig(),
                                             GPTConfig())
    assert train_sets == ["max_iters=5"] and model_sets == ["n_layer=3", "nonsense=1"]
    model_cfg, train_cfg = configs_for_run("gpt-tiny", ["max_iters=5", "n_layer=3"], GPTConfig)
    assert model_cfg.n_layer == 3 and train_cfg.max_iters == 5 and train_cfg.batch_size == 8  # the preset's
    with pytest.raises(ValueError, match="unknown key 'nonsense'"):
        configs_for_run("gpt-tiny", ["nonsense=1"], GPTConfig)
    with pytest.raises(ValueError, match="another kind of model"):
        configs_for_run("multi30k", [], GPTConfig)


def test_keep_freed_memory_sets_glibcs_trim_threshold():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc


@pytest.mark.parametrize("varying", [False, True], ids=["fixed-shapes", "varying-shapes"])
def test_free_heap_is_given_back_only_when_batch_shapes_vary(tmp_path, monkeypatch, varying):
    from glassformer.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "give_back_free_memory", lambda: calls.append(1) or True)
    trainer = tiny_run(tmp_path, max_iters=25)
    if varying:  # every other batch two positions shorter, as translation's length buckets vary
        whole = trainer.task.train_batch
        turn = iter(range(10 ** 6))

        def shorter_every_other(generator, device):
            x, y = whole(generator, device)
            return (x[:, :-2], y[:, :-2]) if next(turn) % 2 else (x, y)

        monkeypatch.setattr(trainer.task, "train_batch", shorter_every_other)
    trainer.run()
    assert len(calls) == (25 // trainer_module.TRIM_EVERY if varying else 0)  # iterations 10 and 20
