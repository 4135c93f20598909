"""The `glassformer` command: parse arguments, call library functions, print.

Every error a user can cause ends as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line, exit status 2."""


def cmd_export(args) -> int:
    from .checkpoint import export_hf, load

    if args.format != "hf":
        raise UsageError(f"unknown export format {args.format!r}; supported: hf")
    model, _ = load(args.model)
    out = export_hf(model, args.out)
    print(f"wrote a transformers GPT-2 directory to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glassformer", description="The Transformer and GPT, every number visible.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = sub.add_parser("export", help="write a checkpoint in another library's format")
    export.add_argument("--format", default="hf", help="hf: a transformers GPT2LMHeadModel directory")
    export.add_argument("--model", required=True, help="glassformer checkpoint directory")
    export.add_argument("--out", required=True, help="directory to write")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"glassformer: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # bad input files, configs, checkpoints
        print(f"glassformer: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("glassformer: interrupted", file=sys.stderr)
        return 130
