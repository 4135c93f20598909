"""`glassformer learn`: the course's chapters as Jupyter notebooks in one language, written into a
folder of the learner's, to run and change offline (`jupyter lab DIR`).

A notebook already in the folder is the learner's (perhaps with their answers in it): it is kept,
never replaced; only missing ones are written, each atomically.
"""

from __future__ import annotations

from pathlib import Path

from glassformer.base.files import atomic_write_text, check_output_dir


def write_notebooks(out: str | Path, lang: str) -> list[tuple[Path, bool]]:
    """Writes each chapter as DIR/NN-NAME.ipynb in `lang`, without outputs (the learner runs them).

    Returns:
        (path, written) per chapter: written False where the file was there already and is kept.

    Raises:
        ValueError: `out` is a file or a run's directory; jupytext is not installed.
    """
    from glassformer.learn import build

    if lang not in build.LANGS:
        raise ValueError(f"--lang: unknown language {lang!r}; choose en or zh")
    try:
        import jupytext  # noqa: F401 - build.read needs it
        import nbformat
    except ImportError:
        raise ValueError("glassformer learn needs jupytext and nbformat: pip install 'glassformer[docs]'") from None
    folder = check_output_dir(out, "--out")
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for number, chapter in enumerate(build.CHAPTERS, 1):
        path = folder / f"{number:02d}-{chapter.name}.ipynb"
        if path.exists():
            done.append((path, False))
            continue
        nb = build.language_notebook(build.read(chapter.path), lang)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata.pop("jupytext", None)
        for cell in nb.cells:
            cell.metadata.pop("lang", None)
        # learn.check and learn.show speak the notebook's language.
        nb.cells.insert(1, nbformat.v4.new_code_cell(f'from glassformer import learn\n\nlearn.language("{lang}")'))
        atomic_write_text(path, nbformat.writes(nb))
        done.append((path, True))
    return done
