"""Hostile model directories: every file glassformer reads from one is read safely.

A table of cases, each a model directory spoiled in one way (a FIFO or a device in place of a
file, JSON nested 200,000 deep, bytes that are not UTF-8, a chat template that would allocate
gigabytes or recurse forever, a path in an index or manifest that leads out of the directory, a
tokenizer swapped with another run's): the command exits 1 with one line on stderr, no traceback
and no "internal error", and every file inside the directory and beside it is byte-identical
afterwards. The cases that could hang run in a subprocess with a timeout. Then a property test
mutates config.json, manifest.json and model.safetensors.index.json at random: `load` either
loads or raises a one-line ValueError/OSError, and never reads outside the directory.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_gpt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import glassformer
from glassformer.base import reading
from glassformer.checkpoint import export_hf
from glassformer.cli import main
from glassformer.data.tokenizers import PretrainedTokenizer, train_tokenizer
from glassformer.hf import chat
from glassformer.hf.families import render_chat

TEXT = "the cat sat on the mat. a quick brown fox jumps over the lazy dog.\n" * 4
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SUBPROCESS_TIMEOUT_S = 120  # a hang shows as a timeout; a normal run takes a few seconds


# ---------------------------------------------------------------------------------------------
# Model directories, made here


def native_dir(path: Path, seed: int = 0, text: str = TEXT) -> Path:
    """A glassformer checkpoint (config.json, model.safetensors, tokenizer.json, manifest.json)."""
    tok = train_tokenizer("char", text)
    return glassformer.save(build_tiny_gpt(seed=seed, vocab_size=40), path, tokenizer=tok)


def hf_tokenizer() -> PretrainedTokenizer:
    """A small byte-level BPE tokenizer.json with chat markers, as a released model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([TEXT], trainer=trainer)
    return PretrainedTokenizer(hf, eos="<|im_end|>", pad="<|endoftext|>", chat_template=TEMPLATE)


def llama_dir(path: Path, sharded: bool = False) -> Path:
    """A Llama-layout directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
    generation_config.json), written by export_hf; `sharded`: the weights listed in an index file."""
    tok = hf_tokenizer()
    model = build_tiny_gpt(vocab_size=tok.vocab_size, norm="rmsnorm", position="rope", activation="swiglu",
                           bias=False)
    export_hf(model, path, tokenizer=tok)
    if sharded:
        from safetensors import safe_open

        (path / "model.safetensors").rename(path / "model-00001-of-00001.safetensors")
        with safe_open(str(path / "model-00001-of-00001.safetensors"), framework="pt") as f:
            weight_map = {name: "model-00001-of-00001.safetensors" for name in f.keys()}
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_template(template: str):
    def setup(d: Path) -> None:
        edit_json(d / "tokenizer_config.json", lambda c: c.update(chat_template=template))
    return setup


def replace_with_fifo(name: str):
    def setup(d: Path) -> None:
        (d / name).unlink()
        os.mkfifo(d / name)  # nobody ever writes: opening it for reading would block forever
    return setup


def replace_with_device(name: str):
    def setup(d: Path) -> None:
        (d / name).unlink()
        (d / name).symlink_to("/dev/zero")
    return setup


def shard_entry(value):
    """Points one tensor of the index at `value` (a function of the directory gives a path made from it)."""
    def setup(d: Path) -> None:
        def change(index):
            first = sorted(index["weight_map"])[0]
            index["weight_map"][first] = value(d) if callable(value) else value
        edit_json(d / "model.safetensors.index.json", change)
    return setup


def shard_symlink_out(d: Path) -> None:
    outside = d.parent / "outside.safetensors"
    shutil.copy(d / "model-00001-of-00001.safetensors", outside)  # a real shard, but outside the directory
    (d / "link.safetensors").symlink_to(outside)
    shard_entry("link.safetensors")(d)


