"""`caprese export-peft ADAPTER OUT`: a trained Caprese adapter as a PEFT LoRA folder.

    caprese export-peft runs/griffin-r16/adapter runs/griffin-r16/peft

writes OUT/adapter_config.json + OUT/adapter_model.safetensors (PEFT's LoRA over each FFN module:
A = Lᵀ, B = Rᵀ, lora_alpha = r) and OUT/caprese_export.json (the method, sparsity, layers and
base-model fingerprint PEFT's config has no place for). Load it with
`caprese.distill.peft_export.load_peft_model(model, OUT)` (registers the FFN custom module), or
back into caprese with `--adapter OUT` / `CapreseAdapter.load(OUT, model)`.
"""

from __future__ import annotations

import argparse

from ..distill.adapter import CapreseAdapter
from ..distill.peft_export import export_peft
from ..io import check_output_dir
from ..models.loading import load_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export-peft",
        help="write a Caprese adapter as a PEFT LoRA folder (needs peft: caprese[eval])",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "adapter", metavar="ADAPTER", help="a caprese adapter folder (caprese distill --out DIR -> DIR/adapter)"
    )
    parser.add_argument("out", metavar="OUT", help="the PEFT folder to write")
    parser.add_argument(
        "--model",
        default=None,
        help="the base model (default: the adapter's base_model, read as a module tree without weights)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    CapreseAdapter.load(args.adapter)  # a damaged adapter fails before anything else
    check_output_dir(args.out)
    model = None
    if args.model is not None:
        model, _ = load_model(args.model, tokenizer=False)
    adapter = CapreseAdapter.load(args.adapter, model)
    out = export_peft(adapter, args.out, model=model)
    layers = ", ".join(str(layer) for layer in adapter.config.layers)
    print(
        f"wrote PEFT LoRA folder {out} (rank {adapter.config.rank}, layers {layers}; "
        f"trained for {adapter.config.method} at sparsity {adapter.config.method_config.get('sparsity')})"
    )
    return 0
