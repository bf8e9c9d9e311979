"""`caprese models`: the supported architectures and the built-in models."""

from __future__ import annotations

from ..arch import ADAPTERS
from ..models.builtin import builtin_models


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list supported architectures and built-in models")
    parser.set_defaults(run=run)


def run(args) -> int:
    builtins = builtin_models()
    print("Supported architectures (any Hugging Face id or folder with one of these):")
    for name, adapter in ADAPTERS.items():
        kind = "fused gate_up" if adapter.gate_up else ("gated" if adapter.gated else "non-gated")
        print(f"  {name:<22} layers={adapter.layers}  ffn={adapter.ffn}  ({kind})")
    print("Built-in models (offline):")
    if not len(builtins):
        print("  (none registered)")
    for name, model in builtins.items():
        print(f"  {name:<22} {model.description}")
    return 0
