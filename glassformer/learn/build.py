"""The course's chapters: executed once, written out as an English and a Chinese page.

A chapter is a Jupytext "percent" file in glassformer/learn/chapters/ (a Python file whose
`# %% [markdown]` cells are prose, so that its diffs read as text). A cell may carry
`lang="en"` or `lang="zh"`: it belongs to that language's page only; a cell without `lang`
belongs to both. The code is the same in both languages, so a chapter runs once (one kernel,
`execute`) and each language's page is written from that one run (`page`). A code cell
tagged `solution` is an exercise's answer: it runs like the rest (so CI proves that the check
accepts it) and is drawn folded. Output that differs by language comes as a display of
`LANG_MIME` ({"en": text, "zh": text}, see glassformer.learn.show), of which each page keeps its own.

    nb = execute(chapter_path("neurons"))        # runs every cell; an error or a failed assert raises
    text, images = page(nb, "zh", "neurons")      # the Chinese page's Markdown, its images by name

docs/hooks/learn.py adds the pages to the site (mkdocs build runs every chapter);
`glassformer learn` writes the notebooks for Jupyter.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from glassformer.learn.exercises import LANG_MIME  # {"en": text, "zh": text}: one output, two languages

CHAPTERS_DIR = Path(__file__).resolve().parent / "chapters"
LANGS = ("en", "zh")

CELL_TIMEOUT_S = 600  # a cell that trains a model runs for seconds; a hung one fails the build


@dataclass(frozen=True)
class Chapter:
    """One chapter: its file's stem (the page's name) and its titles."""

    name: str
    title: dict[str, str]

    @property
    def path(self) -> Path:
        return CHAPTERS_DIR / f"{self.name}.py"


# The articles' order. A chapter's title is its page's first heading in each language.
CHAPTERS = [
    Chapter("neurons", {"en": "1. Neurons from nothing", "zh": "1. 从零开始的神经元"}),
    Chapter("nextchar", {"en": "2. Predicting the next character", "zh": "2. 预测下一个字符"}),
    Chapter("tokens", {"en": "3. Tokens", "zh": "3. 词元与分词器"}),
    Chapter("attention", {"en": "4. Attention by hand", "zh": "4. 手算注意力"}),
    Chapter("translation", {"en": "5. The encoder-decoder", "zh": "5. 编码器-解码器与翻译"}),
    Chapter("gpt", {"en": "6. GPT: only the decoder", "zh": "6. GPT：只有解码器"}),
    Chapter("modern", {"en": "7. Modern models", "zh": "7. 现代模型"}),
]


class ChapterError(Exception):
    """A chapter that does not run: the chapter, the cell and the error, on one line."""


def chapter(name: str) -> Chapter:
    for c in CHAPTERS:
        if c.name == name:
            return c
    raise ChapterError(f"no chapter {name!r}; the chapters are: {', '.join(c.name for c in CHAPTERS)}")


def read(path: Path):
    """The chapter file as a notebook (jupytext)."""
    import jupytext

    return jupytext.read(path, fmt="py:percent")


def in_language(cell, lang: str) -> bool:
    return cell.metadata.get("lang", lang) == lang


def fingerprint(path: Path) -> str:
    """What a chapter's run depends on: its text and every file of the package (a change to the
    library may move a number the chapter asserts)."""
    h = hashlib.sha256(path.read_bytes())
    package = Path(__file__).resolve().parent.parent
    for f in sorted(package.rglob("*")):
        if f.suffix in (".py", ".c", ".js", ".css", ".j2") and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def execute(path: Path, cache: Path | None = None, workdir: Path | None = None):
    """The chapter run top to bottom in a fresh Python kernel, with its outputs.

    Args:
        path: the chapter's file.
        cache: a folder keeping executed notebooks by fingerprint (None: always run).
        workdir: the kernel's working directory (a chapter may write a run there; None: a
            temporary one).

    Raises:
        ChapterError: a cell raised (an assert on an article's number included), naming the cell.
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    key = fingerprint(path)
    cached = cache / f"{path.stem}-{key[:20]}.ipynb" if cache else None
    if cached is not None and cached.is_file():
        return nbformat.read(cached, as_version=4)
    nb = read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # One thread: the docs build runs two chapters at once, and on a busy 2-core machine torch's
    # threads spinning against each other made a chapter's training cells 10x slower (3 min vs 20 s).
    # matplotlib draws with the kernel's inline backend.
    env = {"HF_HUB_OFFLINE": "1", "GLASSFORMER_LANG": "en", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory(prefix="glassformer-learn-") as tmp:
        cwd = Path(workdir or tmp)
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}})
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            client.execute()
        except CellExecutionError as e:
            raise ChapterError(f"{path.name}: a cell failed: {failed_line(e)}") from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_file = cached.with_suffix(".tmp")
        nbformat.write(nb, tmp_file)
        tmp_file.replace(cached)
    return nb


