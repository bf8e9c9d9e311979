"""The `caprese` command: one verb per capability. Each verb lives in `caprese.commands.<verb>`
and exposes `add_parser(subparsers)`; the parser's `run(args)` does the work.

Errors reach the user as one line on stderr, `caprese VERB: error: ...`, with an exit code per
family (see `caprese.errors`); `caprese --debug VERB ...` (or CAPRESE_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .errors import EXIT_BAD_INPUT, EXIT_DATA, EXIT_INTERRUPTED, EXIT_IO, CapreseError, one_line

# verb module names under caprese.commands, in the order `--help` lists them
VERBS = [
    "models",
    "inspect",
    "eval",
    "lm-eval",
    "diagnose",
    "distill",
    "export-peft",
    "bench",
    "sweep",
    "collect",
    "figures",
]


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (`caprese VERB: error: ...`) rather than usage + error."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="caprese",
        description="Low-rank distillation that recovers the reasoning lost to sparse FFN inference.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also: CAPRESE_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=OneLineParser)
    for verb in VERBS:
        importlib.import_module(f"caprese.commands.{verb.replace('-', '_')}").add_parser(sub)
    return parser


def _data_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (json.JSONDecodeError, UnicodeDecodeError)
    try:
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    except ImportError:  # pragma: no cover
        pass
    return errors


def debug_enabled(args=None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("CAPRESE_DEBUG", "").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the verb too
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug
    prefix = f"caprese {args.verb}"
    try:
        return int(args.run(args) or 0)
    except BaseException as err:
        code = _exit_code(err)
        if code is None or debug_enabled(args):
            raise
        if code == EXIT_INTERRUPTED:
            print(
                f"{prefix}: interrupted; nothing was written to its output (an earlier result there is kept)",
                file=sys.stderr,
            )
        else:
            print(f"{prefix}: error: {_describe(err)}", file=sys.stderr)
        return code


def _exit_code(err: BaseException) -> int | None:
    """The exit code for an error family the user can act on; None: a bug, show the traceback."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, CapreseError):
        return EXIT_BAD_INPUT
    if isinstance(err, _data_errors()):
        return EXIT_DATA
    if isinstance(err, OSError):
        return EXIT_IO
    return None


def _describe(err: BaseException) -> str:
    if isinstance(err, CapreseError):
        return one_line(err, 1000)
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or type(err).__name__}: {str(err.filename)!r}"
    return f"{type(err).__name__}: {one_line(err)}"


if __name__ == "__main__":
    sys.exit(main())
