"""Every shell example in README.md, docs/**/*.md and the course's chapters (the Markdown cells of
glassformer/learn/chapters/*.py) runs, on tiny data, so the documentation and the code cannot
drift apart.

What counts as a command: in a ```bash, ```sh or ```shell block every line that is not blank
and not a comment (a line ending in a backslash continues on the next); in a ```console block
every line that starts with "$ " (and its backslash continuations); the other lines of a
console block are output and are not checked. A block whose previous line is the HTML comment
`<!-- docs-test: skip: REASON -->` is not run, and its page's test reports REASON.

A course chapter's blocks: a block whose commands repeat an earlier block's of the same chapter
(the Chinese prose's copy of the English) runs once; a block marked
`<!-- docs-test: after-chapter -->` uses what the chapter's notebook makes (the learner's own
model), so that page's test first runs the chapter itself in the sandbox, as a learner would.

One test per page: its commands run in order, each with `bash -e -c`, in one sandbox
directory, so state carries from one to the next (a run trained by one command is sampled by
the next; a variable assigned by `D=$(...)` is assigned again before each later command).
The sandbox holds:

- HOME = sandbox/home, with `~/models/Qwen2.5-0.5B-Instruct` (qwen2), `~/models/SmolLM2-135M`
  (llama) and `~/models/Qwen3-0.6B` (qwen3) made as tiny random-weight Hugging Face
  directories of that family, with a byte-level BPE tokenizer and a chat template;
- GLASSFORMER_CACHE = sandbox/cache, seeded with the real tiny-shakespeare and Multi30k files
  from the shared data directory, so `glassformer data fetch` finds them by their SHA-256
  and downloads nothing (pages that need them are skipped when that directory is absent);
- `input.txt`, the first 100 KB of tiny-shakespeare; `books/`, `web.jsonl` and `more/*.txt`,
  a small generated corpus for `data prepare`; `bench/`, a link to the repository's.

The scaled-down form (also described in docs/testing.md):

- `glassformer train lm` and `train translation` (also under torchrun) get
  `--set max_iters=2 --set eval_interval=2 --set eval_iters=1` appended; translation also a
  tiny model (`d_model=32 d_ff=64 n_head=2`, one encoder and one decoder layer, `block_size=32`,
  `batch_tokens=512`), so that its evaluations take seconds.
- `python bench/NAME.py ...` runs as `python bench/NAME.py --help` (a page's benchmarks in one
  process, so torch is imported once); every option the page gives it must be one the help
  lists.
- `glassformer explore ...` runs with `--no-browser` and `--port 0` (in place of any other
  port), in the background; the address it prints must answer 200, then Ctrl-C (SIGINT) must
  end it with status 130.

Everything else runs as written (pipes included), with OMP_NUM_THREADS=1: on a shared 2-core
CPU, OpenMP teams spinning at their barriers against each other made single commands several
times slower. Each command must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")  # as tests/test_fetch.py and tests/test_tokenizers.py find it
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
MULTI30K = DATA / "multi30k"
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(.*?)\s*-->")
AFTER_CHAPTER = re.compile(r"<!--\s*docs-test:\s*after-chapter\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
SHELLS = {"bash", "sh", "shell"}
TRAIN = re.compile(r"\bglassformer train (lm|translation)\b")
BENCH = re.compile(r"^python3? (bench/\w+\.py)\b(.*)$")
EXPLORE = re.compile(r"^glassformer explore\b")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")
SCALE_TRAIN = ["max_iters=2", "eval_interval=2", "eval_iters=1"]
SCALE_TRANSLATION = ["d_model=32", "d_ff=64", "n_head=2", "n_encoder_layers=1", "n_decoder_layers=1",
                     "block_size=32", "batch_tokens=512"]
TIMEOUT_S = 300


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    commands: list[str]
    skip: str | None  # the reason, for a block marked skip
    after_chapter: bool = False  # a chapter's block that needs the chapter run first


def strip_comment(command: str) -> str:
    """The command without a trailing `# comment` (a # outside quotes, after whitespace)."""
    quote = None
    for i, c in enumerate(command):
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].rstrip()
    return command.rstrip()


