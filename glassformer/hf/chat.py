"""Chat templates: a model's Jinja2 template, rendered in a sandbox with bounds.

A chat template comes with a downloaded model (tokenizer_config.json): it is code glassformer
did not write. Jinja2's sandbox keeps it away from Python's internals, but not from the
machine's memory and time, so the render is bounded here as well:
- no operation may make a string, list or number larger than MAX_CHAT_CHARS: repetition
  (`'a' * 4000000000`), `**`, `+`, `~`, `%` and str.format widths, and the string methods and
  filters that multiply (replace, join, indent, expandtabs, widths) are checked *before* they
  compute; and all the text a render makes adds up to at most MAX_TEMPLATE_WORK characters;
- the rendered text is at most MAX_CHAT_CHARS characters;
- at most MAX_TEMPLATE_STEPS lines of template code run (a Python trace function counts them),
  which ends any loop; recursion ends at Python's recursion limit.
Every error inside a template (raise_exception, an undefined name, a TypeError in its code, a
bound) becomes one ValueError line naming tokenizer_config.json.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from functools import wraps

MAX_CHAT_CHARS = 1 << 20  # the rendered text, and any one value a template makes
MAX_TEMPLATE_WORK = 64 << 20  # all the characters (list items) a render makes, added up
MAX_TEMPLATE_STEPS = 5_000_000  # lines of template code run; a long chat needs tens of thousands
MAX_JSON_INDENT = 64
TEMPLATE_SOURCE = "tokenizer_config.json"

_FORMAT_NUMBER = re.compile(r"\d+")


class TemplateLimit(Exception):
    """A bound of this module reached by a template."""


def _size(value) -> int:
    """What a value costs, in characters (or items; an integer: its bytes)."""
    if isinstance(value, (str, bytes, list, tuple, dict, set)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8
    return 0


def _format_size(fmt: str, args) -> int:
    """An upper bound on the length of `fmt` formatted with `args` (% or str.format): the numbers
    written in it (widths), the arguments' own sizes, and any integer argument that may be a width."""
    widths = sum(int(n) if len(n) < 20 else MAX_TEMPLATE_WORK for n in _FORMAT_NUMBER.findall(fmt))
    if isinstance(args, dict):
        values = list(args.values())
    elif isinstance(args, (list, tuple)):
        values = list(args)
    else:
        values = [args]
    nested = "*" in fmt or re.search(r"\{[^{}]*\{", fmt)  # '%*d', '{:{w}}': a width taken from the arguments
    taken = sum(abs(v) for v in values if isinstance(v, int)) if nested else 0
    return len(fmt) + widths + taken + sum(_size(v) + 32 for v in values)


def _binop_size(operator: str, left, right) -> int:
    """An upper bound on the size of `left operator right`, computed without computing it."""
    if operator == "*":
        seq, n = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            return len(seq) * max(n, 0)
        if isinstance(left, int) and isinstance(right, int):
            return (left.bit_length() + right.bit_length()) // 8
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        return left.bit_length() * right // 8
    if operator == "%" and isinstance(left, str):
        return _format_size(left, right)
    return _size(left) + _size(right)


WIDTH_TAKERS = frozenset({"center", "ljust", "rjust", "zfill", "do_center", "do_wordwrap", "do_truncate"})


def _call_size(function, args, kwargs) -> int:
    """An upper bound on the size of what a string method or filter returns, for the ones whose result
    can be much larger than their inputs; the inputs' sizes otherwise.

    Args:
        function: a filter, or a bound method of a string (its string counts as the first argument).
        args, kwargs: the call's arguments (a join's sequence already a list).
    """
    name = getattr(function, "__name__", "")
    owner = getattr(function, "__self__", None)
    if isinstance(owner, str):
        args = (owner, *args)
    text = args[0] if args and isinstance(args[0], str) else ""
    if name in ("replace", "do_replace") and len(args) >= 3:
        old, new = str(args[1]), str(args[2])
        return len(text) + (text.count(old) if old else len(text) + 1) * len(new)
    if name in ("join", "do_join"):
        seq, sep = (args[1], args[0]) if isinstance(owner, str) else (args[0], args[1] if len(args) > 1 else "")
        return len(seq) * len(str(sep)) + sum(_size(v) for v in seq) if hasattr(seq, "__len__") else 0
    if name in ("indent", "do_indent"):
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(text) + (text.count("\n") + 1) * pad
    if name == "expandtabs":
        tab = args[1] if len(args) > 1 else kwargs.get("tabsize", 8)
        return len(text) + text.count("\t") * (tab if isinstance(tab, int) else 0)
    if name in ("format", "do_format", "format_map"):
        return _format_size(text, [*args[1:], *kwargs.values()])
    values = [*args, *kwargs.values()]
    width = max((v for v in values if isinstance(v, int)), default=0) if name in WIDTH_TAKERS else 0
    return sum(_size(v) for v in values) + width