def manifest_names_outside(d: Path) -> None:
    import hashlib

    victim = (d.parent / "victim.txt").read_bytes()
    edit_json(d / "manifest.json", lambda m: m["files"].update({"../victim.txt": hashlib.sha256(victim).hexdigest()}))


def swap_tokenizer(d: Path) -> None:
    other = native_dir(d.parent / "other", seed=1, text=TEXT.upper())  # another run, whose tokenizer fits the model
    shutil.copy(other / "tokenizer.json", d / "tokenizer.json")
    shutil.rmtree(other)


def write_bytes(name: str, data: bytes):
    def setup(d: Path) -> None:
        (d / name).write_bytes(data)
    return setup


SAMPLE = ["sample", "--prompt", "the", "--max-new-tokens", "2", "--device", "cpu"]
CHAT = ["sample", "--chat", "--prompt", "the", "--max-new-tokens", "2", "--device", "cpu"]
EXPLAIN = ["explain", "--text", "the cat"]
DEEP = b"[" * 200_000 + b"]" * 200_000

# (id, directory kind, spoiler, commands, words the error must hold, run in a subprocess)
CASES = [
    ("fifo config.json", "llama", replace_with_fifo("config.json"), [SAMPLE, CHAT, EXPLAIN], "is a FIFO", True),
    ("fifo config.json, manifest", "native", replace_with_fifo("config.json"), [SAMPLE], "is a FIFO", True),
    ("fifo tokenizer_config.json", "llama", replace_with_fifo("tokenizer_config.json"), [SAMPLE, CHAT, EXPLAIN],
     "is a FIFO", True),
    ("fifo tokenizer.json", "llama", replace_with_fifo("tokenizer.json"), [SAMPLE], "is a FIFO", True),
    ("device config.json", "llama", replace_with_device("config.json"), [SAMPLE], "is a character device", True),
    ("device model.safetensors", "llama", replace_with_device("model.safetensors"), [SAMPLE],
     "is a character device", True),
    ("200,000-deep config.json", "llama", write_bytes("config.json", DEEP), [SAMPLE], "nested more than 100", False),
    ("200,000-deep tokenizer_config.json", "llama", write_bytes("tokenizer_config.json", DEEP), [SAMPLE],
     "nested more than 100", False),
    ("invalid UTF-8 config.json", "llama", write_bytes("config.json", b'{"model_type": "llama\xff"}'), [SAMPLE],
     "invalid byte 0xff at offset 21", False),  # after {"model_type": "llama
    ("huge repeat template", "llama", set_template("{{ 'a' * 4000000000 }}"), [CHAT],
     "tokenizer_config.json: chat template: it would make a value of 4000000000 characters", False),
    ("recursive template", "llama", set_template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), [CHAT],
     "tokenizer_config.json: chat template: it recurses too deeply", False),
    ("raise_exception template", "llama", set_template("{{ raise_exception('no system role') }}"), [CHAT],
     "tokenizer_config.json: chat template: no system role", False),
    ("undefined in template", "llama", set_template("{{ messages[0].content.nothing.deeper }}"), [CHAT],
     "tokenizer_config.json: chat template:", False),
    ("weight_map ../", "sharded", shard_entry("../outside.safetensors"), [SAMPLE],
     "'../outside.safetensors', a path outside", False),
    ("weight_map absolute", "sharded", shard_entry(lambda d: str(d.parent / "victim.txt")), [SAMPLE],
     "a path outside", False),
    ("weight_map symlink out", "sharded", shard_symlink_out, [SAMPLE], "leads outside", False),
    ("manifest names ../victim.txt", "native", manifest_names_outside, [SAMPLE],
     "manifest.json: a file name under 'files' is '../victim.txt', a path outside", False),
    ("tokenizer.json of another run", "native", swap_tokenizer, [SAMPLE],
     "tokenizer.json differs from the SHA-256 in", False),
    ("invalid UTF-8 prompt, HF tokenizer", "llama", lambda d: None,
     [["sample", "--prompt", "ab\udcffc", "--max-new-tokens", "2", "--device", "cpu"]],
     "character 2 is a lone surrogate U+DCFF (the byte 0xff, which is not UTF-8)", False),
]