def failed_line(error) -> str:
    """The error's last meaningful line (nbclient's message holds the cell and a traceback)."""
    ename, evalue = getattr(error, "ename", ""), getattr(error, "evalue", "")
    if ename:
        return f"{ename}: {evalue}".strip().rstrip(":")
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


# ---------------------------------------------------------------------------------------------
# Writing a page


def language_notebook(nb, lang: str):
    """The notebook a reader of `lang` downloads: the other language's cells left out, each
    two-language output reduced to its text in `lang`."""
    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if in_language(c, lang)]
    for cell in out.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if LANG_MIME in data:
                text = lang_text(data[LANG_MIME], lang)
                output["data"] = {"text/plain": text}
    out.metadata.setdefault("language_info", {"name": "python"})
    return out


def lang_text(value, lang: str) -> str:
    if isinstance(value, str):
        value = json.loads(value)
    return value.get(lang) or value.get("en", "")


def page(nb, lang: str, name: str) -> tuple[str, dict[str, bytes]]:
    """The Markdown of `lang`'s page for an executed chapter, and its images (file name -> bytes;
    the page refers to them as img/NAME next to it)."""
    parts, images = [], {}
    for i, cell in enumerate(nb.cells):
        if not in_language(cell, lang):
            continue
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code" or "hide" in cell.metadata.get("tags", []):
            continue
        shown = [f"```python\n{cell.source}\n```"]
        shown += outputs(cell, lang, f"{name}-{i}", images)
        if "solution" in cell.metadata.get("tags", []):
            title = "Solution" if lang == "en" else "答案"
            body = "\n\n".join(shown)
            parts.append(f'??? success "{title}"\n\n' + indent(body))
        else:
            parts.extend(shown)
    return "\n\n".join(parts) + "\n", images


def indent(text: str) -> str:
    return "\n".join(("    " + line) if line.strip() else "" for line in text.splitlines())


def outputs(cell, lang: str, stem: str, images: dict[str, bytes]) -> list[str]:
    """A code cell's outputs as Markdown: text as a text block, images as files, HTML as it is."""
    shown, stream = [], []

    def flush():
        if stream:
            shown.append(text_block("".join(stream)))
            stream.clear()

    for k, output in enumerate(cell.get("outputs", [])):
        kind = output.get("output_type")
        if kind == "stream":
            stream.append(output.get("text", ""))
            continue
        flush()
        if kind == "error":  # only where a cell allows errors (`raises-exception`): shown as the learner sees it
            shown.append(text_block(f"{output.get('ename')}: {output.get('evalue')}"))
            continue
        data = output.get("data", {})
        if LANG_MIME in data:
            shown.append(text_block(lang_text(data[LANG_MIME], lang)))
        elif "text/html" in data:
            shown.append('<div class="gf-output" markdown="0">\n' + html_text(data["text/html"]) + "\n</div>")
        elif "image/png" in data:
            file = f"{stem}-{k}.png"
            images[file] = base64.b64decode(data["image/png"])
            shown.append(f"![](img/{file})")
        elif "text/plain" in data:
            shown.append(text_block(data["text/plain"]))
    flush()
    return shown


def html_text(value) -> str:
    text = "".join(value) if isinstance(value, list) else value
    # A blank line would end Markdown's raw-HTML block and let Markdown read the rest as text.
    return "\n".join(line for line in text.splitlines() if line.strip())


def text_block(text: str) -> str:
    text = text.rstrip("\n")
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}"
