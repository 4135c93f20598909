"""Builds the walkthrough: the articles' tiny example, or any trained model on the user's text.

The built-in example follows the articles: a three-sentence dialogue, a vocabulary made
from its words, the `walkthrough` preset (d_model 6, Q/K/V width 4, one encoder and one
decoder layer). The model is first trained for a moment on the dialogue (seeded, so it is
the same every time), so that its greedy decode really answers the first line with the second.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import torch

from glassformer.data.batches import collate, lm_loss, load_translation_tokenizers, source_ids
from glassformer.data.tokenizers import WordTokenizer
from glassformer.explain.labels import token_label, token_labels
from glassformer.explain.steps import (
    Step,
    Steps,
    block_steps,
    causal_mask_step,
    embedding_steps,
    norm_steps,
    output_steps,
    rec,
)
from glassformer.generation.decode import greedy
from glassformer.model.config import PRESETS
from glassformer.model.gpt import GPT
from glassformer.model.seq2seq import Seq2Seq
from glassformer.observe.trace import Trace

# Three lines of a dialogue; each line answers the one before. The first two are the articles'.
CORPUS = [
    "when you play the game of thrones",
    "you win or you die",
    "so learn the rules before you play",
]


MAX_VALUES = 16384  # a step with more numbers is written as its top-left corner plus statistics


@dataclass(repr=False)
class Walkthrough:
    """What the renderers draw: the steps in order, and what the model read and produced."""

    steps: list[Step]
    source: str  # the text the model read
    output: str  # what it produced (translation or next token)
    model_kind: str  # "seq2seq" | "gpt"
    config: dict
    generation: object | None = None  # a glassformer.explain.generation.Generation, when asked for
    analysis: dict | None = None  # lens, attribution, ablation, patching as data (explain_why), when asked for

    def __repr__(self) -> str:
        return f"Walkthrough({self.model_kind}, {len(self.steps)} steps: {self.source!r} → {self.output!r})"

    def step(self, id: str) -> Step:
        for step in self.steps:
            if step.id == id:
                return step
        raise KeyError(f"no step {id!r} in this walkthrough")


def train_walkthrough_model(heads: int = 1, seed: int = 0, steps: int = 150) -> tuple[Seq2Seq, WordTokenizer]:
    """The `walkthrough` preset, trained on the dialogue until it answers each line with the next."""
    tok = WordTokenizer.train("\n".join(CORPUS))
    cfg = dataclasses.replace(PRESETS["walkthrough"].model, src_vocab_size=tok.vocab_size,
                              tgt_vocab_size=tok.vocab_size, shared_vocab=True, n_head=heads,
                              pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)
    torch.manual_seed(seed)
    model = Seq2Seq(cfg)
    pairs = [(source_ids(tok.encode(a), cfg.block_size, tok.eos_id), tok.encode(b)) for a, b in zip(CORPUS, CORPUS[1:])]
    src, src_mask, tgt_in, tgt_out = collate(pairs, range(len(pairs)), tok.pad_id, tok.bos_id, tok.eos_id)
    # Gradient descent with momentum, written out: the articles' update rule, and it spares
    # loading torch.optim (whose first use imports the compiler stack, slower than this training).
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    model.train()
    for _ in range(steps):
        loss = lm_loss(model(src, tgt_in, src_mask), tgt_out, ignore_index=tok.pad_id)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, velocity):
                v.mul_(0.9).add_(g)  # v <- 0.9 v + dL/dp
                p.sub_(0.1 * v)  # p <- p - lr v
    return model.eval(), tok


def stack_steps(s: Steps, prefix: str, stack: str, n_layers: int, x: str, mask: str | None, positions,
                final_norm: str | None, memory: str | None = None, memory_labels=None) -> str:
    """The layers of one stack (GPT's blocks, the encoder or the decoder) and its final norm."""
    for i in range(n_layers):
        s.where.update(layer=i)
        x = block_steps(s, f"{prefix}{i}", f"{stack}.{i}", x, mask, positions, memory, memory_labels)
    if final_norm is not None and getattr(s.model, final_norm) is not None:
        s.where.update(layer=None, sublayer="final", head=None)
        x = norm_steps(s, f"{prefix}final.norm", final_norm, x, rec(s.trace, f"{final_norm}.in"))
    return x


def seq2seq_walkthrough(model: Seq2Seq, src_tok, tgt_tok, text: str, corpus: list[str] | None = None) -> Walkthrough:
    """Every step of translating `text`: the encoder pass, then the decoder pass over its own greedy output."""
    src_ids = source_ids(src_tok.encode(text), model.config.block_size, model.config.eos_id)
    src = torch.tensor([src_ids])
    decoded = greedy(model, src)[0]
    tgt_ids = [model.config.bos_id] + decoded
    with torch.no_grad(), Trace(model) as trace:
        model(src, torch.tensor([tgt_ids]))
    src_labels, tgt_labels = token_labels(src_tok, src_ids), token_labels(tgt_tok, tgt_ids)
    vocab = token_labels(tgt_tok, range(tgt_tok.vocab_size))
    c = model.config
    rope = c.position == "rope"
    s = Steps(trace)
    s.where.update(section="input", rows=None)
    if corpus is not None:
        s.add("corpus", "table", "corpus", None, table=[[line] for line in corpus], header=["text"])
        s.add("vocab", "table", "vocab", None, table=[[w, str(i)] for i, w in enumerate(vocab)], header=["word", "id"])
    s.where.update(section="encoder", rows=src_labels)
    src_vocab = token_labels(src_tok, range(src_tok.vocab_size))
    x = embedding_steps(s, "enc.", src_ids, "src_emb", 0, src_vocab)
    memory = stack_steps(s, "enc.", "encoder", c.n_encoder_layers, x, None, list(range(len(src_ids))) if rope else None,
                         "encoder_norm")
    s.where.update(section="decoder", rows=tgt_labels, layer=None)
    x = embedding_steps(s, "dec.", tgt_ids, "src_emb" if c.shared_vocab else "tgt_emb", 1 if c.shared_vocab else 0,
                        vocab, position_call=1)
    mask = causal_mask_step(s, "dec.mask", len(tgt_ids))
    x = stack_steps(s, "dec.", "decoder", c.n_decoder_layers, x, mask, list(range(len(tgt_ids))) if rope else None,
                    "decoder_norm", memory, src_labels)
    s.where.update(section="output", layer=None, sublayer="head", head=None)
    head = "dec.embed.table" if c.tie_output else s.weight("head.weight", "weight_head", "lm_head.weight")
    output_steps(s, x, head, vocab, c.tie_output)
    probs = torch.softmax(trace["lm_head"][0].double(), dim=-1)  # (T, V): position t predicts token t + 1
    rows = []
    for t, next_id in enumerate(decoded + [c.eos_id]):
        word = token_label(tgt_tok, next_id)
        rows.append([str(t + 1), " ".join(tgt_labels[: t + 1]), word, f"{probs[t, next_id]:.3f}"])
    s.add("decode", "table", "decode", None, rows=None, cols=None, table=rows,
          header=["step", "decoder input", "next", "p"])
    output = tgt_tok.decode(decoded)
    return Walkthrough(s.list, text, output, "seq2seq", dataclasses.asdict(c))


def gpt_walkthrough(model: GPT, tok, text: str) -> Walkthrough:
    """Every step of reading `text` and predicting the token that comes next."""
    ids = tok.encode(text)[-model.config.block_size:]
    if not ids:
        raise ValueError("the text encodes to no tokens")
    c = model.config
    segments = [0] * len(ids) if c.n_segments else None  # one segment: the whole text
    with torch.no_grad(), Trace(model) as trace:
        model(torch.tensor([ids]), segment_ids=torch.tensor([segments]) if segments else None)
    labels = token_labels(tok, ids)
    vocab = token_labels(tok, range(tok.vocab_size))
    s = Steps(trace)
    s.where.update(section="input", rows=labels)
    x = embedding_steps(s, "", ids, "tok_emb", 0, vocab, segments=segments)
    s.where.update(section="decoder")
    mask = causal_mask_step(s, "dec.mask", len(ids))
    x = stack_steps(s, "dec.", "blocks", c.n_layer, x, mask, list(range(len(ids))) if c.position == "rope" else None,
                    "final_norm")
    s.where.update(section="output", layer=None, sublayer="head", head=None)
    head = "embed.table" if c.tie_weights else s.weight("head.weight", "weight_head", "lm_head.weight")
    output_steps(s, x, head, vocab, c.tie_weights)
    predicted = s.list[-1].cols[0]
    return Walkthrough(s.list, text, predicted, "gpt", dataclasses.asdict(c))


@dataclass
class Subject:
    """A model to explain, with the tokenizers it reads and writes with (the same for a GPT)."""

    model: GPT | Seq2Seq
    src_tok: object
    tgt_tok: object
    corpus: list[str] | None = None  # the articles' example shows the text it learnt from
    example: str | None = None  # a text to start from (the explorer's first), where the model has one

    def walkthrough(self, text: str) -> Walkthrough:
        if isinstance(self.model, Seq2Seq):
            return seq2seq_walkthrough(self.model, self.src_tok, self.tgt_tok, text, corpus=self.corpus)
        return gpt_walkthrough(self.model, self.src_tok, text)

    def generation(self, text: str, n: int = 20, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, seed: int = 0, beam: int = 1):
        """Generation token by token (a GPT: `n` sampled tokens; a Seq2Seq model: greedy to <end>,
        or beam search's tree with beam > 1). See glassformer.explain.generation."""
        from glassformer.explain.generation import gpt_generation, seq2seq_generation

        if isinstance(self.model, Seq2Seq):
            return seq2seq_generation(self.model, self.src_tok, self.tgt_tok, text, beam)
        if beam > 1:
            raise ValueError("--beam applies to a translation (Seq2Seq) model; a GPT samples (--generate)")
        return gpt_generation(self.model, self.src_tok, text, n, temperature, top_k, top_p, seed)


def builtin_subject(heads: int = 1) -> Subject:
    """The articles' example, trained for a moment so that it answers the first line with the second."""
    model, tok = train_walkthrough_model(heads)
    return Subject(model, tok, tok, CORPUS)


def load_subject(model_dir, dtype: str = "float32") -> Subject:
    """A trained GPT or Seq2Seq checkpoint (or a Hugging Face directory), with its tokenizers.

    In float32 unless asked otherwise: the walkthrough's numbers recompute to 1e-4 of each
    step's scale, which bfloat16's 3 significant digits would not."""
    from glassformer.checkpoint import load

    model, tok = load(model_dir, dtype=dtype)
    if tok is None:
        raise ValueError(f"{model_dir} has no tokenizer; it cannot read text")
    if isinstance(model, Seq2Seq):
        return Subject(model, *load_translation_tokenizers(model_dir))
    return Subject(model, tok, tok)


def builtin_walkthrough(heads: int = 1) -> Walkthrough:
    """The articles' example on its first line."""
    return builtin_subject(heads).walkthrough(CORPUS[0])


def model_walkthrough(model_dir, text: str) -> Walkthrough:
    """The walkthrough of a trained GPT or Seq2Seq checkpoint on the user's text."""
    return load_subject(model_dir).walkthrough(text)


# ---------------------------------------------------------------------------------------------
# The walkthrough as JSON data (`glassformer explain --json`; the schema is in the README)

SCHEMA = "glassformer.walkthrough/1"
CORNER = 8  # a truncated step shows its top-left CORNER × CORNER values (a vector: the first CORNER²)


def json_values(a: np.ndarray):
    """Values as JSON-ready nested lists: integers and booleans as they are, floats by their shortest
    float32 text; −∞ as null (a masked score), NaN and +∞ as the strings "NaN" and "Infinity"."""
    return json_values_many([a])[0]


def json_values_many(arrays: list[np.ndarray]) -> list:
    """json_values of each array, the floats of all of them written in one pass (a walkthrough of
    GPT-2 small has 2,500 steps: one pass over their corners costs less than 2,500 small ones)."""
    out: list = [None] * len(arrays)
    floats = []
    for i, a in enumerate(arrays):
        if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
            out[i] = a.tolist()
        else:
            floats.append(i)
    if not floats:
        return out
    parts = [np.asarray(arrays[i], dtype=np.float32) for i in floats]
    flat = np.concatenate([p.ravel() for p in parts])
    finite = np.isfinite(flat)
    values = shortest(np.where(finite, flat, np.float32(0)))
    start = 0
    for i, part in zip(floats, parts):
        stop = start + part.size
        v, ok = values[start:stop].reshape(part.shape), finite[start:stop].reshape(part.shape)
        if ok.all():
            out[i] = v.tolist()
        else:
            v = v.astype(object)
            v[~ok] = [None if x == -np.inf else "Infinity" if x == np.inf else "NaN" for x in part[~ok]]
            out[i] = v.tolist()
        start = stop
    return out


SHORT_BY_NUMPY = 256


def shortest(a: np.ndarray) -> np.ndarray:
    """Finite float32 values as float64 values whose shortest text (what json writes) is the shortest
    decimal that reads back as the float32 (no float64 noise digits such as 0.10000000149011612).

    For each value, the fewest significant digits p (1 to 9: 9 always suffice for a float32) whose
    correctly rounded p-digit decimal reads back as it: whole arrays at a time, so a few hundred
    nanoseconds a value where numpy's printing of each (a.astype(str)) takes a microsecond or two.
    The decimal is N / 10^k (or N · 10^-k) with N and the power exact in float64, so the float64
    division is the float64 nearest the decimal, which Python writes as that decimal. Values whose
    power of ten is not exact in float64 (beyond 1e±13) are printed by numpy one by one, as are arrays
    of at most SHORT_BY_NUMPY values (the passes over the array would cost more than numpy's printing)."""
    if a.size <= SHORT_BY_NUMPY:
        return a.astype(str).astype(np.float64)
    shape, a = a.shape, a.ravel()
    x = a.astype(np.float64)
    out = x.copy()  # zeros stay 0.0
    nonzero = x != 0
    magnitude = np.abs(x, where=nonzero, out=np.ones_like(x))
    exponent = np.floor(np.log10(magnitude)).astype(np.int64)  # x = d.ddd × 10^exponent
    easy = nonzero & (np.abs(exponent) <= 13)
    todo = easy.copy()
    for p in range(1, 10):
        if not todo.any():
            break
        k = p - 1 - exponent[todo]  # decimals to keep: 10^k is exact in float64 for 0 <= k <= 22
        xs = x[todo]
        up = np.where(k >= 0, 10.0 ** np.abs(k), 1.0)
        down = np.where(k < 0, 10.0 ** np.abs(k), 1.0)
        decimal = np.round(xs * up / down) * down / up  # exactly one of up, down is not 1
        back = decimal.astype(np.float32) == a[todo]
        index = np.flatnonzero(todo)[back]
        out[index] = decimal[back]
        todo[index] = False
    rest = nonzero & ~easy | todo
    if rest.any():
        out[rest] = a[rest].astype(str).astype(np.float64)
    return out.reshape(shape)


def statistics(a: np.ndarray) -> dict:
    """Mean, standard deviation, min and max over the finite values, and how many are −∞.

    Sums accumulate in float64 without a float64 copy of the values (a weight matrix of
    millions of numbers is summarised at every request of the explorer)."""
    finite = np.isfinite(a)
    values = a if finite.all() else a[finite]
    stats = {"count": int(a.size), "neg_inf": int(np.isneginf(a).sum())}
    if values.size:
        stats.update(mean=float(values.mean(dtype=np.float64)), std=float(values.std(dtype=np.float64)),
                     min=float(values.min()), max=float(values.max()))
    return stats


def corner(a: np.ndarray) -> np.ndarray:
    """The top-left corner of the last two axes (a vector's first values)."""
    if a.ndim == 1:
        return a[: CORNER * CORNER]
    return a[..., :CORNER, :CORNER]


def step_data(step: Step, seq2seq: bool, max_values: int, memo: dict | None = None,
              later: list | None = None) -> dict:
    """One step as JSON-ready data: every value where it has at most `max_values` (0: any number),
    else its corner; a float step's statistics (a weight's from `memo` where it holds them: see
    walkthrough_data). later: where given, (data, key, array) is appended to it for each array,
    for the caller to write (json_values_many), rather than the values written here."""
    from glassformer.explain.narration import LANGS, narrate

    texts = {lang: narrate(step, lang, seq2seq) for lang in LANGS}
    data = {
        "id": step.id, "op": step.op, "inputs": step.inputs, "params": step.params,
        "title": {lang: t[0] for lang, t in texts.items()},
        "explanation": {lang: t[1] for lang, t in texts.items()},
        "formula": texts["en"][2],
        "section": step.section, "layer": step.layer, "head": step.head, "sublayer": step.sublayer,
        "display": step.display,
    }
    if step.values is not None:
        a = step.values
        data["shape"] = list(a.shape)
        data["dtype"] = "bool" if a.dtype == np.bool_ else "int" if np.issubdtype(a.dtype, np.integer) else "float"
        if data["dtype"] == "float":
            data["stats"] = weight_statistics(step, memo) if memo is not None else statistics(a)
        truncated = bool(max_values and a.size > max_values)
        key, shown = ("corner", corner(a)) if truncated else ("values", a)
        if truncated:
            data["truncated"] = True
        if later is None:
            data[key] = json_values(shown)
        else:
            later.append((data, key, shown))
    if step.rows is not None:
        data["rows"] = step.rows
    if step.cols is not None:
        data["cols"] = step.cols
    if step.table is not None:
        data["table"] = step.table
        data["header"] = step.header
    return data


def weight_statistics(step: Step, memo: dict) -> dict:
    """statistics(step.values), from `memo` for a weight step seen before (a weight's statistics
    depend on the weight alone; GPT-2's take a second to compute, at every request otherwise)."""
    if step.op != "weight" or not step.params or "name" not in step.params:
        return statistics(step.values)
    key = (step.id, json.dumps(step.params, sort_keys=True), step.values.shape)
    if key not in memo:
        memo[key] = (step.params["name"], statistics(step.values))
    return dict(memo[key][1])


def walkthrough_data(walkthrough: Walkthrough, max_values: int = MAX_VALUES, whole=None,
                     memo: dict | None = None) -> dict:
    """The walkthrough as JSON-ready data: every step with its op, inputs, params, narration and values.

    Args:
        max_values: a step with more values than this is written as its top-left corner plus
            statistics ("truncated": true); 0 writes every value.
        whole: the ids of the steps written whole (up to max_values); the others as corners,
            except steps of at most CORNER² values (their own corner). None: every step.
        memo: weight steps' statistics kept by a caller between calls, by step id (the explorer's,
            while the weights are unedited); None computes them.
    """
    seq2seq = walkthrough.model_kind == "seq2seq"
    small = CORNER * CORNER

    def most(step: Step) -> int:
        if whole is None or step.id in whole:
            return max_values
        return small if step.values is not None and step.values.size > small else max_values

    later: list = []
    steps = [step_data(step, seq2seq, most(step), memo, later) for step in walkthrough.steps]
    for (data, key, _), values in zip(later, json_values_many([a for _, _, a in later])):
        data[key] = values
    return {
        "schema": SCHEMA, "model_kind": walkthrough.model_kind, "config": walkthrough.config,
        "source": walkthrough.source, "output": walkthrough.output, "max_values": max_values,
        "infinity": "null stands for −∞ (a masked score); \"NaN\" and \"Infinity\" for those values",
        "steps": steps,
        "generation": walkthrough.generation.to_dict() if walkthrough.generation is not None else None,
        "analysis": walkthrough.analysis,
    }


def write_json(walkthrough: Walkthrough, path, max_values: int = MAX_VALUES) -> None:
    """Writes `walkthrough_data` to `path` atomically (strict JSON: no NaN or Infinity literals)."""
    from glassformer.base.files import atomic_write_text

    text = json.dumps(walkthrough_data(walkthrough, max_values), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":"))
    atomic_write_text(path, text + "\n")