def snapshot(root: Path) -> dict:
    """Every entry under `root`: a regular file's bytes, a symlink's target, other kinds by name
    (never opened: a FIFO would block)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                out[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                out[path] = path.read_bytes()
            else:
                out[path] = ("kind", stat.S_IFMT(mode))
    return out


def run_glassformer(argv: list[str], subprocess_: bool, capsys) -> tuple[int, str]:
    """Exit status and stderr of `glassformer argv`, in a subprocess (with a timeout) or in this process."""
    if not subprocess_:
        code = main(argv)
        return code, capsys.readouterr().err
    result = subprocess.run([sys.executable, "-m", "glassformer", *argv], capture_output=True, text=True,
                            timeout=SUBPROCESS_TIMEOUT_S)
    return result.returncode, result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_directory_gives_one_line(case, tmp_path, capsys):
    _, kind, spoil, commands, words, in_subprocess = case
    (tmp_path / "victim.txt").write_text("a file beside the model, which must stay as it is\n")
    model = tmp_path / "model"
    if kind == "native":
        native_dir(model)
    else:
        llama_dir(model, sharded=kind == "sharded")
    spoil(model)
    before = snapshot(tmp_path)
    for command in commands:
        code, err = run_glassformer([command[0], "--model", str(model), *command[1:]], in_subprocess, capsys)
        assert code == 1, (command, err)
        assert err.count("\n") == 1 and err.startswith("glassformer: error: "), err
        assert "Traceback" not in err and "internal error" not in err, err
        assert words in err, err
    assert snapshot(tmp_path) == before


def test_the_unspoiled_directories_load(tmp_path, capsys):
    """The reference for the table: each directory kind, unspoiled, samples and chats (exit 0)."""
    for kind in ("native", "llama", "sharded"):
        model = tmp_path / kind
        native_dir(model) if kind == "native" else llama_dir(model, sharded=kind == "sharded")
        for command in (SAMPLE, CHAT) if kind != "native" else (SAMPLE,):
            assert main([command[0], "--model", str(model), *command[1:]]) == 0, capsys.readouterr().err


def test_a_checkpoint_whose_writer_was_killed_loads_with_a_warning(tmp_path):
    """A writer killed midway leaves its lock file (a live one removes it): its files load as they are,
    as a killed run always has; the same files without that trace are refused."""
    glassformer.save(build_tiny_gpt(seed=0), tmp_path)
    new = build_tiny_gpt(seed=1)
    glassformer.save(new, tmp_path / "new")
    shutil.copy(tmp_path / "new" / "model.safetensors", tmp_path / "model.safetensors")  # as far as it got
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout)
    with pytest.warns(UserWarning, match="model.safetensors differs .* was being written by a process that was "
                                         "stopped; loading its files as they are"):
        loaded, _ = glassformer.load(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), new.state_dict().values()))
    (tmp_path / ".lock").unlink()
    with pytest.raises(glassformer.checkpoint.CheckpointError,
                       match="model.safetensors differs .*changed after the checkpoint was saved; if you changed it "
                             "on purpose, remove"):
        glassformer.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# The helpers themselves, against independent references


def test_json_nesting_is_bounded_exactly_and_strings_do_not_count(tmp_path):
    ok = "[" * reading.MAX_JSON_DEPTH + "]" * reading.MAX_JSON_DEPTH
    assert reading.parse_json(ok, "f") == json.loads(ok)
    with pytest.raises(reading.DataError, match="f is not valid JSON for glassformer: nested more than 100"):
        reading.parse_json("[" + ok + "]", "f")
    brackets_in_strings = json.dumps({"a": "[" * 500 + "\\\"{" * 300, "b": [[1]]})
    assert reading.parse_json(brackets_in_strings, "f") == json.loads(brackets_in_strings)
    (tmp_path / "x.json").write_bytes(b'{"a": 1, "b": "\xc3"}')
    with pytest.raises(reading.DataError, match=r"x.json is not UTF-8 text \(invalid byte 0xc3 at offset 15\)"):
        reading.read_json(tmp_path / "x.json")


def test_a_size_bound_is_refused_with_its_variable(tmp_path, monkeypatch):
    text = json.dumps({"pad": "x" * 100})
    (tmp_path / "config.json").write_text(text)
    monkeypatch.setenv("GLASSFORMER_MAX_JSON_BYTES", str(len(text) - 1))
    with pytest.raises(reading.DataError, match=f"config.json is {len(text)} bytes, more than {len(text) - 1}, "
                                                f".*GLASSFORMER_MAX_JSON_BYTES"):
        reading.read_json(tmp_path / "config.json")
    monkeypatch.setenv("GLASSFORMER_MAX_JSON_BYTES", str(len(text)))
    assert reading.read_json(tmp_path / "config.json") == {"pad": "x" * 100}


def test_confined_paths_allow_only_the_directory_and_the_hub_cache(tmp_path):
    hub = tmp_path / "models--org--name"
    snap, blobs = hub / "snapshots" / "abc", hub / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    (blobs / "123").write_bytes(b"weights")
    (snap / "shard.safetensors").symlink_to("../../blobs/123")  # Hugging Face's cache layout
    (snap / "sub").mkdir()
    assert reading.confined(snap, "shard.safetensors", "index", "k") == snap / "shard.safetensors"
    assert reading.confined(snap, "sub/x", "index", "k") == snap / "sub" / "x"
    (tmp_path / "elsewhere").write_bytes(b"")
    (snap / "out.safetensors").symlink_to(tmp_path / "elsewhere")
    for name, words in (("../x", "a path outside"), ("/etc/passwd", "a path outside"), ("a/../../x", "a path outside"),
                        ("out.safetensors", "leads outside"), ("", "it must be a file name"),
                        (3, "it must be a file name")):
        with pytest.raises(reading.DataError, match=words):
            reading.confined(snap, name, "index", "k")


def test_a_template_loop_that_does_not_end_is_stopped(monkeypatch):
    monkeypatch.setattr(chat, "MAX_TEMPLATE_STEPS", 20_000)
    with pytest.raises(ValueError, match="tokenizer_config.json: chat template: it ran more than 20000 steps"):
        render_chat("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", [])


@pytest.mark.parametrize("template", [
    "{{ '%4000000000d' % 1 }}", "{{ '{:4000000000}'.format(1) }}", "{{ '{:{w}}'.format(1, w=4000000000) }}",
    "{{ 'a' | center(4000000000) }}", "{{ ('a' * 1000000) | replace('a', 'aaaa') }}",
    "{{ (range(100000) | list) | join('a' * 100000) }}", "{{ ('\t' * 100000).expandtabs(100000) }}",
    "{% set ns = namespace(s='a' * 1000000) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{{ ('x\n' * 500000) | indent(100) }}", "{{ [1] * 4000000000 }}", "{{ 2 ** 100000000 }}",
])
def test_every_amplifier_is_refused_before_it_allocates(template):
    with pytest.raises(ValueError, match="tokenizer_config.json: chat template: it would make a value of"):
        render_chat(template, [])


def test_ordinary_templates_render_as_jinja_renders_them():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat, é?"}]
    template = (TEMPLATE + "{{ messages | map(attribute='content') | join(' / ') }}{{ '%s=%d' % ('n', 10 ** 12) }}"
                "{{ '{}!'.format(7) }}{{ 'ab' | replace('a', 'c') }}{{ 'x\ny' | indent(2) }}{{ 'x' | center(7) }}"
                "{{ 'a' ~ 'b' ~ 3 }}{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                "{% endfor %}{{ ns.n }}")
    reference = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    assert render_chat(template, messages) == reference.render(messages=messages, add_generation_prompt=True,
                                                              bos_token="", eos_token="")


# ---------------------------------------------------------------------------------------------
# Property: random mutations of the files a load reads


HOSTILE_NAMES = ["../victim.txt", "a/../../victim.txt", "..", ".", "", "/etc/passwd", "x" * 300, "model.safetensors",
                 "\udcff", "nul\x00l", "link-out"]  # and the victim's absolute path, added per example
LEAF = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
              st.sampled_from(HOSTILE_NAMES)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


def _mutate(value, draw):
    """One random change somewhere inside a JSON value: a key removed or added, a value replaced by a
    random JSON value (hostile file names among them)."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        action = draw(st.sampled_from(["remove", "replace", "descend"]))
        if action == "remove":
            del value[key]
        elif action == "replace":
            value[key] = draw(LEAF)
        else:
            value[key] = _mutate(value[key], draw)
        return value
    if isinstance(value, dict) and draw(st.booleans()):
        value[draw(st.text(max_size=20) | st.sampled_from(HOSTILE_NAMES))] = draw(LEAF)
        return value
    return draw(LEAF)


