"""Options several verbs share: the model to load (the efficient method's live in caprese.methods.cli_options)."""

from __future__ import annotations

import argparse
import dataclasses
import typing


def add_model_arguments(parser) -> None:
    """The model options every verb that loads a model shares."""
    parser.add_argument(
        "--model",
        required=True,
        help="built-in name (toy-math, smollm2-135m, gemma3-270m), local model folder, or Hugging Face id",
    )
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | auto")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")


def add_adapter_arguments(group) -> None:
    """--adapter and --merged, for the verbs that evaluate a trained adapter (eval, lm-eval)."""
    group.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="a trained adapter folder (caprese distill --out DIR/adapter); implies its method, sparsity and layers",
    )
    group.add_argument("--merged", action="store_true", help="with --adapter: merged inference (eqs 9-10)")


def add_config_arguments(group, config_class, flags: dict[str, str], *, unset: bool = False) -> None:
    """One flag per named field of a config dataclass (`flags`: field -> flag without --), with the
    field's own default and `metadata["help"]`: the dataclass is the one home of both.

    unset=True leaves a flag that is not given as None (the help still names the field's default),
    so the caller can tell a value the user gave from one it fills in (a built-in model's recipe)."""
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for name, flag in flags.items():
        f = fields[name]
        text = f"{f.metadata['help']} (default: {f.default}{'; a built-in model: its recipe' if unset else ''})"
        dest = flag.replace("-", "_")
        default = None if unset else f.default
        if hints[name] is bool:
            group.add_argument(
                f"--{flag}", dest=dest, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        else:
            group.add_argument(
                f"--{flag}",
                dest=dest,
                type=hints[name],
                default=default,
                choices=f.metadata.get("choices"),
                help=text,
            )
