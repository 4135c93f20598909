"""Generation, token by token: what the model attends to and how each next token is chosen.

For a GPT, each step records the KV cache growing, the newest query's attention row over
every key for each layer and head, and the choice: the logits, divided by the temperature,
cut by top-k and then top-p, renormalised, and the token drawn. The tokens are exactly
those `glassformer.generation.sampling.generate` returns for the same settings and seed: the steps run
through the same decoder and the same `next_token`; the stages shown are computed with the
same filters it applies.

For a Seq2Seq model, greedy decoding records each target token's cross-attention row over
the source (the alignment, per layer and head), and beam search the tree of hypotheses:
every step's best candidates with their scores, the length-normalised score of those that
end, and which were kept, finished or pruned.

Everything here is plain data (lists, floats, strings), ready for JSON and the renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glassformer.data.batches import source_ids
from glassformer.explain.labels import token_labels
from glassformer.generation.decode import banned_ids, beam_search, greedy, next_log_probs
from glassformer.generation.sampling import (
    LanguageModelDecoder,
    check_sampling,
    crop_prompt,
    decode_steps,
    filter_top_k,
    filter_top_p,
    next_token,
    within_vocabulary,
)
from glassformer.observe.trace import Trace

SHOW = 8  # candidates listed per step


@dataclass
class Generation:
    """What `--generate` and `--beam` show, as data."""

    kind: str  # "sample" (a GPT), "greedy" or "beam" (a Seq2Seq model)
    text: str  # the text generation starts from (a Seq2Seq model: the source sentence)
    prompt: list[str]  # its tokens
    settings: dict
    steps: list[dict] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # the generated tokens
    output_text: str = ""  # and their text

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "prompt": self.prompt, "settings": self.settings,
                "steps": self.steps, "output": self.output, "output_text": self.output_text}


def floats(t: torch.Tensor, digits: int = 6) -> list:
    """A tensor as nested lists of rounded floats (−∞, which a cut logit becomes, as None)."""
    return [None if v == float("-inf") else round(v, digits) for v in t.tolist()] if t.dim() == 1 else \
        [floats(row, digits) for row in t]


def stages(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, labels: list[str],
           show: int = SHOW, vocab_limit: int | None = None) -> tuple[dict, torch.Tensor]:
    """logits (V,) -> (each stage of the choice `next_token` makes: the probabilities of the `show`
    most likely tokens after the temperature, after top-k and after top-p, and how many tokens
    each stage keeps; the final probabilities (V,)). Computed with next_token's own filters.
    vocab_limit: as next_token's; the ids from it up are not candidates and the probabilities,
    from the softmax on, are over the ids below it (V = vocab_limit)."""
    logits = within_vocabulary(logits, vocab_limit).float()
    greedy_pick = temperature == 0 or top_k == 1
    scaled = logits if greedy_pick else logits / temperature
    cut_k = filter_top_k(scaled[None], top_k)[0] if top_k is not None and not greedy_pick else scaled
    cut_p = filter_top_p(cut_k[None], top_p)[0] if top_p is not None and not greedy_pick else cut_k
    probs = {"softmax": logits.softmax(-1), "temperature": scaled.softmax(-1), "top_k": cut_k.softmax(-1),
             "top_p": cut_p.softmax(-1)}
    if greedy_pick:  # argmax: all the probability on the first of the largest logits
        probs["top_p"] = torch.zeros_like(logits).scatter_(0, logits.argmax()[None], 1.0)
    order = logits.argsort(descending=True, stable=True)[:show]
    data = {
        "greedy": greedy_pick,
        "kept": {"vocab": logits.numel(), "top_k": int(cut_k.isfinite().sum()), "top_p": int(cut_p.isfinite().sum())},
        "candidates": [{"id": int(i), "token": labels[i] if i < len(labels) else str(int(i)),
                        "logit": round(float(logits[i]), 6),
                        **{name: round(float(p[i]), 6) for name, p in probs.items()}} for i in order],
    }
    return data, probs["top_p"]


def attention_rows(trace: Trace, n_layer: int, prefix: str, kind: str = "self_attn") -> list:
    """The newest query's attention probabilities, per layer and head: (layer, head, keys)."""
    return [floats(trace[f"{prefix}.{i}.{kind}.core.probs"][0, :, -1], 4) for i in range(n_layer)]


