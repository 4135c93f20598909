"""The course in the site: every chapter of glassformer/learn/chapters run once (mkdocs build runs
them: a failed assert on an article's number fails the build), written as an English and a
Chinese page with their images and their notebooks to download; and MathJax, from the installed
jupyter-server-mathjax package, served with the site (nothing is fetched from elsewhere).

Executed chapters are kept in .cache/learn/ under the chapter's fingerprint (its text and the
package's files): a build after an unrelated change to the docs does not run them again.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "learn"
MATHJAX = "assets/mathjax"
# What MathJax 2 needs for TeX input and HTML-CSS output with its STIX-Web web font (the package
# carries only the combined configuration, its output jax and that font): 6 of its 10 MB.
MATHJAX_PARTS = ("MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "extensions", "jax", "fonts/HTML-CSS/STIX-Web",
                 "LICENSE")
SWITCH = {"en": "[中文](../zh/{name}.md) · [Download the notebook]({name}.ipynb)",
          "zh": "[English](../en/{name}.md) · [下载 notebook]({name}.ipynb)"}


def on_files(files, config):
    import nbformat

    from glassformer.learn import build

    names = nav_pages(config.get("nav") or [])
    missing = [f"learn/{lang}/{c.name}.md" for c in build.CHAPTERS for lang in build.LANGS
               if f"learn/{lang}/{c.name}.md" not in names]
    if missing:
        raise PluginError(f"mkdocs.yml: the nav lacks the course page {missing[0]}")
    workers = max(1, min(len(build.CHAPTERS), int(os.environ.get("GLASSFORMER_LEARN_JOBS", "2"))))
    try:
        with ThreadPoolExecutor(workers) as pool:
            runs = list(pool.map(lambda c: build.execute(c.path, cache=CACHE), build.CHAPTERS))
    except build.ChapterError as e:
        raise PluginError(f"the course: {e}") from None
    for chapter, nb in zip(build.CHAPTERS, runs):
        for lang in build.LANGS:
            text, images = build.page(nb, lang, chapter.name)
            head = f"---\ntitle: \"{chapter.title[lang]}\"\n---\n\n" + SWITCH[lang].format(name=chapter.name)
            files.append(File.generated(config, f"learn/{lang}/{chapter.name}.md", content=head + "\n\n" + text))
            for name, data in images.items():
                files.append(File.generated(config, f"learn/{lang}/img/{name}", content=data))
            notebook = nbformat.writes(build.language_notebook(nb, lang))
            files.append(File.generated(config, f"learn/{lang}/{chapter.name}.ipynb", content=notebook))
    for path, uri in mathjax_files():
        files.append(File.generated(config, f"{MATHJAX}/{uri}", abs_src_path=str(path)))
    return files


def nav_pages(nav) -> set[str]:
    """Every page path the nav names, at any depth."""
    out = set()
    for item in nav if isinstance(nav, list) else [nav]:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict):
            for value in item.values():
                out |= nav_pages(value)
    return out


def mathjax_files():
    """(file, its path under assets/mathjax) for the parts of MathJax the site uses."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise PluginError("the course's math needs MathJax: pip install -e '.[docs]' "
                          "(jupyter-server-mathjax carries it)") from None
    static = Path(jupyter_server_mathjax.__file__).resolve().parent / "static"
    for part in MATHJAX_PARTS:
        path = static / part
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in found:
            yield f, f.relative_to(static).as_posix()
