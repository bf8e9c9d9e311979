"""The method options every verb that runs an efficient model shares (`caprese eval`, `caprese diagnose`).

    def add_parser(subparsers):
        parser = subparsers.add_parser("eval", ...)
        add_method_arguments(parser)
        parser.set_defaults(run=run)

    def run(args):
        model, tokenizer = load_model(args.model)
        spec = method_from_args(args)              # validated: one-line errors on bad input
        with spec.apply(model, tokenizer) as session:
            ...                                    # generate / score as usual
        results["method"] = spec.describe()
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CapreseError
from ..io import read_jsonl
from .base import METHODS, build_config, check_sparsity
from .cats import THRESHOLD_SOURCES
from .teal import ALLOCATIONS

DEFAULT_SPARSITY = 0.5
CALIBRATION_SOURCES = ("toy-language", "toy-math")

# CLI flag -> (method it belongs to, config field, default)
METHOD_FLAGS = {
    "reselect_every": ("griffin", "reselect_every", None),
    "prune": ("griffin", "prune", False),
    "cats_threshold": ("cats", "threshold_source", "prompt"),
    "teal_allocation": ("teal", "allocation", "uniform"),
}


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("efficient FFN method (prompt tokens run the full FFN, generated tokens the method)")
    group.add_argument("--method", default="dense", help=f"one of: {', '.join(METHODS.names())} (default: dense)")
    group.add_argument(
        "--sparsity", type=float, default=None,
        help=f"fraction of FFN activations dropped on generated tokens, in [0, 1) (default: {DEFAULT_SPARSITY}; dense: 0)",
    )
    group.add_argument("--layers", default="all", help="all | first_half | comma-separated layer indices (default: all)")
    group.add_argument("--reselect-every", type=int, default=None, metavar="RHO",
                       help="griffin: reselect the kept neurons every RHO generated tokens (default: never)")
    group.add_argument("--prune", action="store_true", help="griffin: decode through sliced weights (same outputs, less work)")
    group.add_argument("--cats-threshold", choices=THRESHOLD_SOURCES, default="prompt",
                       help="cats: τ from each prompt's prefill features (paper) or from --calibration (original CATS)")
    group.add_argument("--teal-allocation", choices=ALLOCATIONS, default="uniform",
                       help="teal: the same sparsity per projection, or TEAL's greedy per-projection search")
    group.add_argument("--calibration", default=None, metavar="SOURCE",
                       help=f"calibration set for teal / --cats-threshold calibration: {' | '.join(CALIBRATION_SOURCES)} | a .txt or .jsonl file")
    group.add_argument("--calibration-samples", type=int, default=128, metavar="N", help="texts read from --calibration (default: 128)")


@dataclass(frozen=True)
class MethodSpec:
    """A validated method choice from the command line; `apply` is `apply_method` with it."""

    name: str
    sparsity: float
    layers: Any
    options: dict = field(default_factory=dict)
    calibration: str | None = None
    calibration_samples: int = 128

    def calibration_texts(self) -> list | None:
        """The calibration set (texts and/or prompt/response rows), read when a method needs one."""
        return None if self.calibration is None else load_calibration_texts(self.calibration, self.calibration_samples)

    def apply(self, model, tokenizer=None, **kwargs):
        from .session import apply_method

        return apply_method(model, self.name, self.sparsity, self.layers, calibration=self.calibration_texts(),
                            tokenizer=tokenizer, **self.options, **kwargs)

    def describe(self) -> dict:
        return {"method": self.name, "sparsity": self.sparsity, "layers": self.layers, **self.options,
                "calibration": self.calibration, "calibration_samples": self.calibration_samples if self.calibration else None}


def method_from_args(args: argparse.Namespace) -> MethodSpec:
    """Validate the parsed method flags; one-line CapreseError on any bad value or misplaced option."""
    cls = METHODS.get(args.method)
    name = cls.name
    if args.sparsity is None:
        sparsity = 0.0 if name == "dense" else DEFAULT_SPARSITY
    else:
        sparsity = check_sparsity(args.sparsity)
    options = {}
    for flag, (owner, option, default) in METHOD_FLAGS.items():
        value = getattr(args, flag, default)
        if owner == name:
            options[option] = value
        elif value != default:
            raise CapreseError(f"--{flag.replace('_', '-')} is a {owner} option, not one of method {name!r}")
    config = build_config(cls, options)
    if cls.calibration_needs(config):
        if args.calibration is None:
            raise CapreseError(f"--method {name} with these options needs --calibration ({' | '.join(CALIBRATION_SOURCES)} | a file)")
    if args.calibration_samples < 1:
        raise CapreseError(f"--calibration-samples {args.calibration_samples!r} must be >= 1")
    layers = args.layers
    if name == "dense":
        sparsity = check_dense(sparsity)
    calibration = args.calibration if cls.calibration_needs(config) else None
    return MethodSpec(name, sparsity, layers, options, calibration, args.calibration_samples)


def check_dense(sparsity: float) -> float:
    if sparsity != 0:
        raise CapreseError(f"--sparsity {sparsity!r} does nothing with --method dense (omit it or choose another method)")
    return sparsity


def _row_item(row: dict):
    """A calibration item from a jsonl row: a text, or a prompt/response pair (only the response counts)."""
    if "text" in row:
        return str(row["text"])
    if "prompt" in row and "response" in row:
        return {"prompt": str(row["prompt"]), "response": str(row["response"])}
    if "question" in row and "answer" in row:
        from ..data.prompts import plain_prompt, plain_response

        return {"prompt": plain_prompt(row["question"]), "response": plain_response(row["answer"])}
    raise CapreseError(f"calibration row has none of text / prompt+response / question+answer (keys: {sorted(row)})")


def load_calibration_texts(source: str, samples: int) -> list:
    """Calibration items from a built-in generator (train split) or a file (.txt: one text per line;
    .jsonl: rows with text, or prompt+response / question+answer, of which only the response counts).
    Texts count every token; pairs count the response tokens, the ones efficient methods act on."""
    if source == "toy-language":
        from ..data.toy_language import generate_texts

        items = [row["text"] for row in generate_texts(samples, split="train")]
    elif source == "toy-math":
        from ..data.toy_math import generate_rows

        items = [_row_item(row) for row in generate_rows(samples, split="train")]
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CapreseError(f"calibration {source!r} is neither a file nor one of: {', '.join(CALIBRATION_SOURCES)}")
        if path.suffix == ".jsonl":
            rows = read_jsonl(path)
            items = [_row_item(row) for row in rows]
        else:
            items = [line for line in path.read_text().splitlines() if line.strip()]
        items = items[:samples]
    if not items:
        raise CapreseError(f"calibration set {source!r} is empty")
    return items