def _listed(function, args: tuple) -> tuple:
    """`args` with a join's sequence made a list, so that its size is known before it is joined
    (`messages | map(attribute="content") | join` is a generator)."""
    if getattr(function, "__name__", "") not in ("join", "do_join") or not args:
        return args
    index = 0 if isinstance(getattr(function, "__self__", None), str) or function.__name__ == "do_join" else None
    if index is None or hasattr(args[index], "__len__"):
        return args
    return (*args[:index], list(args[index]), *args[index + 1:])


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """Jinja's tojson as chat templates expect it: plain JSON, non-ASCII characters kept."""
    if isinstance(indent, int) and indent > MAX_JSON_INDENT:
        raise TemplateLimit(f"tojson indent {indent} is more than {MAX_JSON_INDENT}")
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _sandbox():
    """A fresh bounded sandbox environment (one per render: it counts the render's work)."""
    from jinja2.compiler import CodeGenerator
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node, frame):
            # `a ~ b` through the environment, which checks the size first (Jinja joins it directly)
            self.write("environment.concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%", "+"})  # and not computed ahead, at compile time
        code_generator_class = BoundedCodeGenerator

        def __init__(self, **options):
            super().__init__(**options)
            self.work = 0
            for name, function in list(self.filters.items()):
                self.filters[name] = self.bounded(function)
            self.filters["tojson"] = _tojson
            self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)

        def spend(self, size: int) -> None:
            if size > MAX_CHAT_CHARS:
                raise TemplateLimit(f"it would make a value of {size} characters, more than {MAX_CHAT_CHARS}")
            self.work += size
            if self.work > MAX_TEMPLATE_WORK:
                raise TemplateLimit(f"it makes more than {MAX_TEMPLATE_WORK} characters of text in all")

        def bounded(self, function):
            @wraps(function)  # keeps Jinja's mark of the filters that take the environment or context first
            def checked(*args, **kwargs):
                state = [a for a in args if _is_jinja_state(a)]
                values = _listed(function, tuple(a for a in args if not _is_jinja_state(a)))
                self.spend(_call_size(function, values, kwargs))
                return function(*state, *values, **kwargs)

            return checked

        def call_binop(self, context, operator, left, right):
            self.spend(_binop_size(operator, left, right))
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
            if isinstance(getattr(__obj, "__self__", None), (str, list, tuple, dict)):  # str.format: wrap_str_format
                args = _listed(__obj, args)
                __self.spend(_call_size(__obj, args, kwargs))
            return super().call(__context, __obj, *args, **kwargs)

        def wrap_str_format(self, value):
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            fmt = value.__self__

            @wraps(wrapped)
            def checked(*args, **kwargs):
                self.spend(_format_size(fmt, [*args, *kwargs.values()]))
                return wrapped(*args, **kwargs)

            return checked

        def concat(self, parts):
            texts = [str(p) for p in parts]
            self.spend(sum(len(t) for t in texts))
            return "".join(texts)

    return BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])


def _is_jinja_state(value) -> bool:
    """Whether a filter argument is Jinja's own (the environment, context or eval context it passes first)."""
    from jinja2 import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    return isinstance(value, (Environment, Context, EvalContext))


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "", source: str = TEMPLATE_SOURCE, **variables) -> str:
    """A conversation as the model was trained to read it, by the model's own Jinja2 chat template.

    Args:
        template: the template (tokenizer.chat_template).
        messages: [{"role": "system" | "user" | "assistant", "content": text}, ...].
        add_generation_prompt: end with the start of an assistant turn, for the model to write.
        bos_token, eos_token: the special tokens' text, which templates write themselves.
        source: the file the template came from, named in errors.
        **variables: more names the template reads (tools, enable_thinking, ...).

    Returns:
        The text to encode. Rendered in Jinja2's sandbox (a template cannot reach Python's
        internals) within this module's bounds, with the helpers templates use: raise_exception,
        strftime_now, tojson. Any error of the template becomes one ValueError line naming `source`.
    """
    steps = 0

    def count_steps(frame, event, arg):
        nonlocal steps
        steps += 1
        if steps > MAX_TEMPLATE_STEPS:
            raise TemplateLimit(f"it ran more than {MAX_TEMPLATE_STEPS} steps (a loop that does not end?)")
        return count_steps

    env = _sandbox()
    previous = sys.gettrace()
    sys.settrace(count_steps)
    try:
        pieces, length = [], 0
        for piece in env.from_string(template).generate(
                messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                eos_token=eos_token, **variables):
            length += len(piece)
            if length > MAX_CHAT_CHARS:
                raise TemplateLimit(f"it renders more than {MAX_CHAT_CHARS} characters")
            pieces.append(piece)
        return "".join(pieces)
    except RecursionError:
        raise ValueError(f"{source}: chat template: it recurses too deeply") from None
    except Exception as e:  # the template's own code failed: its input, not a defect of glassformer
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{source}: chat template: {first}") from None
    finally:
        sys.settrace(previous)
