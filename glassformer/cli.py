"""The `glassformer` command: parse arguments, call library functions, print.

Every error a user can cause ends as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sys
import threading
import warnings

from glassformer.base.choices import DEFAULT_PRESET, WEIGHTS
from glassformer.base.display import plain


class Parser(argparse.ArgumentParser):
    """argparse with glassformer's one-line errors (argparse's own print the usage first)."""

    def error(self, message: str):
        self.exit(2, f"glassformer: error: {plain(message)} (see {self.prog} --help)\n")


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit status 2."""


def format_metrics(metrics: dict) -> str:
    """One JSON line of metrics, floats rounded to 6 decimals."""
    return json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}, ensure_ascii=False)


def cmd_export(args) -> int:
    from glassformer.base.files import check_output_dir
    from glassformer.checkpoint import export_hf, load

    if args.format != "hf":
        raise UsageError(f"unknown export format {args.format!r}; supported: hf")
    check_output_dir(args.out, "--out", own="checkpoint")  # an earlier export may be replaced, a run never
    model, tok = load(args.model)
    out = export_hf(model, args.out, overwrite=args.overwrite, source=args.model, tokenizer=tok)
    kind = json.loads((out / "config.json").read_text()).get("model_type", "hf")
    print(f"wrote a transformers {kind} directory to {plain(str(out))}")
    return 0


def check_usage(args) -> None:
    """Raises UsageError for a --device name that is not a device or a --beam below 1 (before any file is read)."""
    from glassformer.base.device import check_device_name

    if getattr(args, "device", None) is not None:
        try:
            check_device_name(args.device)
        except ValueError as e:
            raise UsageError(f"--{e}") from None
    if getattr(args, "beam", 1) < 1:
        raise UsageError(f"--beam must be at least 1; got {args.beam}")


def cmd_train_lm(args) -> int:
    from glassformer.training.lm import train_lm

    if args.init_from and args.resume:
        raise UsageError("--init-from starts a run from a checkpoint; --resume continues one: choose one")
    return train_run(functools.partial(train_lm, data=args.data, val_fraction=args.val_fraction,
                                       init_from=args.init_from), args, "sample")


