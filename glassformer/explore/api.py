"""What the explorer's endpoints compute, without any web framework (server.py turns it into HTTP).

Each request is a JSON object, checked field by field (`ApiError` carries the HTTP status and a
one-line reason). Edits and head ablations change the model's weights in memory for one call
only: `Explorer.edited` keeps a copy of the entries it changes and puts them back in `finally`,
so the checkpoint on disk is never touched and the next request sees the original model. The
numbers come from the library's own functions (the walkthrough, the logit lens, generation);
nothing here computes the model's math.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass

import torch

from glassformer.explain.cell import cell as cell_parts
from glassformer.explain.flow import flow_data
from glassformer.explain.generation import gpt_generation, seq2seq_generation, stages
from glassformer.explain.labels import token_label, token_labels
from glassformer.explain.narration import check_lang
from glassformer.explain.render.analysis_view import attribution_data, corrupted, lens_data, patching_data, target_id
from glassformer.explain.render.html import render_html
from glassformer.explain.walkthrough import CORPUS, Subject, step_data, walkthrough_data
from glassformer.generation.sampling import check_sampling, within_vocabulary
from glassformer.model.layers import MultiHeadAttention
from glassformer.model.seq2seq import Seq2Seq
from glassformer.observe import analysis

TEXT_CHARS = 512  # longest text a request may send
MAX_BEAM = 8
MAX_EDITS = 64  # edits plus ablated heads in one request
MAX_EDIT_VALUE = 1e4  # |value| of an edited weight
MAX_TEMPERATURE = 100.0
RUN_MAX_VALUES = 4096  # /api/run: steps with more values come as corner + statistics ...
MAX_VALUES_CAP = 16384  # ... and a request may ask for at most this many
# All the values /api/run sends, at most: writing a number as JSON costs about a microsecond
# (json_values' shortest float32 text, then json.dumps), so 250,000 keep a keystroke's answer
# near a third of a second. Over it, max_values is halved until the steps sent whole fit.
RUN_VALUES = 250_000
MAX_WHOLE = 4096  # step ids a /api/run may name in `whole` (GPT-2 small's walkthrough has about 2,500 steps)
STEP_VALUES_CAP = 1_000_000  # /api/step sends every value of a step up to this many
NEXT_SHOWN = 20  # the most likely next tokens /api/run and /api/sample list
GPT_EXAMPLE = "ROMEO:"

COMMON = ("text", "edits", "ablate")  # the fields every computing endpoint reads
SAMPLING = ("temperature", "top_k", "top_p")


class ApiError(Exception):
    """A request the explorer cannot answer: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def echo(text: str, most: int = 60) -> str:
    """The user's string quoted in an error message: one line, cut to `most` characters."""
    text = one_line(text)
    return repr(text if len(text) <= most else text[:most] + "…")


# ---------------------------------------------------------------------------------------------
# Reading request fields


