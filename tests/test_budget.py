"""A time budget plans the schedule: the run ends annealed inside max_time, on a slow machine as on a fast one.

The trainer reads every duration from `Trainer.clock`; these tests give it a fake clock that a
step and an evaluation advance by fixed amounts, so the plans are exact and the same on any CPU.
"""

import json
import random

import numpy as np
import pytest
import torch

from glassformer import GPT, GPTConfig
from glassformer.checkpoint import CheckpointError
from glassformer.training.budget import Budget, evaluations_after, fitting_iters
from glassformer.training.lm import LMTask
from glassformer.training.trainer import TrainConfig, Trainer, learning_rate


def test_fitting_iters_is_the_largest_end_that_fits():
    rng = random.Random(0)
    for _ in range(300):
        it, interval, ceiling = rng.randrange(0, 50), rng.randrange(1, 12), rng.randrange(50, 120)
        step_s, eval_s, left = rng.uniform(0.1, 2), rng.uniform(0, 5), rng.uniform(-5, 150)

        def cost(end):  # brute force: walk the iterations, counting evaluations at multiples and at the end
            evals = sum(1 for i in range(it + 1, end + 1) if i % interval == 0) + (end % interval != 0)
            return (end - it) * step_s + evals * eval_s

        brute = max([end for end in range(it + 1, ceiling + 1) if cost(end) <= left], default=it)
        assert fitting_iters(it, left, step_s, eval_s, interval, ceiling) == brute


def test_evaluations_after_counts_the_final_one_once():
    assert evaluations_after(0, 100, 25) == 4  # 25, 50, 75, 100
    assert evaluations_after(0, 90, 25) == 4  # 25, 50, 75 and the final one at 90
    assert evaluations_after(30, 30, 25) == 0


class FakeClock:
    """Seconds that advance only when told: a step costs `step_s`, an evaluation `eval_s`."""

    def __init__(self, step_s=1.0, eval_s=2.0):
        self.now, self.step_s, self.eval_s = 0.0, step_s, eval_s

    def __call__(self):
        return self.now


def budget_run(out, clock, max_iters=200, max_time=60.0, **train):
    torch.manual_seed(0)
    data = np.tile(np.random.default_rng(0).integers(0, 20, 37), 90).astype(np.uint16)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16))
    cfg = TrainConfig(max_iters=max_iters, max_time=max_time, batch_size=4, eval_interval=10, eval_iters=2,
                      log_interval=1, warmup_iters=5, learning_rate=3e-3, min_lr=3e-4, dtype="float32", **train)
    trainer = Trainer(model, LMTask(data[:3000], data[3000:], 16, cfg), cfg, out, progress=False)
    trainer.clock = clock
    return trainer


@pytest.fixture
def timed(monkeypatch):
    """Makes every Trainer step and evaluation advance the trainer's fake clock."""
    step, evaluate = Trainer.train_step, Trainer.evaluate

    def timed_step(self):
        self.clock.now += self.clock.step_s
        return step(self)

    def timed_evaluate(self):
        self.clock.now += self.clock.eval_s
        return evaluate(self)

    monkeypatch.setattr(Trainer, "train_step", timed_step)
    monkeypatch.setattr(Trainer, "evaluate", timed_evaluate)


def records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_slow_machine_ends_annealed_inside_the_budget(tmp_path, timed):
    clock = FakeClock(step_s=1.0, eval_s=2.0)
    trainer = budget_run(tmp_path, clock, max_iters=200, max_time=60.0)
    trainer.run()
    # The first plan, at the evaluation of iteration 10 (the first with steps timed), by hand: the evaluations
    # at 0 and 10 and 10 steps have taken 14 s; 46 s are left for the steps and the evaluations at every 10th
    # iteration and the last. Ending at 48 costs 38 + 4 * 2 = 46 s; at 49, 47 s.
    plans = [r for r in records(tmp_path) if r.get("event") == "plan"]
    assert [(p["iter"], p["max_iters"]) for p in plans] == [(10, 48)]  # the same clock: no re-plan changes it
    assert trainer.iter == 48 and clock.now == 60.0
    logged = [r for r in records(tmp_path) if "train_loss" in r]
    assert logged[-1]["iter"] == 48
    # The schedule kept its shape and ended at min_lr: annealed, not cut off.
    assert logged[-1]["lr"] == pytest.approx(learning_rate(47, TrainConfig(
        max_iters=48, warmup_iters=5, learning_rate=3e-3, min_lr=3e-4), 0))
    assert logged[-1]["lr"] < 3e-4 + 0.01 * (3e-3 - 3e-4)


