"""`caprese inspect --model M`: load a model and show how its architecture layout resolves each FFN."""

from __future__ import annotations

from ..arch import ffn_blocks, layout_for
from ..models.loading import load_model
from .common import add_model_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="load a model and list its FFN blocks as its layout sees them")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    model, _ = load_model(args.model, dtype=args.dtype, device=args.device, tokenizer=False)
    layout = layout_for(model)
    blocks = ffn_blocks(model, layout)
    total = sum(p.numel() for p in model.parameters())
    ffn = sum(b.ffn_parameter_count() for b in blocks)
    print(
        f"{args.model}: {layout.architecture}, {len(blocks)} layers, D={blocks[0].hidden_size}, "
        f"D_FF={blocks[0].intermediate_size}, activation={type(blocks[0].act).__name__}, "
        f"{'gated' if layout.gated else 'non-gated'}"
    )
    print(f"parameters: {total:,} total, {ffn:,} in FFNs ({100 * ffn / total:.1f}%)")
    return 0