def _point_outside(name: str, data: dict, path: str) -> None:
    """Makes the file name the load reads from `data` `path`: a manifest entry renamed, a shard of the index moved."""
    if name == "manifest.json" and isinstance(data.get("files"), dict) and data["files"]:
        files = data["files"]
        files[path] = files.pop(sorted(files)[0])
    elif name == "model.safetensors.index.json" and isinstance(data.get("weight_map"), dict) and data["weight_map"]:
        data["weight_map"][sorted(data["weight_map"])[0]] = path


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One native and one sharded Llama directory, made once; each example works on a copy."""
    root = tmp_path_factory.mktemp("originals")
    return {"native": native_dir(root / "native"), "sharded": llama_dir(root / "sharded", sharded=True)}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_load_or_give_one_line(data, originals, tmp_path_factory):
    kind = data.draw(st.sampled_from(["native", "sharded"]))
    target = {"native": ["config.json", "manifest.json"],
              "sharded": ["config.json", "model.safetensors.index.json"]}[kind]
    name = data.draw(st.sampled_from(target))
    root = tmp_path_factory.mktemp("example")
    (root / "victim.txt").write_text("outside\n")
    model = root / "model"
    shutil.copytree(originals[kind], model)
    (model / "link-out").symlink_to(root / "victim.txt")
    mutated = json.loads((model / name).read_text())
    if data.draw(st.booleans(), label="a file name that leads out"):
        _point_outside(name, mutated, data.draw(st.sampled_from([*HOSTILE_NAMES, str(root / "victim.txt")])))
    if data.draw(st.booleans(), label="a random change"):
        mutated = _mutate(mutated, data.draw)
    text = json.dumps(mutated, ensure_ascii=data.draw(st.booleans()))
    try:
        (model / name).write_text(text, encoding="utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        (model / name).write_text(text, encoding="utf-8", errors="replace")
    before = snapshot(root)
    OPENED.clear()
    WATCHING.append(True)
    try:
        loaded, _ = glassformer.load(model)
        assert isinstance(loaded, torch.nn.Module)
    except (ValueError, OSError) as e:
        assert str(e) and "\n" not in str(e).strip(), str(e)
    finally:
        WATCHING.clear()
    assert snapshot(root) == before
    outside = [p for p in OPENED if p.is_relative_to(root.resolve()) and not p.is_relative_to(model.resolve())]
    assert not outside, outside


OPENED: list[Path] = []  # every file Python opened while WATCHING (the "open" audit event)
WATCHING: list[bool] = []


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and WATCHING and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(Path(os.fsdecode(args[0])).resolve())


sys.addaudithook(_record_open)  # audit hooks cannot be removed; it records only while a test watches