def test_a_fast_machine_runs_the_recipe_as_written(tmp_path, timed):
    clock = FakeClock(step_s=0.1, eval_s=0.5)
    trainer = budget_run(tmp_path, clock, max_iters=60, max_time=600.0)
    trainer.run()
    assert trainer.iter == 60 and trainer.schedule is trainer.cfg


def test_a_machine_that_slows_down_is_replanned(tmp_path, monkeypatch, timed):
    clock = FakeClock(step_s=1.0, eval_s=2.0)
    trainer = budget_run(tmp_path, clock, max_iters=200, max_time=120.0)
    step = Trainer.train_step

    def slowing(self):  # from iteration 40 on, every step takes 3 s instead of 1
        if self.iter == 40:
            self.clock.step_s = 3.0
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", slowing)
    trainer.run()
    plans = [r["max_iters"] for r in records(tmp_path) if r.get("event") == "plan"]
    assert plans[0] > trainer.iter and plans == sorted(plans, reverse=True)  # shortened as the steps slowed
    assert clock.now <= 120.0 + 3.0 + 2.0  # at worst the hard stop: one step and the final evaluation late
    lrs = [r["lr"] for r in records(tmp_path) if "train_loss" in r]
    assert lrs[-1] < 3e-4 + 0.1 * (3e-3 - 3e-4)  # annealed (the re-plans shift the cosine a little)


def test_resume_keeps_the_plan_and_the_time_spent(tmp_path, monkeypatch, timed):
    clock = FakeClock(step_s=1.0, eval_s=2.0)
    trainer = budget_run(tmp_path, clock, max_iters=200, max_time=60.0)
    step = Trainer.train_step

    def dying(self):  # killed at iteration 35, after the checkpoint of iteration 30
        if self.iter == 35:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    saved = torch.load(tmp_path / "resume.pt", weights_only=True)["budget"]
    assert saved["planned"] == 48 and saved["made"] and saved["spent"] == 2 * 4 + 30  # evaluations 0-30, 30 steps
    monkeypatch.setattr(Trainer, "train_step", step)
    resumed = budget_run(tmp_path, FakeClock(step_s=1.0, eval_s=2.0), max_iters=200, max_time=60.0)
    resumed.load_resume()
    assert resumed.end == 48 and resumed.budget.spent == saved["spent"]
    resumed = budget_run(tmp_path, FakeClock(step_s=1.0, eval_s=2.0), max_iters=200, max_time=60.0)
    resumed.run(resume=True)
    # The resumed run evaluates iteration 30 again (2 s more than the uninterrupted run), so it may end a
    # step or two early, never later than the plan and never past the budget.
    assert 46 <= resumed.iter <= 48 and saved["spent"] + resumed.clock.now <= 60.0


def test_a_bad_budget_in_resume_pt_is_one_line(tmp_path, timed):
    trainer = budget_run(tmp_path, FakeClock(), max_iters=30, max_time=600.0)
    trainer.run()
    state = torch.load(tmp_path / "resume.pt", weights_only=True)
    state["budget"] = {"planned": "many"}
    torch.save(state, tmp_path / "resume.pt")
    with pytest.raises(CheckpointError, match="'budget' must hold"):
        budget_run(tmp_path, FakeClock(), max_iters=30, max_time=600.0).load_resume()


def test_budget_state_round_trips():
    budget = Budget(seconds=100.0, ceiling=500, planned=321, spent=12.5, made=True)
    assert Budget.from_state(budget.state_dict(), 100.0, 500) == budget
    assert Budget.from_state(budget.state_dict(), 100.0, 300).planned == 300  # a smaller recipe caps the plan
