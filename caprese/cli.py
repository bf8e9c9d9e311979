"""The `caprese` command: one verb per capability. Each verb lives in `caprese.commands.<verb>`
and exposes `add_parser(subparsers)`; the parser's `run(args)` does the work."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CapreseError

# verb module names under caprese.commands, in the order `--help` lists them
VERBS = ["models", "inspect", "eval", "lm-eval", "diagnose", "distill", "export-peft", "bench", "sweep", "collect", "figures"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caprese",
        description="Low-rank distillation that recovers the reasoning lost to sparse FFN inference.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        importlib.import_module(f"caprese.commands.{verb.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CapreseError as err:
        print(f"caprese {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