def gpt_generation(model, tok, text: str, n: int, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, seed: int = 0) -> Generation:
    """`n` tokens after `text`, each step recorded (see the module docstring)."""
    check_sampling(temperature, top_k, top_p)
    if n < 1:
        raise ValueError(f"the number of tokens to generate must be at least 1; got {n}")
    c = model.config
    ids = tok.encode(text)
    if not ids:
        raise ValueError("the text encodes to no tokens")
    prompt = crop_prompt(torch.tensor([ids]), c.block_size)
    labels = token_labels(tok, range(tok.vocab_size))
    vocab_limit = min(tok.vocab_size, c.vocab_size)  # a padded vocabulary's extra ids are no token
    generator = torch.Generator().manual_seed(seed)
    result = Generation("sample", text, token_labels(tok, prompt[0].tolist()),
                        {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed, "n": n})
    record: dict = {}

    def choose(logits: torch.Tensor) -> torch.Tensor:  # (1, V) -> (1,): next_token, its stages kept
        record["stages"], record["probs"] = stages(logits[0], temperature, top_k, top_p, labels,
                                                   vocab_limit=vocab_limit)
        return next_token(logits, temperature, top_k, top_p, generator, vocab_limit)

    with torch.no_grad(), Trace(model) as trace:
        decoder = LanguageModelDecoder(model, prompt)
        sequence = prompt[0].tolist()
        for token in decode_steps(decoder, n, choose):
            picked = int(token)
            cache = decoder.cache  # None once the text outgrows the block: the window is recomputed
            result.steps.append({
                "context": token_labels(tok, sequence[-c.block_size:]),  # the keys the newest query sees
                "cache": None if cache is None else {"layers": c.n_layer, "k_shape": [1, c.kv_heads, cache.length,
                                                                                      c.head_dim]},
                "attention": attention_rows(trace, c.n_layer, "blocks"),
                **record["stages"],
                "picked": {"id": picked, "token": labels[picked], "p": round(float(record["probs"][picked]), 6)},
            })
            trace.records.clear()  # only this step's records are needed: memory stays flat
            sequence.append(picked)
            result.output.append(labels[picked])
    result.output_text = tok.decode(sequence[prompt.size(1):])
    return result


def seq2seq_generation(model, src_tok, tgt_tok, text: str, beam: int = 1) -> Generation:
    """Greedy decoding (beam 1) with each target token's cross-attention over the source, or the
    beam search tree (beam > 1)."""
    c = model.config
    src_ids = source_ids(src_tok.encode(text), c.block_size, c.eos_id)
    src = torch.tensor([src_ids])
    labels = token_labels(tgt_tok, range(tgt_tok.vocab_size))
    vocab_limit = min(tgt_tok.vocab_size, c.tgt_vocab_size)  # a padded vocabulary's extra ids are no token
    source = token_labels(src_tok, src_ids)
    if beam > 1:
        result = Generation("beam", text, source, {"beam": beam})

        def record(step: int, candidates: list[list[dict]]) -> None:
            for cand in candidates[0]:  # one sentence
                cand["tokens"] = [labels[i] for i in cand.pop("ids")]
            result.steps.append({"step": step, "candidates": candidates[0]})

        with torch.no_grad():
            best = beam_search(model, src, beam=beam, record=record, vocab_limit=vocab_limit)[0]
        result.output, result.output_text = [labels[i] for i in best], tgt_tok.decode(best)
        return result
    result = Generation("greedy", text, source, {"beam": 1})
    with torch.no_grad(), Trace(model) as trace:
        decoded = greedy(model, src, vocab_limit=vocab_limit)[0]
    banned = banned_ids(c)
    calls = trace.all("lm_head")
    for s, next_id in enumerate(decoded + [c.eos_id]):
        if s >= len(calls):
            break  # stopped at its length limit without <eos>
        probs = next_log_probs(calls[s][0, -1:], banned, vocab_limit)[0].exp()  # (V,): what greedy chose from
        order = probs.argsort(descending=True, stable=True)[:SHOW]
        result.steps.append({
            "target": token_labels(tgt_tok, [c.bos_id] + decoded[:s]),
            "cross_attention": [floats(trace.all(f"decoder.{i}.cross_attn.core.probs")[s][0, :, -1], 4)
                                for i in range(c.n_decoder_layers)],
            "candidates": [{"id": int(i), "token": labels[i], "p": round(float(probs[i]), 6)} for i in order],
            "picked": {"id": next_id, "token": labels[next_id], "p": round(float(probs[next_id]), 6)},
        })
    result.output, result.output_text = [labels[i] for i in decoded], tgt_tok.decode(decoded)
    return result