def train_run(train, args, next_command: str) -> int:
    """Runs `train` (lm.train_lm or translation.train_translation, its own inputs bound) with the
    options both share; a --set that cannot be applied is bad usage. Prints the final metrics
    and the command to try next."""
    from glassformer.model.config import OverrideError

    try:
        metrics = train(args.out, preset=args.preset, overrides=args.set, vocab_size=args.vocab_size,
                        tokenizer=args.tokenizer, resume=args.resume, overwrite=args.overwrite)
    except OverrideError as e:
        raise UsageError(str(e)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, process 0 speaks for the run
        print(format_metrics({"iter": "final", **metrics}))
    print(plain(f"model saved in {args.out}; try: glassformer {next_command} --model {args.out}"), file=sys.stderr)
    return 0


def cmd_sample(args) -> int:
    check_usage(args)
    from glassformer.generation.sampling import check_sampling
    from glassformer.training.lm import sample

    try:
        check_sampling(args.temperature, args.top_k, args.top_p)  # before the model is loaded
    except ValueError as e:
        raise UsageError(f"--{e}") from None

    def write(text):  # generated text is the model's: control characters are shown, not sent
        sys.stdout.write(plain(text))
        sys.stdout.flush()

    def notice(text):
        print(f"glassformer: {plain(text)}", file=sys.stderr)

    sample(args.model, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed,
           args.num_samples, args.stop, args.device, write, notice, chat=args.chat, system=args.system,
           dtype=args.dtype, weights=args.weights)
    print()
    return 0


def cmd_eval_lm(args) -> int:
    check_usage(args)
    from glassformer.training.lm import eval_lm

    print(format_metrics(eval_lm(args.model, args.data, val_fraction=args.val_fraction, device=args.device,
                                 dtype=args.dtype)))
    return 0


def cmd_train_translation(args) -> int:
    from glassformer.training.translation import train_translation

    texts = dict(train_src=args.train_src, train_tgt=args.train_tgt, valid_src=args.valid_src, valid_tgt=args.valid_tgt)
    return train_run(functools.partial(train_translation, **texts), args, "translate")


def cmd_translate(args) -> int:
    check_usage(args)
    from glassformer.training.translation import load_translator, notice, read_lines, read_stdin_lines, translate

    model, src_tok, tgt_tok = load_translator(args.model, args.device)
    if args.input:
        lines = read_lines(args.input)
    else:
        lines = read_stdin_lines()
    for line in translate(model, src_tok, tgt_tok, lines, beam=args.beam, notice=notice):
        print(plain(line))
    return 0


def cmd_eval_translation(args) -> int:
    check_usage(args)
    from glassformer.training.translation import eval_translation

    print(format_metrics(eval_translation(args.model, args.src, args.ref, beam=args.beam, device=args.device)))
    return 0


def cmd_explain(args) -> int:
    from glassformer.explain.narration import check_lang

    check_lang(args.lang)
    if args.chapter == "basics":
        from glassformer.explain.basics.network import print_basics

        print_basics(args.lang)
        return 0
    if args.chapter == "shapes":
        from glassformer.explain.shapes import print_shapes
        from glassformer.model.config import PRESETS

        if args.preset not in PRESETS:
            raise UsageError(f"--preset: unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        print_shapes(args.preset, args.lang)
        return 0
    if args.chapter is not None:
        raise UsageError(f"unknown chapter {args.chapter!r}; the chapters are basics and shapes")
    from glassformer.explain.walkthrough import CORPUS, builtin_subject, load_subject
    from glassformer.model.gpt import GPT

    if args.max_values < 0:
        raise UsageError(f"--max-values must be 0 (every value) or more; got {args.max_values}")
    generating = args.generate is not None or args.beam > 1
    if args.generate is not None and args.generate < 1:
        raise UsageError(f"--generate must be at least 1; got {args.generate}")
    if args.beam < 1:
        raise UsageError(f"--beam must be at least 1; got {args.beam}")
    sampling_set = any(v is not None for v in (args.temperature, args.top_k, args.top_p, args.seed))
    if not generating and sampling_set:
        raise UsageError("--temperature, --top-k, --top-p and --seed choose how --generate samples; add --generate N")
    if args.target is not None and args.ablate is None and args.patch is None:
        raise UsageError("--target applies to --ablate and --patch")
    if args.png is not None and args.patch is None:
        raise UsageError("--png applies to --patch (its heatmap)")
    from glassformer.base.files import check_output

    outputs = {}  # checked before the model is loaded: no output may replace a run's file (symlinks resolved)
    for option, path in (("--json", args.json), ("--html", args.html), ("--png", args.png)):
        if path is not None:
            outputs[option] = check_output(path, option)
    if generating:
        from glassformer.generation.sampling import check_sampling

        try:
            check_sampling(args.temperature or 0.0, args.top_k, args.top_p)
        except ValueError as e:  # "top_p must be ..." -> "--top-p must be ..."
            name, _, rest = str(e).partition(" ")
            raise UsageError(f"--{name.replace('_', '-')} {rest}") from None
    if args.model:
        if not args.text:
            raise UsageError("--model needs --text: the text to run through the model")
        subject, text = load_subject(args.model, args.dtype), args.text
    elif args.text:
        raise UsageError("--text needs --model; without a model the built-in example explains itself")
    else:
        if not 1 <= args.heads <= 8:
            raise UsageError(f"--heads must be between 1 and 8; got {args.heads}")
        subject, text = builtin_subject(heads=args.heads), CORPUS[0]
    asking_why = any(v is not None for v in (args.attribute, args.ablate, args.patch)) or args.lens
    if asking_why and not isinstance(subject.model, GPT):
        raise UsageError("--lens, --attribute, --ablate and --patch apply to a GPT; a translation model "
                         "shows its attention with --generate (cross-attention) and --beam")
    if sampling_set and not isinstance(subject.model, GPT):
        raise UsageError("--temperature, --top-k, --top-p and --seed apply to a GPT; a translation model "
                         "decodes greedily (--generate) or with --beam")
    why = generation = None
    if asking_why:
        from glassformer.explain.render.analysis_view import explain_why

        try:
            why = explain_why(subject.model, subject.src_tok, text, lens=args.lens, attribute=args.attribute,
                              ablate=args.ablate, ablate_mode=args.ablate_mode, target=args.target,
                              patch=args.patch, png=outputs.get("--png"), lang=args.lang,
                              quiet=bool(args.json or args.html))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if generating:
        sampling = dict(temperature=1.0 if args.temperature is None else args.temperature, top_k=args.top_k,
                        top_p=args.top_p, seed=0 if args.seed is None else args.seed)
        try:
            generation = subject.generation(text, args.generate or 20, beam=args.beam, **sampling)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.json or args.html:  # the data holds the walkthrough of the text and whatever else was asked for
        walkthrough = subject.walkthrough(text)
        walkthrough.generation, walkthrough.analysis = generation, why
        if args.json:
            from glassformer.explain.walkthrough import write_json

            write_json(walkthrough, outputs["--json"], max_values=args.max_values)
            print(plain(f"wrote {args.json}"), file=sys.stderr)
        if args.html:
            from glassformer.explain.render.html import write_html

            write_html(walkthrough, outputs["--html"], lang=args.lang)
            print(plain(f"wrote {args.html}; open it in a browser (it needs no network)"), file=sys.stderr)
        return 0
    from glassformer.explain.render.terminal import print_generation, print_walkthrough

    if generation is not None:  # the terminal shows what was asked; the walkthrough alone without these options
        print_generation(generation, lang=args.lang)
    elif not asking_why:  # (the analyses printed themselves)
        print_walkthrough(subject.walkthrough(text), lang=args.lang)
    return 0


def cmd_explore(args) -> int:
    from glassformer.explain.narration import check_lang

    try:
        check_lang(args.lang)
    except ValueError as e:
        raise UsageError(f"--lang: {e}") from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 (any free port) and 65535; got {args.port}")
    from glassformer.explore.server import serve

    host = args.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address as a URL writes it, [::1]: the socket takes ::1
    if args.threads < 0:
        raise UsageError(f"--threads must be 0 (automatic) or more; got {args.threads}")
    return serve(args.model, host, args.port, browser=not args.no_browser, lang=args.lang, threads=args.threads)


def cmd_learn(args) -> int:
    from glassformer.learn.build import CHAPTERS
    from glassformer.learn.notebooks import write_notebooks

    if args.list:
        for number, chapter in enumerate(CHAPTERS, 1):
            print(f"{number:02d}-{chapter.name}  {chapter.title[args.lang]}")
        return 0
    for path, written in write_notebooks(args.out, args.lang):
        print(f"{'wrote' if written else 'kept '} {path}")
    print(f"open them with: jupyter lab {args.out}   (or read them at docs/learn in the site: mkdocs serve)")
    return 0


def cmd_plot_attention(args) -> int:
    from glassformer.base.files import check_output
    from glassformer.checkpoint import load
    from glassformer.plots import plot_attention

    out = check_output(args.out, "--out")  # before the model is loaded
    model, tok = load(args.model)
    if tok is None:
        raise UsageError(f"{args.model} has no tokenizer; it cannot read text")
    plot_attention(model, tok, args.text, out)
    print(plain(args.out))
    return 0


def cmd_plot_loss(args) -> int:
    from pathlib import Path

    from glassformer.base.files import check_output
    from glassformer.plots import plot_loss

    log = Path(args.run) / "log.jsonl"
    out = check_output(args.out, "--out", may_replace=Path(args.run) / "loss.png")  # redrawing its own run's figure
    if not log.exists():
        raise UsageError(f"{log} not found: --run must be a training run directory")
    plot_loss(log, out)
    print(plain(args.out))
    return 0


def cmd_data_fetch(args) -> int:
    from glassformer.data.fetch import fetch

    path = fetch(args.name, cache_dir=args.dir)
    print(plain(str(path)))
    return 0


def cmd_data_prepare(args) -> int:
    from glassformer.base.files import check_output_dir
    from glassformer.data.batches import DataError
    from glassformer.data.prepare import check_options, prepare

    try:  # every option's range, before any input is read
        check_options(args.tokenizer, args.vocab_size, args.val_fraction, args.workers, args.shard_tokens, 1,
                      args.tokenizer_file)
    except DataError as e:
        raise UsageError(str(e)) from None
    check_output_dir(args.out, "--out", own="prepared-data directory")  # never into a run or a checkpoint
    record = prepare(args.data, args.out, args.tokenizer, args.vocab_size, args.val_fraction, args.workers,
                     shard_tokens=args.shard_tokens, tokenizer_file=args.tokenizer_file)
    tokens = {split: sum(s["tokens"] for s in shards) for split, shards in record["shards"].items()}
    print(plain(f"{args.out}: {tokens['train']:,} training and {tokens['val']:,} validation tokens in "
                f"{sum(map(len, record['shards'].values()))} shards, vocabulary {record['vocab_size']:,}; "
                f"try: glassformer train lm --data {args.out} --out RUN"))
    return 0


DTYPE_CHOICES = ["auto", "float32", "bfloat16", "float16"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="glassformer", description="The Transformer and GPT, every number visible.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="task", required=True, metavar="TASK")
    lm = train.add_parser("lm", help="train a GPT language model on a text file")
    lm.add_argument("--data", help="UTF-8 text file, or a directory `data prepare` wrote (default: a corpus "
                                   "bundled with glassformer)")
    lm.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char")
    lm.add_argument("--vocab-size", type=int, help="vocabulary size for word/bpe tokenizers")
    lm.add_argument("--preset", default=DEFAULT_PRESET, help="named model + training settings")
    lm.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set max_iters=500 (repeatable)")
    lm.add_argument("--val-fraction", type=float, help="last fraction of the text kept for validation (0.1)")
    lm.add_argument("--out", required=True, help="run directory")
    lm.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    lm.add_argument("--init-from", metavar="DIR", help="fine-tune this checkpoint (glassformer's, or a Hugging Face "
                                                       "GPT-2, Llama, Mistral, Qwen2 or Qwen3 directory)")
    lm.add_argument("--overwrite", action="store_true", help="replace the run (or other files) in --out with a new run")
    lm.set_defaults(func=cmd_train_lm)

    tr = train.add_parser("translation", help="train an encoder-decoder on line-aligned parallel text")
    for flag, what in (("--train-src", "training source sentences, one per line (plain or .gz)"),
                       ("--train-tgt", "training target sentences, line-aligned with --train-src"),
                       ("--valid-src", "validation source sentences"), ("--valid-tgt", "validation targets")):
        tr.add_argument(flag, required=True, help=what)
    tr.add_argument("--preset", default="multi30k")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    tr.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 6000)")
    tr.add_argument("--tokenizer", choices=["joint", "separate"], default="joint",
                    help="one BPE vocabulary for both languages, or one each")
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    tr.add_argument("--overwrite", action="store_true", help="replace the run (or other files) in --out with a new run")
    tr.set_defaults(func=cmd_train_translation)

    translate = sub.add_parser("translate", help="translate lines of text with a trained model")
    translate.add_argument("--model", required=True)
    translate.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy")
    translate.add_argument("--input", help="file of source sentences (default: standard input)")
    translate.add_argument("--device", default="auto")
    translate.set_defaults(func=cmd_translate)

    sample = sub.add_parser("sample", help="generate text from a trained language model")
    sample.add_argument("--model", required=True, help="checkpoint directory")
    sample.add_argument("--prompt", help="text to continue (default: a newline)")
    sample.add_argument("--max-new-tokens", type=int, default=500)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    sample.add_argument("--top-k", type=int, default=200)
    sample.add_argument("--top-p", type=float)
    sample.add_argument("--seed", type=int, default=1337)
    sample.add_argument("--num-samples", type=int, default=1)
    sample.add_argument("--stop", action="append", default=[], help="stop at this text (repeatable)")
    sample.add_argument("--device", default="auto")
    sample.add_argument("--chat", action="store_true",
                        help="the prompt is a user's turn, rendered with the model's chat template; prints the answer")
    sample.add_argument("--system", help="--chat: a system turn before the user's")
    sample.add_argument("--dtype", choices=DTYPE_CHOICES, help="the weights' dtype (auto: as stored where native)")
    sample.add_argument("--weights", choices=WEIGHTS, default="float",
                        help="int8: store the matrices as int8 with a scale per output channel, a quarter of the "
                             "float32 bytes to read per token (logits move slightly; see bench/generate.py); bf16: "
                             "store them in bfloat16 and compute in float32, half the bytes (a bf16 checkpoint's "
                             "own values, exactly)")
    sample.set_defaults(func=cmd_sample)

    evaluate = sub.add_parser("eval", help="evaluate a model").add_subparsers(dest="task", required=True,
                                                                           metavar="TASK")
    eval_lm = evaluate.add_parser("lm", help="validation loss and perplexity of a language model")
    eval_lm.add_argument("--model", required=True)
    eval_lm.add_argument("--data", required=True, help="the text file the model was trained on, or a directory "
                                                      "`data prepare` wrote (its validation split)")
    eval_lm.add_argument("--val-fraction", type=float, help="default: the run's own")
    eval_lm.add_argument("--device", default="auto")
    eval_lm.add_argument("--dtype", choices=DTYPE_CHOICES, help="the weights' dtype (auto: as stored where native)")
    eval_lm.set_defaults(func=cmd_eval_lm)

    eval_tr = evaluate.add_parser("translation", help="sacreBLEU and chrF of a translation model")
    eval_tr.add_argument("--model", required=True)
    eval_tr.add_argument("--src", required=True, help="source sentences")
    eval_tr.add_argument("--ref", required=True, help="reference translations, line-aligned")
    eval_tr.add_argument("--beam", type=int, default=5)
    eval_tr.add_argument("--device", default="auto")
    eval_tr.set_defaults(func=cmd_eval_translation)

    explain = sub.add_parser("explain", help="every step of a Transformer, with its numbers (en or zh)")
    explain.add_argument("chapter", nargs="?", help="basics: the neural-network chapter before transformers; "
                                                    "shapes: every tensor's shape for a preset, without weights")
    explain.add_argument("--preset", default="gpt2", help="the preset whose shapes `explain shapes` prints")
    explain.add_argument("--lang", default="en", help="en or zh")
    explain.add_argument("--heads", type=int, default=1, help="attention heads of the built-in example (1 or 2)")
    explain.add_argument("--model", help="explain a trained model instead of the built-in example")
    explain.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32",
                         help="the weights' dtype (float32, so that every number recomputes)")
    explain.add_argument("--text", help="the text to run through --model")
    explain.add_argument("--html", help="write a self-contained HTML page instead of printing")
    explain.add_argument("--json", help="write the walkthrough as data (every step's op, inputs and values)")
    explain.add_argument("--max-values", type=int, default=16384,
                         help="--json: steps with more values are written as a corner and statistics (0: all)")
    explain.add_argument("--generate", type=int, metavar="N",
                         help="generate N tokens, showing each step: the KV cache, attention, the choice")
    explain.add_argument("--temperature", type=float, help="--generate: sampling temperature (1.0; 0 = greedy)")
    explain.add_argument("--top-k", type=int, help="--generate: keep the k most likely tokens")
    explain.add_argument("--top-p", type=float, help="--generate: keep the most likely tokens up to probability p")
    explain.add_argument("--seed", type=int, help="--generate: the sampling seed (0)")
    explain.add_argument("--beam", type=int, default=1, help="a translation model: show beam search's tree")
    explain.add_argument("--lens", action="store_true",
                         help="a GPT: the logit lens, the top tokens each layer's residual stream predicts")
    explain.add_argument("--attribute", metavar="TOKEN",
                         help="a GPT: each head's and feed-forward's direct contribution to TOKEN's logit")
    explain.add_argument("--ablate", metavar="LAYER.HEAD",
                         help="a GPT: remove heads (e.g. 1.2,2.1; counted from 1) and show the change in the "
                              "target's log-probability")
    explain.add_argument("--ablate-mode", choices=["zero", "mean"], default="zero",
                         help="--ablate: zero the heads' outputs or replace them by their mean over positions")
    explain.add_argument("--target", metavar="TOKEN",
                         help="--ablate and --patch: the token whose probability is watched (default: the prediction)")
    explain.add_argument("--patch", metavar="CORRUPT_TEXT",
                         help="a GPT: activation patching from --text (clean) into this text of the same length")
    explain.add_argument("--png", help="--patch: also save the heatmap as a PNG")
    explain.set_defaults(func=cmd_explain)

    explore = sub.add_parser("explore", help="the walkthrough as a live page: type, edit weights, remove heads")
    explore.add_argument("--model", help="a GPT or Seq2Seq checkpoint, or a Hugging Face directory glassformer.load "
                                         "reads (default: the village GPT and the articles' translation example)")
    explore.add_argument("--host", default="127.0.0.1",
                         help="address to listen on (default loopback; any other needs the printed token)")
    explore.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    explore.add_argument("--no-browser", action="store_true", help="print the address without opening a browser")
    explore.add_argument("--lang", default="en", help="the page's first language: en or zh")
    explore.add_argument("--threads", type=int, default=0,
                         help="torch threads (0: one for a model under 20M parameters, else torch's choice)")
    explore.set_defaults(func=cmd_explore)

    plot = sub.add_parser("plot", help="figures as PNG").add_subparsers(dest="what", required=True, metavar="WHAT")
    attention = plot.add_parser("attention", help="attention heatmaps of every layer and head")
    attention.add_argument("--model", required=True, help="checkpoint directory")
    attention.add_argument("--text", required=True, help="the text to run through the model")
    attention.add_argument("--out", required=True, help="PNG file to write")
    attention.set_defaults(func=cmd_plot_attention)
    loss = plot.add_parser("loss", help="training and validation loss of a run")
    loss.add_argument("--run", required=True, help="run directory (holds log.jsonl)")
    loss.add_argument("--out", required=True, help="PNG file to write")
    loss.set_defaults(func=cmd_plot_loss)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = data.add_parser("fetch", help="download a dataset and check its SHA-256")
    fetch.add_argument("name", help="shakespeare or multi30k")
    fetch.add_argument("--dir", help="cache directory (default: $GLASSFORMER_CACHE or ~/.cache/glassformer)")
    fetch.set_defaults(func=cmd_data_fetch)
    prep = data.add_parser("prepare", help="tokenize a corpus of any size into shards that train lm --data reads")
    prep.add_argument("--data", nargs="+", required=True, metavar="PATH",
                      help="text, .jsonl (\"text\" field) or .parquet files, directories, globs, datasets saved "
                           "with save_to_disk, or hf:NAME[:SPLIT]")
    prep.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char")
    prep.add_argument("--vocab-size", type=int, help="word/bpe vocabulary size (trained on the first 64 MB)")
    prep.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of chunks kept for validation, at most 0.5 (0.1)")
    prep.add_argument("--workers", type=int, help="encoding processes (default: every CPU)")
    prep.add_argument("--shard-tokens", type=int, default=1 << 28, help="most tokens in one shard file (2^28)")
    prep.add_argument("--tokenizer-file", help="encode with this tokenizer (a run's tokenizer.json) instead of "
                                               "training one")
    prep.add_argument("--out", required=True, help="directory for the shards (new or empty; the same to resume)")
    prep.set_defaults(func=cmd_data_prepare)

    export = sub.add_parser("export", help="write a checkpoint in another library's format")
    export.add_argument("--format", default="hf",
                        help="hf: a transformers directory: GPT-2, or Llama/Qwen2/Qwen3 (chosen from the model)")
    export.add_argument("--model", required=True, help="glassformer checkpoint directory")
    export.add_argument("--out", required=True, help="directory to write (new or empty)")
    export.add_argument("--overwrite", action="store_true", help="write into --out even though it holds files")
    export.set_defaults(func=cmd_export)

    learn = sub.add_parser("learn", help="the course: its chapters as notebooks to run offline (en or zh)")
    learn.add_argument("--out", default="glassformer-course",
                       help="folder to write the notebooks into (those already there are kept)")
    learn.add_argument("--lang", default="en", choices=["en", "zh"], help="the notebooks' language")
    learn.add_argument("--list", action="store_true", help="list the chapters and write nothing")
    learn.set_defaults(func=cmd_learn)
    return parser


def entry() -> None:
    """The command's entry point (console script and python -m glassformer): main(), then exit.

    An interrupted command ends at once with status 130: torch's import can swallow a
    KeyboardInterrupt after Python has marked it unhandled, and Python would then end the
    process by SIGINT at exit instead of with the status main returned.
    """
    status = main()
    if status == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


def main(argv: list[str] | None = None) -> int:
    """Runs the glassformer command on `argv` (default: the command line); returns the exit status.

    Every way it can end is one line on stderr at most. Ctrl-C at any moment exits 130: torch
    is imported inside, and since its import can swallow the KeyboardInterrupt of a Ctrl-C
    pressed at the wrong instant, the signal is also remembered and checked once it is loaded.
    """
    interrupted: list[int] = []

    def interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if in_main_thread else None
    try:
        status = run(argv, interrupted)
    except KeyboardInterrupt:
        status = None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if status is None or interrupted:
        print("glassformer: interrupted", file=sys.stderr)
        return 130
    return status


@contextlib.contextmanager
def interrupts_held():
    """Holds Ctrl-C back for the duration, then lets it through: a KeyboardInterrupt raised inside
    torch's import can abort the process from C++ (SIGABRT, a native stack on stderr) or be
    swallowed there. Where signals cannot be masked (Windows, a thread), does nothing."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a held Ctrl-C is delivered now


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the command: "glassformer: warning: ..." on stderr, without the source line."""
    print(f"glassformer: warning: {plain(str(message))}", file=file or sys.stderr)


def run(argv: list[str] | None, interrupted: list[int]) -> int:
    args = build_parser().parse_args(argv)
    with interrupts_held():
        from glassformer.training.trainer import TrainingError  # imports torch
    if interrupted:
        raise KeyboardInterrupt  # pressed while torch was being imported
    try:
        with warnings.catch_warnings():  # the command's warnings in one line each, as its errors
            warnings.showwarning = one_line_warning
            return args.func(args)
    except UsageError as e:
        print(f"glassformer: error: {plain(str(e))}", file=sys.stderr)
        return 2
    except (ValueError, OSError, TrainingError) as e:  # bad input files, configs, checkpoints; NaN loss
        print(f"glassformer: error: {plain(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a bug of ours: still one line, with the way to see the details
        if os.environ.get("GLASSFORMER_DEBUG"):
            raise
        print(f"glassformer: internal error: {type(e).__name__}: {plain(str(e))} "
              f"(set GLASSFORMER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3
