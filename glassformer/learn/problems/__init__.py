"""Each chapter's exercises, one module a chapter (named as the chapter), each with its EXERCISES:
{"chapter.name": Exercise}. glassformer.learn.exercises gathers them and checks answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Exercise:
    """question/hints: by language; answer: computes the right answer with the library;
    tolerance: the largest |difference| accepted, per element."""

    question: dict[str, str]
    hints: dict[str, list[str]]
    answer: Callable[[], float | np.ndarray]
    tolerance: float
