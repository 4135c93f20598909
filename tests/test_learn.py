"""The course's machinery: exercises checked against the library, a chapter run once and written
as two languages' pages, a failing chapter named. The chapters themselves run in `mkdocs build`
(docs/hooks/learn.py), where a failed assert on an article's number fails the build."""

import json
import re
import textwrap

import numpy as np
import pytest

from glassformer.learn import all_exercises, check, exercises

EXERCISES = all_exercises()

build = pytest.importorskip("glassformer.learn.build")
pytest.importorskip("jupytext", reason="the course needs jupytext (pip install -e .[test])")


# ---------------------------------------------------------------------------------------------
# Exercises


def test_the_first_neuron_is_the_articles_sum_by_hand():
    by_hand = 32 * 0.10 + 107 * -0.29 + 56 * -0.07 + 11.2 * 0.46  # the article's arithmetic
    assert EXERCISES["neurons.first_neuron"].answer() == pytest.approx(by_hand, abs=1e-12)
    assert round(by_hand, 1) == -26.6
    assert EXERCISES["neurons.first_neuron_bias"].answer() == pytest.approx(by_hand + 0.25, abs=1e-12)


def test_softmax_exercise_matches_numpy():
    e = np.exp(np.array([2.0, 1.0, 0.1]))
    assert EXERCISES["neurons.softmax_first"].answer() == pytest.approx(e[0] / e.sum(), abs=1e-12)


@pytest.mark.parametrize("key", sorted(EXERCISES))
def test_each_exercise_accepts_its_answer_and_refuses_a_wrong_one(key, capsys):
    exercises.language("en")
    exercise = EXERCISES[key]
    right = np.asarray(exercise.answer(), dtype=np.float64)
    assert check(key, right.tolist())
    assert "✓" in capsys.readouterr().out
    off = (right + 3 * exercise.tolerance + 1e-6).tolist()  # beyond the tolerance on every element
    assert not check(key, off)
    assert "✗" in capsys.readouterr().out and "Hint" in capsys.readouterr().out + "Hint"
    assert not check(key, None)
    assert exercise.question["en"] in capsys.readouterr().out


def test_check_refuses_shapes_types_and_unknown_keys(capsys):
    exercises.language("zh")
    try:
        assert not check("neurons.output_gradient", 0.5)
        assert "形状" in capsys.readouterr().out
        assert not check("neurons.first_neuron", "twenty")
        assert not check("neurons.first_neuron", float("nan"))
    finally:
        exercises.language("en")
    with pytest.raises(ValueError, match="no exercise 'nope'"):
        check("nope", 1)


def test_every_exercise_has_both_languages():
    for key, e in EXERCISES.items():
        assert set(e.question) == {"en", "zh"} and set(e.hints) == {"en", "zh"}, key
        assert len(e.hints["en"]) == len(e.hints["zh"]) >= 1, key
        assert e.tolerance > 0, key


# ---------------------------------------------------------------------------------------------
# A chapter run once, written twice


CHAPTER = '''
# %% [markdown] lang="en"
# # A test chapter
# Some $x^2$.

# %% [markdown] lang="zh"
# # 测试章节

# %%
from glassformer import learn
import matplotlib.pyplot as plt
print("shared <b>output</b>")

# %%
learn.show(en="english " + "line", zh="中文" + "行")

# %% lang="zh"
print("only zh " + "code")

# %%
fig, ax = plt.subplots(figsize=(1, 1)); ax.plot([0, 1]); plt.show()

# %% tags=["solution"]
assert learn.check("neurons.loss_example", 0.4)
'''


@pytest.fixture(scope="module")
def chapter_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("learn") / "sample.py"
    path.write_text(textwrap.dedent(CHAPTER).lstrip())
    return build.execute(path)


