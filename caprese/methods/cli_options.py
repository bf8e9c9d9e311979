"""The method options every verb that runs an efficient model shares (`caprese eval`, `caprese diagnose`,
`caprese distill`), generated from the registered methods' config fields.

    def add_parser(subparsers):
        parser = subparsers.add_parser("eval", ...)
        add_method_arguments(parser)
        parser.set_defaults(run=run)

    def run(args):
        model, tokenizer = load_model(args.model)
        choice = method_from_args(args)            # validated: one-line errors on bad input
        with choice.apply(model, tokenizer) as session:
            ...                                    # generate / score as usual
        results["method"] = choice.describe()

Each field of a method's config becomes one flag (`--<method>-<field>`, or the field's
`metadata["flag"]`), with the field's help and default; a flag given for another method than
`--method` is refused.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import CapreseError
from ..registry import check_int
from .base import METHODS, MethodOption, build_config, check_sparsity, method_options
from .choice import CALIBRATION_SOURCES, MethodChoice, load_calibration_texts

__all__ = [
    "DEFAULT_SPARSITY",
    "CALIBRATION_SOURCES",
    "MethodSpec",
    "add_method_arguments",
    "method_from_args",
    "all_method_options",
    "load_calibration_texts",
]

DEFAULT_SPARSITY = 0.5
DEFAULT_CALIBRATION_SAMPLES = MethodChoice.calibration_samples

MethodSpec = MethodChoice
"""Deprecated name: the CLI's validated choice is a `MethodChoice`."""


def all_method_options() -> list[MethodOption]:
    """Every registered method's options; two methods may not claim the same flag."""
    options, owners = [], {}
    for _, cls in METHODS.items():
        for option in method_options(cls):
            if option.flag in owners:
                raise CapreseError(
                    f"flag --{option.flag} of method {cls.name!r} is already method "
                    f"{owners[option.flag]!r}'s (set metadata['flag'] on the field)"
                )
            owners[option.flag] = cls.name
            options.append(option)
    return options


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "efficient FFN method (prompt tokens run the full FFN, generated tokens the method)"
    )
    group.add_argument("--method", default="dense", help=f"one of: {', '.join(METHODS.names())} (default: dense)")
    group.add_argument(
        "--sparsity",
        type=float,
        default=None,
        help=f"fraction of FFN activations dropped on generated tokens, in [0, 1) (default: {DEFAULT_SPARSITY}; dense: 0)",
    )
    group.add_argument(
        "--layers", default="all", help="all | first_half | comma-separated layer indices (default: all)"
    )
    for option in all_method_options():
        option.add_to(group)
    group.add_argument(
        "--calibration",
        default=None,
        metavar="SOURCE",
        help=f"calibration set for methods that need one: {' | '.join(CALIBRATION_SOURCES)} | a .txt or .jsonl file",
    )
    group.add_argument(
        "--calibration-samples",
        type=int,
        default=DEFAULT_CALIBRATION_SAMPLES,
        metavar="N",
        help=f"texts read from --calibration (default: {DEFAULT_CALIBRATION_SAMPLES})",
    )


def method_from_args(args: argparse.Namespace) -> MethodChoice:
    """Validate the parsed method flags; one-line CapreseError on any bad value or misplaced option."""
    cls = METHODS.get(args.method)
    name = cls.name
    if args.sparsity is None:
        sparsity = DEFAULT_SPARSITY if cls.takes_sparsity else 0.0
    else:
        sparsity = check_sparsity(args.sparsity)
    options = {}
    for option in all_method_options():
        value = getattr(args, option.dest, None)
        if option.method == name:
            options[option.field] = option.default if value is None else value
        elif value is not None:
            raise CapreseError(f"--{option.flag} is a {option.method} option, not one of method {name!r}")
    config = build_config(cls, options)
    options = dataclasses.asdict(config)
    needs = cls.calibration_needs(config)
    if needs and args.calibration is None:
        raise CapreseError(
            f"--method {name} with these options needs --calibration ({' | '.join(CALIBRATION_SOURCES)} | a file)"
        )
    check_int("--calibration-samples", args.calibration_samples)
    if not cls.takes_sparsity and sparsity != 0:
        raise CapreseError(
            f"--sparsity {sparsity!r} does nothing with --method {name} (omit it or choose another method)"
        )
    return MethodChoice(
        name,
        sparsity,
        args.layers,
        options,
        calibration_source=args.calibration if needs else None,
        calibration_samples=args.calibration_samples,
    )


def check_dense(sparsity: float) -> float:
    """Deprecated: `method_from_args` refuses a sparsity for a method that takes none."""
    if sparsity != 0:
        raise CapreseError(
            f"--sparsity {sparsity!r} does nothing with --method dense (omit it or choose another method)"
        )
    return sparsity
