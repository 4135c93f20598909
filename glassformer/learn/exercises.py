"""Exercises with answers the library computes, and `check`, which compares a learner's answer.

Each exercise names the library function that computes its answer (never a typed-in number),
the tolerance a hand calculation deserves, and hints in English and Chinese. `check` prints one
line in the reader's language (both languages where a chapter's page is built from one run:
build.LANG_MIME) and returns whether the answer is right; an answer of None prints the question
and the first hint, so a chapter's exercise cell runs before the learner fills it in.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from glassformer.learn.problems import Exercise

LANG_MIME = "application/vnd.glassformer.lang+json"  # as build.LANG_MIME (build needs nbclient; this does not)
_language = {"lang": None}


def language(lang: str | None = None) -> str:
    """The language `check` and `show` write in: set it with language("zh"); by default the
    environment's GLASSFORMER_LANG, else English."""
    if lang is not None:
        if lang not in ("en", "zh"):
            raise ValueError(f"unknown language {lang!r}; choose en or zh")
        _language["lang"] = lang
    chosen = _language["lang"] or os.environ.get("GLASSFORMER_LANG")
    return chosen if chosen in ("en", "zh") else "en"


def show(en: str, zh: str) -> None:
    """One line in two languages: a notebook shows the reader's; a course page keeps its own."""
    texts = {"en": en, "zh": zh}
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display({LANG_MIME: json.dumps(texts, ensure_ascii=False), "text/plain": texts[language()]}, raw=True)
    else:
        print(texts[language()])


def all_exercises() -> dict[str, Exercise]:
    """Every chapter's exercises, by key ("neurons.first_neuron"), gathered from glassformer.learn.problems."""
    import importlib
    import pkgutil

    from glassformer.learn import problems

    found: dict[str, Exercise] = {}
    for module in pkgutil.iter_modules(problems.__path__):
        for key, exercise in importlib.import_module(f"{problems.__name__}.{module.name}").EXERCISES.items():
            if not key.startswith(module.name + "."):
                raise ValueError(f"glassformer/learn/problems/{module.name}.py: exercise {key!r} "
                                 f"must start with {module.name}.")
            found[key] = exercise
    return found


class Verdict:
    """check's answer: true when right. A notebook shows nothing more for it (check has already
    said why), so `learn.check(...)` as a cell's last line leaves no stray True or False."""

    def __init__(self, right: bool):
        self.right = right

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return "right" if self.right else "not right"

    def _ipython_display_(self) -> None:
        pass


def check(key: str, answer) -> Verdict:
    """Whether `answer` is the exercise's answer within its tolerance (true when it is); prints one
    line saying so: the library's value when right, a hint when wrong, the question when None."""
    exercises = all_exercises()
    if key not in exercises:
        raise ValueError(f"no exercise {key!r}; the exercises are: {', '.join(exercises)}")
    exercise = exercises[key]
    right = np.asarray(exercise.answer(), dtype=np.float64)
    if answer is None:
        show(en=f"? {exercise.question['en']}  Hint: {exercise.hints['en'][0]}",
             zh=f"？{exercise.question['zh']}  提示：{exercise.hints['zh'][0]}")
        return Verdict(False)
    try:
        given = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        show(en=f"✗ {key}: the answer must be a number or numbers, not {type(answer).__name__}",
             zh=f"✗ {key}：答案应该是数字，而不是 {type(answer).__name__}")
        return Verdict(False)
    if given.shape != right.shape:
        show(en=f"✗ {key}: the answer has shape {list(given.shape)}; expected {list(right.shape)}",
             zh=f"✗ {key}：答案的形状是 {list(given.shape)}，应为 {list(right.shape)}")
        return Verdict(False)
    ok = bool(np.all(np.abs(given - right) <= exercise.tolerance)) and bool(np.all(np.isfinite(given)))
    shown = _text(right)
    if ok:
        show(en=f"✓ {key}: right (the library computes {shown})", zh=f"✓ {key}：正确（程序算出 {shown}）")
    else:
        off = float(np.max(np.abs(given - right))) if np.all(np.isfinite(given)) else math.inf
        show(en=f"✗ {key}: {_text(given)} is off by {off:.3g}. Hint: {exercise.hints['en'][-1]}",
             zh=f"✗ {key}：{_text(given)} 差了 {off:.3g}。提示：{exercise.hints['zh'][-1]}")
    return Verdict(ok)


def _text(a: np.ndarray) -> str:
    """Numbers as a learner writes them: whole ones in full (7,087,872, not 7.08787e+06), others to 6 digits."""
    def one(x: float) -> str:
        text = f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{float(x):.6g}"
        return text.replace("-", "−")

    return one(float(a)) if a.ndim == 0 else "[" + ", ".join(one(float(x)) for x in a.ravel()) + "]"