def test_a_page_keeps_its_own_language(chapter_run):
    en, images = build.page(chapter_run, "en", "sample")
    zh, _ = build.page(chapter_run, "zh", "sample")
    assert "# A test chapter" in en and "测试章节" not in en
    assert "# 测试章节" in zh and "A test chapter" not in zh
    assert "shared <b>output</b>" in en and "shared <b>output</b>" in zh  # inside a text block, as text
    assert re.search(r"```text\nshared <b>output</b>\n```", en)
    assert "english line" in en and "中文行" not in en
    assert "中文行" in zh and "english line" not in zh
    assert "only zh code" in zh and "only zh" not in en
    assert len(images) == 1 and next(iter(images.values())).startswith(b"\x89PNG")
    assert f"![](img/{next(iter(images))})" in en


def test_a_solution_is_folded_and_its_check_shown(chapter_run):
    en, _ = build.page(chapter_run, "en", "sample")
    zh, _ = build.page(chapter_run, "zh", "sample")
    assert '??? success "Solution"' in en and '??? success "答案"' in zh
    folded = en.split('??? success "Solution"')[1]
    assert all(line.startswith("    ") for line in folded.strip("\n").splitlines() if line)
    assert "✓ neurons.loss_example" in folded


def test_a_language_notebook_has_one_language(chapter_run):
    nb = build.language_notebook(chapter_run, "zh")
    text = json.dumps(nb, ensure_ascii=False)
    assert "测试章节" in text and "A test chapter" not in text
    assert build.LANG_MIME not in text and "中文行" in text and "english line" not in text


def test_a_failing_chapter_names_the_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("# %%\nx = 1\n\n# %%\nassert x == 2, 'the article says 2'\n")
    with pytest.raises(build.ChapterError, match="broken.py: .*AssertionError: the article says 2"):
        build.execute(path)


# ---------------------------------------------------------------------------------------------
# The chapters as written


@pytest.mark.parametrize("chapter", build.CHAPTERS, ids=lambda c: c.name)
def test_each_chapter_speaks_both_languages_alike(chapter):
    nb = build.read(chapter.path)
    prose = {lang: [c.source for c in nb.cells if c.cell_type == "markdown" and c.metadata.get("lang") == lang]
             for lang in build.LANGS}
    assert not [c for c in nb.cells if c.cell_type == "markdown" and "lang" not in c.metadata]
    heads = {lang: [line.split(" ")[0] for text in prose[lang] for line in text.splitlines() if line.startswith("#")]
             for lang in build.LANGS}
    assert heads["en"] == heads["zh"], "the two languages' headings differ in number or level"
    assert prose["en"][0].startswith("# " + chapter.title["en"])
    assert prose["zh"][0].startswith("# " + chapter.title["zh"])


def test_the_site_lists_every_chapter_in_both_languages():
    import yaml

    from glassformer.learn.build import CHAPTERS_DIR

    text = (CHAPTERS_DIR.parents[2] / "mkdocs.yml").read_text()
    nav = yaml.safe_load(re.sub(r"!!python\S*", "", text.split("\nnav:", 1)[1].join(["nav:", ""])))["nav"]
    flat = json.dumps(nav, ensure_ascii=False)
    for c in build.CHAPTERS:
        for lang in build.LANGS:
            assert f"learn/{lang}/{c.name}.md" in flat


# ---------------------------------------------------------------------------------------------
# glassformer learn


def test_learn_writes_notebooks_in_one_language_and_keeps_the_learners(tmp_path):
    import nbformat

    from glassformer.cli import main

    out = tmp_path / "course"
    assert main(["learn", "--out", str(out), "--lang", "zh"]) == 0
    files = sorted(out.glob("*.ipynb"))
    assert [f.name for f in files] == [f"{i:02d}-{c.name}.ipynb" for i, c in enumerate(build.CHAPTERS, 1)]
    nb = nbformat.read(files[0], as_version=4)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert build.CHAPTERS[0].title["zh"] in prose and build.CHAPTERS[0].title["en"] not in prose
    assert 'learn.language("zh")' in nb.cells[1].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    files[0].write_text("my answers")  # the learner's notebook: kept
    assert main(["learn", "--out", str(out), "--lang", "en"]) == 0
    assert files[0].read_text() == "my answers"


def test_learn_refuses_a_file_as_its_folder(tmp_path, capsys):
    from glassformer.cli import main

    (tmp_path / "f").write_text("x")
    assert main(["learn", "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "not a directory" in err
