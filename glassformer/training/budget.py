"""A time budget for training: the schedule is planned to end, annealed, inside `max_time`.

A preset sized on one CPU runs 2-3x slower on another. Stopping it when the time is up leaves
the learning rate mid-schedule (the `multi30k` preset stopped at iteration 1312 of 2800 with
the cosine still at two-thirds of its peak). Instead the trainer measures its own step and
evaluation times and sets the iteration count so that the warmup, the decay, every evaluation
and the final one fit in the budget: the schedule's shape is kept and stretched or shrunk to
the machine. The recipe's `max_iters` is the most it runs: a fast machine finishes the recipe
as written, early.

The plan is made after the first steps (`PROBE_STEPS`), and made again at every evaluation
from all the steps timed so far, so a machine that slows down mid-run still ends inside the
budget. `Budget` is the plan's state; it is saved in resume.pt, so a resumed run keeps its
iteration count and the seconds already spent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PROBE_STEPS = 20  # steps timed before the first plan (the first SKIPPED_STEPS are not counted)
SKIPPED_STEPS = 3  # the first steps after a start allocate buffers and are slower than the rest


def evaluations_after(it: int, end: int, eval_interval: int) -> int:
    """How many evaluations a run at iteration `it` still makes if it ends at `end`: one at every
    multiple of `eval_interval` in (it, end], and the final one at `end` (counted once); none if end <= it."""
    if end <= it:
        return 0
    return end // eval_interval - it // eval_interval + (end % eval_interval != 0)


def fitting_iters(it: int, seconds_left: float, step_s: float, eval_s: float, eval_interval: int,
                  ceiling: int) -> int:
    """The largest end iteration in [it, ceiling] whose remaining steps and evaluations take at most
    `seconds_left`; `it` when not even one step and the final evaluation fit.

    Args:
        it: the iteration the run is at.
        seconds_left: what is left of the budget.
        step_s: seconds per optimizer step.
        eval_s: seconds per evaluation (with its checkpoint).
        eval_interval: evaluations happen at its multiples, and at the end.
        ceiling: the recipe's max_iters.
    """
    def fits(end: int) -> bool:
        return (end - it) * step_s + evaluations_after(it, end, eval_interval) * eval_s <= seconds_left

    low, high = it, ceiling  # fits(low) is taken as true: the run is there already; the cost is monotone in end
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


@dataclass
class Budget:
    """A run's time plan.

    Attributes:
        seconds: the budget (TrainConfig.max_time): steps, evaluations and checkpoints of the
            training loop, across resumptions.
        ceiling: the recipe's max_iters, the most the plan allows.
        planned: the iteration the run now ends at.
        spent: seconds of the loop before this process started it (earlier runs of a resumed run).
        made: whether a plan was made yet (until then the recipe's max_iters stands).
    """

    seconds: float
    ceiling: int
    planned: int
    spent: float = 0.0
    made: bool = False

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict, seconds: float, ceiling: int) -> Budget:
        """The plan saved in resume.pt, under the budget and ceiling the resumed run was given."""
        return cls(seconds=seconds, ceiling=ceiling, planned=min(int(state["planned"]), ceiling),
                   spent=float(state["spent"]), made=bool(state["made"]))

    def replan(self, it: int, elapsed: float, step_s: float, eval_s: float, eval_interval: int) -> int:
        """Sets and returns the end iteration that fits what is left after the run's `elapsed` seconds
        (those of the runs it resumes included)."""
        self.planned = max(fitting_iters(it, self.seconds - elapsed, step_s, eval_s, eval_interval, self.ceiling), it)
        self.made = True
        return self.planned