def join_continuations(lines: list[str]) -> list[str]:
    commands, current = [], ""
    for line in lines:
        if current:
            current += " " + line.strip()
        else:
            current = line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        commands.append(current)
        current = ""
    if current:
        commands.append(current)
    return commands


def blocks_of(path: Path) -> list[Block]:
    """The shell and console blocks of a Markdown page (or of a chapter's Markdown cells), in order."""
    lines = (chapter_markdown(path) if path.suffix == ".py" else path.read_text(encoding="utf-8")).splitlines()
    page = str(path.relative_to(REPO))
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        language, start = match.group(2), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        body = lines[i + 1:j]
        i = j + 1
        if language not in SHELLS | {"console"}:
            continue
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        skip = SKIP.search(previous)
        if language == "console":
            selected, follow = [], False
            for line in body:
                if line.startswith("$ "):
                    selected.append(line[2:])
                elif follow:
                    selected.append(line)
                else:
                    continue
                follow = line.rstrip().endswith("\\")
            commands = join_continuations(selected)
        else:
            commands = join_continuations([line for line in body if line.strip() and not line.lstrip().startswith("#")])
        commands = [c for c in (strip_comment(c) for c in commands) if c]
        if path.suffix == ".py" and any(b.commands == commands for b in blocks):
            continue  # the other language's copy of a block already listed
        if commands:
            blocks.append(Block(page, start + 1, commands, skip.group(1) if skip else None,
                                bool(AFTER_CHAPTER.search(previous))))
    return blocks


def chapter_markdown(path: Path) -> str:
    """A course chapter's prose, both languages: its Markdown cells (line numbers count in this text)."""
    import jupytext

    return "\n\n".join(c.source for c in jupytext.read(path, fmt="py:percent").cells if c.cell_type == "markdown")


def pages() -> list[Path]:
    chapters = sorted((REPO / "glassformer" / "learn" / "chapters").glob("*.py"))
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *chapters]


PAGES = [p for p in pages() if any(not b.skip for b in blocks_of(p))]


def scaled(command: str) -> str:
    """The command in its scaled-down form (see the module's docstring)."""
    match = BENCH.match(command)
    if match:
        return f"python {match.group(1)} --help"
    if EXPLORE.match(command):
        command = re.sub(r"--port\s+\S+", "", command).rstrip() + " --port 0"
        return command if "--no-browser" in command else command + " --no-browser"
    train = TRAIN.search(command)
    if train:
        settings = SCALE_TRAIN + (SCALE_TRANSLATION if train.group(1) == "translation" else [])
        command += "".join(f" --set {s}" for s in settings)
    return command


# The sandbox