def check_fields(body: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(422, f"unknown field {echo(unknown[0])}; this endpoint reads: {', '.join(allowed)}")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_finite(value) -> float | None:
    """A number as a finite float; None for NaN, infinities and ints too large for a float."""
    try:
        value = float(value)
    except OverflowError:  # an int past 1.8e308
        return None
    return value if math.isfinite(value) else None


def integer(body: dict, name: str, default: int | None, low: int, high: int, nullable: bool = False) -> int | None:
    """body[name] as an int in [low, high] (default when absent; None allowed where nullable)."""
    value = body.get(name, default)
    if value is None and (nullable or default is None):
        return None
    if not is_int(value):
        raise ApiError(422, f"{name} must be an integer; got {type(value).__name__}")
    if not low <= value <= high:
        raise ApiError(422, f"{name} must be between {low} and {high}; got {value}")
    return value


def number(body: dict, name: str, default: float | None, low: float, high: float) -> float | None:
    """body[name] as a finite float in [low, high] (default when absent; None where default is None)."""
    value = body.get(name, default)
    if value is None and default is None:
        return None
    if not is_number(value):
        raise ApiError(422, f"{name} must be a number; got {type(value).__name__}")
    finite = as_finite(value)
    if finite is None:  # an int past a float's range (the server refuses those earlier, a caller may not)
        raise ApiError(422, f"{name} must be between {low:g} and {high:g}; got a number too large for a float")
    if not low <= finite <= high:
        raise ApiError(422, f"{name} must be between {low:g} and {high:g}; got {finite:g}")
    return finite


def boolean(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(422, f"{name} must be true or false; got {type(value).__name__}")
    return value


def objects(body: dict, name: str) -> list[dict]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ApiError(422, f"{name} must be a list of objects")
    return value


def step_ids(body: dict) -> set[str] | None:
    """body["whole"]: the ids of the steps to send with every value (None where absent or null)."""
    value = body.get("whole")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise ApiError(422, "whole must be a list of step ids (strings)")
    if len(value) > MAX_WHOLE:
        raise ApiError(413, f"whole lists {len(value)} steps; at most {MAX_WHOLE}")
    return set(value)


@dataclass(frozen=True)
class Edit:
    """Set one entry of a parameter: name (its state-dict key), index (one int per axis), value."""

    name: str
    index: tuple[int, ...]
    value: float


@dataclass(frozen=True)
class Ablation:
    """Remove head `head` of the attention module at `module` (its W_O columns set to zero)."""

    module: str
    head: int


@dataclass(frozen=True)
class Inputs:
    text: str
    ids: list[int]  # the text's tokens (a Seq2Seq model: the source's, before its <end>)
    edits: list[Edit]
    ablations: list[Ablation]

    def key(self) -> tuple:
        """What decides the model's answer: the tokens, the edits and the ablations."""
        return tuple(self.ids), tuple(self.edits), tuple(self.ablations)


def within_budget(walkthrough, max_values: int, budget: int = RUN_VALUES, whole: set[str] | None = None) -> int:
    """max_values, halved until the steps it sends whole hold at most `budget` values in all (the
    walkthrough data's own max_values field then says which was used; the rest come as corners,
    their values from /api/step). whole: only these steps may be sent whole (None: any)."""
    sizes = [s.values.size for s in walkthrough.steps if s.values is not None and (whole is None or s.id in whole)]
    while max_values > 64 and sum(n for n in sizes if n <= max_values) > budget:
        max_values //= 2
    return max_values


# ---------------------------------------------------------------------------------------------
# The explorer


class Explorer:
    """One model served to the page; `call(endpoint, body)` answers one request at a time."""

    def __init__(self, subject: Subject, name: str, lang: str = "en"):
        check_lang(lang)
        self.subject, self.model, self.name, self.lang = subject, subject.model.eval(), name, lang
        self.seq2seq = isinstance(self.model, Seq2Seq)
        self.tok = subject.src_tok  # what the text is read with
        self.params = dict(self.model.named_parameters(remove_duplicate=False))  # tied weights under each name
        self.attention = {name: m for name, m in self.model.named_modules() if isinstance(m, MultiHeadAttention)}
        self.labels = token_labels(subject.tgt_tok, range(subject.tgt_tok.vocab_size))
        # The ids a next token may be: a model's vocabulary may be padded beyond its tokenizer's
        # (Qwen2.5, GPT-2 exports), and the padded ids are no token, so no view lists or picks them.
        c = self.model.config
        self.vocab_limit = min(len(self.labels), c.tgt_vocab_size if self.seq2seq else c.vocab_size)
        self.run_values = RUN_VALUES  # /api/run's budget of values
        self.lock = threading.Lock()  # one model: requests take turns
        self.weight_stats: dict = {}  # step id -> (parameter name, statistics): weights change only by edits
        self.last_logits: tuple | None = None  # (Inputs.key(), the last position's logits)
        self.last_walkthrough: tuple | None = None  # ((text, Inputs.key()), its walkthrough): see walkthrough()
        self.endpoints = {"run": self.run, "step": self.step, "sample": self.sample, "next": self.next,
                          "beam": self.beam, "export": self.export, "cell": self.cell, "flow": self.flow,
                          "attribute": self.attribute, "patch": self.patch}

    # -- what the page asks first ------------------------------------------------------------

    def limits(self) -> dict:
        c = self.model.config
        return {"text_chars": TEXT_CHARS, "text_tokens": c.block_size - 1 if self.seq2seq else c.block_size,
                "new_tokens": c.block_size - 1 if self.seq2seq else 1, "beam": MAX_BEAM, "edits": MAX_EDITS,
                "edit_value": MAX_EDIT_VALUE, "max_values": MAX_VALUES_CAP, "run_values": self.run_values,
                "step_values": STEP_VALUES_CAP}

    def info(self) -> dict:
        return {"kind": "seq2seq" if self.seq2seq else "gpt", "name": self.name,
                "config": dataclasses.asdict(self.model.config), "lang": self.lang, "example": self.example(),
                "limits": self.limits(),
                "params": [{"name": name, "shape": list(p.shape)} for name, p in self.model.named_parameters()]}

    def example(self) -> str:
        """A text to start from: the subject's own, the articles' first line, "ROMEO:" for a GPT that can read it, else
        the first 20 characters of the vocabulary."""
        first = self.subject.example or (CORPUS[0] if self.subject.corpus
                                         else GPT_EXAMPLE if not self.seq2seq else None)
        if first is not None and self.reads_cleanly(first):
            return first
        specials = {self.tok.pad_id, self.tok.unk_id, self.tok.bos_id, self.tok.eos_id}
        words = [self.tok.token(i) for i in range(self.tok.vocab_size) if i not in specials]
        text = ("" if all(len(w) == 1 for w in words) else " ").join(words)[:20]
        return text if text.strip() and self.reads_cleanly(text) else self.tok.token(0)

    def reads_cleanly(self, text: str) -> bool:
        try:
            ids = self.tok.encode(text)
        except ValueError:  # a character tokenizer without <unk>
            return False
        return bool(ids) and self.tok.unk_id not in ids

    # -- reading a request ---------------------------------------------------------------------

    def call(self, endpoint: str, body: dict) -> dict:
        """The answer to POST /api/<endpoint> with `body`; ApiError for what cannot be answered."""
        if endpoint not in self.endpoints:
            raise ApiError(404, f"no endpoint /api/{endpoint}")
        start = time.perf_counter()
        try:
            with self.lock:
                data = self.endpoints[endpoint](body)
        except ValueError as e:  # the library refused the input (its messages are one line)
            raise ApiError(422, one_line(e)) from None
        data["ms"] = round((time.perf_counter() - start) * 1000, 1)
        return data

    def inputs(self, body: dict) -> Inputs:
        text = body.get("text")
        if not isinstance(text, str):
            raise ApiError(422, "text must be a string" if "text" in body else "text is missing")
        if len(text) > TEXT_CHARS:
            raise ApiError(413, f"the text has {len(text)} characters; the explorer reads at most {TEXT_CHARS}")
        surrogate = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
        if surrogate is not None:  # half of a UTF-16 pair, which JSON may escape: no character, no UTF-8
            raise ApiError(422, f"the text is not Unicode: a lone surrogate {text[surrogate]!r} "
                                f"at character {surrogate}")
        ids = self.tok.encode(text)  # ValueError (a character it has no id for) -> 422
        most = self.limits()["text_tokens"]
        if not ids:
            raise ApiError(422, "the text encodes to no tokens")
        if len(ids) > most:
            raise ApiError(413, f"the text is {len(ids)} tokens; this model reads at most {most}")
        edit_items, ablate_items = objects(body, "edits"), objects(body, "ablate")
        if len(edit_items) + len(ablate_items) > MAX_EDITS:  # counted before each is read
            raise ApiError(413, f"{len(edit_items) + len(ablate_items)} edits and ablations; "
                                f"at most {MAX_EDITS} a request")
        return Inputs(text, ids, self.edits(edit_items), self.ablations(ablate_items))

    def edits(self, items: list[dict]) -> list[Edit]:
        out = []
        for item in items:
            check_fields(item, ("name", "index", "value"))
            name, index, value = item.get("name"), item.get("index"), item.get("value")
            if not isinstance(name, str):  # checked first: a list or object cannot even be looked up
                raise ApiError(422, "edits: name must be a parameter's name (a string)")
            if name not in self.params:
                raise ApiError(422, f"edits: no parameter named {echo(name)}")
            shape = tuple(self.params[name].shape)
            if not isinstance(index, list) or not all(is_int(i) for i in index) or len(index) != len(shape):
                raise ApiError(422, f"edits: the index of {name} must be {len(shape)} integers (shape {list(shape)})")
            if not all(0 <= i < n for i, n in zip(index, shape)):
                raise ApiError(422, f"edits: index {index} is outside {name} (shape {list(shape)})")
            if not is_number(value) or as_finite(value) is None or abs(value) > MAX_EDIT_VALUE:
                raise ApiError(422, f"edits: value must be a finite number with |value| <= {MAX_EDIT_VALUE:g}")
            out.append(Edit(name, tuple(index), float(value)))
        return out

    def ablations(self, items: list[dict]) -> list[Ablation]:
        out = []
        for item in items:
            check_fields(item, ("module", "head"))
            module, head = item.get("module"), item.get("head")
            if not isinstance(module, str) or module not in self.attention:
                raise ApiError(422, f"ablate: module must be an attention module, one of {', '.join(self.attention)}")
            n_head = self.attention[module].n_head
            if not is_int(head) or not 0 <= head < n_head:
                raise ApiError(422, f"ablate: head must be an integer from 0 to {n_head - 1} for {module}")
            out.append(Ablation(module, head))
        return out

    @contextlib.contextmanager
    def edited(self, inputs: Inputs):
        """The model with the request's edits and ablations, for the duration; the entries changed are
        copied first and put back in `finally`, last change first (so overlapping ones restore too)."""
        saved: list[tuple[torch.Tensor, tuple, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for e in inputs.edits:
                    p = self.params[e.name]
                    saved.append((p, e.index, p[e.index].clone()))
                    p[e.index] = e.value
                for a in inputs.ablations:
                    # Zeroing a head's W_O columns removes exactly its output (tests/test_analysis.py).
                    attn = self.attention[a.module]
                    w = attn.o_proj.weight  # (C, h*d)
                    d = w.size(1) // attn.n_head
                    cols = (slice(None), slice(a.head * d, (a.head + 1) * d))
                    saved.append((w, cols, w[cols].clone()))
                    w[cols] = 0.0
            yield self.model
        finally:
            with torch.no_grad():
                for p, index, value in reversed(saved):
                    p[index] = value

    def gpt_only(self, what: str) -> None:
        if self.seq2seq:
            raise ApiError(422, f"{what} applies to a GPT; this is a translation (Seq2Seq) model")

    def sampling(self, body: dict) -> dict:
        settings = {"temperature": number(body, "temperature", 1.0, 0.0, MAX_TEMPERATURE),
                    "top_k": integer(body, "top_k", None, 1, self.tok.vocab_size, nullable=True),
                    "top_p": number(body, "top_p", None, 0.0, 1.0)}
        check_sampling(**settings)  # top_p 0 -> ValueError -> 422
        return settings

    # -- the endpoints -------------------------------------------------------------------------

    def tokens(self, ids: list[int]) -> list[dict]:
        return [{"id": i, "token": token_label(self.tok, i), "unknown": i == self.tok.unk_id} for i in ids]

    def run(self, body: dict) -> dict:
        """The walkthrough of the edited model on the text; a GPT's likeliest next tokens and, unless
        `lens` is false, its logit lens.

        Which steps come with every value: those listed in `whole` (the page names what it draws;
        ids this walkthrough lacks are ignored), each up to max_values, or without `whole` every
        step up to max_values; fewer where all of them would exceed RUN_VALUES. The rest come as
        corners (a step of at most CORNER² values is its own corner, so it comes whole)."""
        check_fields(body, COMMON + ("max_values", "whole", "lens"))
        inputs = self.inputs(body)
        max_values = integer(body, "max_values", RUN_MAX_VALUES, 1, MAX_VALUES_CAP)
        whole = step_ids(body)
        want_lens = boolean(body, "lens", True)
        out: dict = {"tokens": self.tokens(inputs.ids), "lens": None, "next": None}
        with self.edited(inputs):
            # Inside the `with`: the walkthrough's weight steps are views of the edited weights.
            walkthrough = self.walkthrough(inputs)
            out["walkthrough"] = walkthrough_data(walkthrough, within_budget(walkthrough, max_values, self.run_values,
                                                                             whole), whole, self.memo(inputs))
            if not self.seq2seq:
                # The last position's logits, as the walkthrough computed them (the lens's last entry).
                logits = torch.tensor(walkthrough.step("next.logits").values[-1])
                self.remember(inputs, logits)
                logits = logits[: self.vocab_limit]
                order = logits.argsort(descending=True, stable=True)[:NEXT_SHOWN]
                out["next"] = [{"id": int(i), "token": self.labels[i], "logit": float(logits[i])} for i in order]
                if want_lens:  # the full vocabulary at every layer and position: GPT-2's costs seconds
                    lens = analysis.logit_lens(self.model, inputs.ids)  # (n_layer + 1, T, V)
                    out["lens"] = lens_data(within_vocabulary(lens, self.vocab_limit), self.tok)
        return out

    def memo(self, inputs: Inputs) -> dict:
        """The weight steps' statistics kept between requests: shared while nothing is edited; with
        edits, a copy without the edited parameters (what it adds is forgotten after the request)."""
        if not inputs.edits and not inputs.ablations:
            return self.weight_stats
        changed = {e.name for e in inputs.edits} | {f"{a.module}.o_proj.weight" for a in inputs.ablations}
        changed |= {name for name, p in self.params.items()  # a tied weight is edited under its other name too
                    if any(p is self.params[c] for c in changed)}
        return {k: v for k, v in self.weight_stats.items() if v[0] not in changed}

    def walkthrough(self, inputs: Inputs):
        """The walkthrough of the text on the edited model: call it inside `self.edited(inputs)`.

        The last one is kept, keyed by text, edits and ablations (one entry, so memory stays
        bounded; any other request replaces it): a click on a cell (/api/cell) or a step
        (/api/step) after /api/run on GPT-2 small would otherwise run the whole walkthrough again,
        seconds each time. Its weight steps are views of the parameters, which `edited` puts back
        after the request; reused inside `edited` with the same edits they hold the edited values again."""
        key = (inputs.text, inputs.key())
        if self.last_walkthrough is not None and self.last_walkthrough[0] == key:
            return self.last_walkthrough[1]
        self.last_walkthrough = None  # the old one is freed before the new one is built
        walkthrough = self.subject.walkthrough(inputs.text)
        self.last_walkthrough = (key, walkthrough)
        return walkthrough

    def remember(self, inputs: Inputs, logits: torch.Tensor) -> None:
        """Keeps the last position's logits of this text and these edits: the sampling controls ask
        /api/sample again at every move of a slider, with the same text."""
        self.last_logits = (inputs.key(), logits)

    def logits(self, inputs: Inputs) -> torch.Tensor:
        """The edited model's logits at the last position (remembered from the last request on the same input)."""
        key = inputs.key()
        if self.last_logits is not None and self.last_logits[0] == key:
            return self.last_logits[1]
        with self.edited(inputs), analysis.inference(self.model):
            logits = analysis.forward(self.model, torch.tensor([inputs.ids]))[0, -1]
        self.remember(inputs, logits)
        return logits

    def step(self, body: dict) -> dict:
        """One step of the walkthrough with every value."""
        check_fields(body, COMMON + ("id",))
        inputs = self.inputs(body)
        wanted = body.get("id")
        if not isinstance(wanted, str):
            raise ApiError(422, "id must be a step id (a string)")
        with self.edited(inputs):
            walkthrough = self.walkthrough(inputs)
            found = [s for s in walkthrough.steps if s.id == wanted]
            if not found:
                raise ApiError(422, f"no step {echo(wanted)} in this walkthrough")
            step = found[0]
            if step.values is not None and step.values.size > STEP_VALUES_CAP:
                raise ApiError(413, f"step {step.id} has {step.values.size} values; at most {STEP_VALUES_CAP} are sent")
            return step_data(step, self.seq2seq, 0)

    def cell(self, body: dict) -> dict:
        """The numbers one cell of a step came from (the dot-product lens; glassformer.explain.cell)."""
        check_fields(body, COMMON + ("id", "index"))
        inputs = self.inputs(body)
        wanted, index = body.get("id"), body.get("index")
        if not isinstance(wanted, str):
            raise ApiError(422, "id must be a step id (a string)")
        if not isinstance(index, list) or len(index) > 4 or not all(is_int(i) for i in index):
            raise ApiError(422, "index must be a list of integers, one per axis of the step")
        with self.edited(inputs):
            walkthrough = self.walkthrough(inputs)
            if not any(s.id == wanted for s in walkthrough.steps):
                raise ApiError(422, f"no step {echo(wanted)} in this walkthrough")
            return cell_parts(walkthrough, wanted, index)  # a bad index: ValueError -> 422

    def sample(self, body: dict) -> dict:
        """How the next token would be chosen with these settings (nothing drawn): next_token's stages."""
        check_fields(body, COMMON + SAMPLING)
        self.gpt_only("/api/sample")
        inputs, settings = self.inputs(body), self.sampling(body)
        return stages(self.logits(inputs), settings["temperature"], settings["top_k"], settings["top_p"], self.labels,
                      show=NEXT_SHOWN, vocab_limit=self.vocab_limit)[0]

    def next(self, body: dict) -> dict:
        """A GPT: one generation step, the text with the new token; a Seq2Seq model: the greedy translation."""
        check_fields(body, COMMON + SAMPLING + ("seed", "greedy"))
        inputs = self.inputs(body)
        if self.seq2seq:
            with self.edited(inputs):
                return seq2seq_generation(self.model, self.tok, self.subject.tgt_tok, inputs.text).to_dict()
        settings = self.sampling(body)
        seed = integer(body, "seed", 0, 0, 2**63 - 1)
        if boolean(body, "greedy", False):
            settings["temperature"] = 0.0
        with self.edited(inputs):
            generation = gpt_generation(self.model, self.tok, inputs.text, 1, seed=seed, **settings)
        return {**generation.steps[0], "text": inputs.text + generation.output_text}

    def beam(self, body: dict) -> dict:
        """A Seq2Seq model: beam search's tree of hypotheses."""
        check_fields(body, COMMON + ("beam",))
        if not self.seq2seq:
            raise ApiError(422, "/api/beam applies to a translation (Seq2Seq) model; a GPT samples (/api/next)")
        inputs = self.inputs(body)
        beam = integer(body, "beam", 3, 1, MAX_BEAM)
        with self.edited(inputs):
            return seq2seq_generation(self.model, self.tok, self.subject.tgt_tok, inputs.text, beam).to_dict()

    def export(self, body: dict) -> dict:
        """The self-contained HTML page of the current view (edits included)."""
        check_fields(body, COMMON + ("lang",))
        inputs = self.inputs(body)
        lang = body.get("lang", self.lang)
        if not isinstance(lang, str):
            raise ApiError(422, "lang must be a string: en or zh")
        check_lang(lang)  # ValueError -> 422
        with self.edited(inputs):
            return {"html": render_html(self.walkthrough(inputs), lang)}

    # -- the flow and the analyses (glassformer.explain.flow, glassformer.observe.analysis) ------

    def flow(self, body: dict) -> dict:
        """A GPT: one position's path through the model (the last by default), its probabilities at the
        end through the sampling settings; output_only: the probabilities alone."""
        check_fields(body, COMMON + SAMPLING + ("position", "output_only"))
        self.gpt_only("/api/flow")
        inputs, settings = self.inputs(body), self.sampling(body)
        last = len(inputs.ids) - 1
        position = integer(body, "position", last, 0, last, nullable=True)
        output_only = boolean(body, "output_only", False)
        with self.edited(inputs):
            data = flow_data(self.model, inputs.ids, last if position is None else position, self.labels,
                             self.vocab_limit, output_only=output_only, **settings)
        return {**data, "tokens": self.tokens(inputs.ids)}

    def target(self, body: dict, ids: list[int]) -> int:
        """body's target: a token id, a text of one token, or (absent or null) the model's likeliest next token."""
        value = body.get("target")
        if value is None:
            with analysis.inference(self.model):
                logits = analysis.forward(self.model, torch.tensor([ids]))[0, -1]
            return int(within_vocabulary(logits, self.vocab_limit).argmax())
        if isinstance(value, str):
            if len(value) > TEXT_CHARS:
                raise ApiError(413, f"target has {len(value)} characters; at most {TEXT_CHARS}")
            return target_id(self.tok, value)  # ValueError (not one token) -> 422
        if not is_int(value) or not 0 <= value < self.vocab_limit:
            raise ApiError(422, f"target must be a token id from 0 to {self.vocab_limit - 1} or a text of one token")
        return value

    def attribute(self, body: dict) -> dict:
        """A GPT: each head's and feed-forward's direct contribution to the target's logit at the last position."""
        check_fields(body, COMMON + ("target",))
        self.gpt_only("/api/attribute")
        inputs = self.inputs(body)
        with self.edited(inputs):
            target = self.target(body, inputs.ids)
            result = analysis.attribute(self.model, inputs.ids, target)  # ValueError (post-LN) -> 422
        return {**attribution_data(result, self.tok), "tokens": self.tokens(inputs.ids)}

    def patch(self, body: dict) -> dict:
        """A GPT: activation patching of the corrupt text (default: the text with one token changed) with
        the clean text's (body's text) activations, site by site."""
        check_fields(body, COMMON + ("corrupt", "target", "metric"))
        self.gpt_only("/api/patch")
        inputs = self.inputs(body)
        corrupt = body.get("corrupt")
        if corrupt is None:
            corrupt = corrupted(self.tok, inputs.ids)
            if corrupt is None:
                raise ApiError(422, "no corrupt text was given and no one-token change of the text reads back "
                                    "as the same number of tokens; type a corrupt text")
        if not isinstance(corrupt, str):
            raise ApiError(422, "corrupt must be a string")
        try:
            corrupt_ids = self.inputs({"text": corrupt}).ids  # the same checks as the text's
        except ApiError as e:
            raise ApiError(e.status, f"the corrupt text: {e}") from None
        except ValueError as e:
            raise ApiError(422, f"the corrupt text: {one_line(e)}") from None
        metric = body.get("metric", "logit_diff")
        if metric not in analysis.METRICS:
            raise ApiError(422, f"metric must be one of {', '.join(analysis.METRICS)}; got {echo(str(metric))}")
        with self.edited(inputs):
            target = self.target(body, inputs.ids)  # default: the likeliest next token of the vocabulary
            # ValueError (lengths differ, nothing to restore) -> 422 with the library's own line
            result = analysis.patch(self.model, inputs.ids, corrupt_ids, target, metric=metric)
        return {**patching_data(result, self.tok), "corrupt_text": corrupt, "tokens": self.tokens(inputs.ids),
                "corrupt_tokens": self.tokens(corrupt_ids)}