def tiny_hf_directory(path: Path, kind: str) -> None:
    """A 2-layer, width-32 random-weight transformers model of family `kind`, with a byte-level BPE
    tokenizer (every byte a token, so any text encodes), a chat template and two end ids."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials, show_progress=False)
    text = SHAKESPEARE.read_text(encoding="utf-8")[:20_000] if SHAKESPEARE.exists() else "the cat sat on the mat. "
    tok.train_from_iterator([text], trainer=trainer)
    vocab = tok.get_vocab_size()
    config = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig,
              "qwen3": transformers.Qwen3Config}[kind](
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=kind != "qwen2",
        rms_norm_eps=1e-6, rope_theta=10000.0, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.float().save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    template = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
                " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                "{% endif %}")
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None, "chat_template": template}))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))


MODELS = {"Qwen2.5-0.5B-Instruct": "qwen2", "SmolLM2-135M": "llama", "Qwen3-0.6B": "qwen3"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """What every page's sandbox shares: the compiled-kernel cache, and the tiny model directories
    (built on first use: transformers is slow to import)."""
    root = tmp_path_factory.mktemp("docs-shared")
    (root / "xdg-cache").mkdir()
    return root


def hf_models(shared: Path) -> Path:
    models = shared / "models"
    if not models.exists():
        pytest.importorskip("transformers")
        building = shared / "models.partial"
        for name, kind in MODELS.items():
            (building / name).mkdir(parents=True)
            tiny_hf_directory(building / name, kind)
        building.rename(models)
    return models


def make_sandbox(root: Path, shared: Path, commands: list[str]) -> dict[str, str]:
    """Fills `root` with the files the pages assume; returns the environment to run them in."""
    home, cache = root / "home", root / "cache"
    home.mkdir(parents=True)
    if SHAKESPEARE.exists():
        (cache / "shakespeare").mkdir(parents=True)
        shutil.copyfile(SHAKESPEARE, cache / "shakespeare" / "input.txt")
        (root / "input.txt").write_bytes(SHAKESPEARE.read_bytes()[:100_000])
    if MULTI30K.is_dir():
        (cache / "multi30k").mkdir(parents=True)
        for f in MULTI30K.glob("*.gz"):
            shutil.copyfile(f, cache / "multi30k" / f.name)
    stories = ["the miller's daughter walked to the river and sang to the geese.",
               "a baker in the village kept bread warm for the night watchman.",
               "the old bridge creaked when the carts came home from market."]
    (root / "books").mkdir()
    for i, line in enumerate(stories):
        (root / "books" / f"book{i}.txt").write_text((line + "\n") * 200)
    (root / "web.jsonl").write_text("".join(json.dumps({"text": s * 50}) + "\n" for s in stories))
    (root / "more").mkdir()
    for i, line in enumerate(reversed(stories)):
        (root / "more" / f"more{i}.txt").write_text((line + " ") * 150)
    (root / "bench").symlink_to(REPO / "bench")
    if any("~/models/" in c for c in commands):
        (home / "models").mkdir()
        for name in MODELS:
            shutil.copytree(hf_models(shared) / name, home / "models" / name)
    env = dict(os.environ)
    env.update(HOME=str(home), GLASSFORMER_CACHE=str(cache), XDG_CACHE_HOME=str(shared / "xdg-cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", BROWSER="true",
               MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return env


# Running


def run_explore(command: str, cwd: Path, env: dict[str, str]) -> str | None:
    """Starts the explorer, fetches the page it prints, stops it with Ctrl-C; None if all went as
    documented, else what went wrong."""
    err = cwd / ".explore.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(["bash", "-e", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=stderr, start_new_session=True)
    try:
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        url, seen, deadline = None, b"", time.monotonic() + 120
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            if selector.select(timeout=1):
                chunk = os.read(proc.stdout.fileno(), 4096)
                seen += chunk
                found = re.search(rb"(http://127\.0\.0\.1:\d+/\S*)", seen)
                url = found.group(1).decode() if found else None
        if url is None:
            return f"printed no address within 120 s (exit {proc.poll()}); stdout: {seen.decode(errors='replace')}"
        with urllib.request.urlopen(url, timeout=30) as response:
            if response.status != 200 or b"<html" not in response.read(4096).lower():
                return f"{url} answered {response.status}"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        return None if rc == 130 else f"Ctrl-C ended it with status {rc}, not 130"
    except Exception as e:  # noqa: BLE001 - reported as the command's failure
        return f"{type(e).__name__}: {e}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        if err.exists():
            print(err.read_text(errors="replace")[-2000:])


# Runs `SCRIPT --help` for each script named on its command line, in one process (torch is
# imported once, not once a script), and prints {script: [exit status, help text]} as JSON.
HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    buf, code = io.StringIO(), 0
    sys.argv = [script, "--help"]
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code or 0
    out[script] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def bench_helps(commands: list[str], cwd: Path, env: dict[str, str]) -> dict[str, str | None]:
    """For each `python bench/NAME.py ...` command: None if `--help` exits 0 and lists every option
    the command gives, else what is wrong."""
    scripts = sorted({BENCH.match(c).group(1) for c in commands})
    result = subprocess.run(["python", "-c", HELP_ALL, *scripts], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    if result.returncode != 0:
        return dict.fromkeys(commands, f"--help failed: exit {result.returncode}\n{result.stderr[-3000:]}")
    helps, problems = json.loads(result.stdout.splitlines()[-1]), {}
    for command in commands:
        script, args = BENCH.match(command).groups()
        code, text = helps[script]
        unknown = [o for o in re.findall(r"(?<!\S)(--[\w-]+)", args) if o not in text]
        problems[command] = (f"--help exited {code}" if code else
                             f"options not in its --help: {unknown}" if unknown else None)
    return problems


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_documented_commands_run(page, shared, tmp_path):
    blocks = blocks_of(page)
    commands = [c for b in blocks if not b.skip for c in b.commands]
    needs = [c for c in commands if "data fetch" in c or "input.txt" in c or "multi30k" in c]
    if needs and not (SHAKESPEARE.exists() and MULTI30K.is_dir()):
        pytest.skip(f"{DATA} is absent: the page's data commands need tiny-shakespeare and Multi30k")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    env = make_sandbox(sandbox, shared, commands)
    if any(b.after_chapter and not b.skip for b in blocks):
        from glassformer.learn import build

        build.execute(page, workdir=sandbox)  # the learner's own model, where the chapter leaves it
    failures, assignments, started = [], [], time.monotonic()
    benches = bench_helps([c for c in commands if BENCH.match(c)], sandbox, env) if any(
        BENCH.match(c) for c in commands) else {}
    for block in blocks:
        if block.skip:
            print(f"{block.page}:{block.line}: skipped ({block.skip}): {block.commands}")
            continue
        for command in block.commands:
            t0 = time.monotonic()
            if BENCH.match(command):
                problem = benches[command]  # run above, all of the page's at once
            elif EXPLORE.match(command):
                problem = run_explore(scaled(command), sandbox, env)
            else:
                script = "\n".join([*assignments, scaled(command)])
                result = subprocess.run(["bash", "-e", "-c", script], cwd=sandbox, env=env, capture_output=True,
                                        text=True, timeout=TIMEOUT_S)
                problem = None if result.returncode == 0 else (
                    f"exit {result.returncode}\n--- stderr ---\n{result.stderr[-3000:]}\n"
                    f"--- stdout ---\n{result.stdout[-1500:]}")
            if ASSIGNMENT.match(command.split("#")[0].strip()) or re.match(r"^[A-Za-z_]\w*=\$\(", command):
                assignments.append(command)
            print(f"{block.page}:{block.line}: {time.monotonic() - t0:5.1f} s  {scaled(command)}")
            if problem:
                after = " (after an earlier failure)" if failures else ""
                failures.append(f"{block.page}:{block.line}: `{scaled(command)}` failed{after}: {problem}")
    print(f"{page_id(page)}: {len(commands)} commands in {time.monotonic() - started:.1f} s")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    assert commands


MARKED = [b for p in pages() for b in blocks_of(p) if b.skip]


@pytest.mark.parametrize("block", MARKED, ids=lambda b: f"{b.page}:{b.line}")
def test_blocks_marked_skip_are_reported(block):
    pytest.skip(f"{block.page}:{block.line} is marked skip: {block.skip}")


def test_the_parser_reads_console_and_bash_blocks(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "```console", "$ glassformer a \\", "      --b c   # note", "output line", "$ D=$(x)", "```",
        "<!-- docs-test: skip: needs an hour -->", "```bash", "long thing", "```",
        "```sh", "# a comment", "echo 'a # b' | cat  # end", "", "glassformer train lm --out r", "```",
        "```python", "print(1)", "```"]))
    monkeypatch.setattr("test_docs_commands.REPO", tmp_path)
    blocks = blocks_of(page)
    assert [b.commands for b in blocks] == [["glassformer a --b c", "D=$(x)"], ["long thing"],
                                            ["echo 'a # b' | cat", "glassformer train lm --out r"]]
    assert [b.skip for b in blocks] == [None, "needs an hour", None]
    assert scaled("glassformer train lm --out r").endswith("--set max_iters=2 --set eval_interval=2 --set eval_iters=1")
    assert scaled("glassformer explore --lang zh --port 8000") == "glassformer explore --lang zh --port 0 --no-browser"
    assert scaled("python bench/generate.py --batch 1") == "python bench/generate.py --help"


def test_every_page_with_commands_is_tested_and_skips_are_few():
    assert len(MARKED) <= 6, [f"{b.page}:{b.line}: {b.skip}" for b in MARKED]
    assert page_id(REPO / "README.md") in [page_id(p) for p in PAGES]
