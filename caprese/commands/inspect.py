"""`caprese inspect --model M`: load a model and show how its adapter resolves each FFN."""

from __future__ import annotations


def add_model_arguments(parser) -> None:
    """The model options every verb that loads a model shares."""
    parser.add_argument("--model", required=True, help="Hugging Face id, local folder, or built-in name")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | auto")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="load a model and list its FFN blocks as the adapter sees them")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..arch import adapter_for, ffn_blocks
    from ..models.loading import load_model

    model, _ = load_model(args.model, dtype=args.dtype, device=args.device, tokenizer=False)
    adapter = adapter_for(model)
    blocks = ffn_blocks(model, adapter)
    total = sum(p.numel() for p in model.parameters())
    ffn = sum(b.ffn_parameter_count() for b in blocks)
    print(f"{args.model}: {adapter.architecture}, {len(blocks)} layers, D={blocks[0].hidden_size}, "
          f"D_FF={blocks[0].intermediate_size}, activation={type(blocks[0].act).__name__}, "
          f"{'gated' if adapter.gated else 'non-gated'}")
    print(f"parameters: {total:,} total, {ffn:,} in FFNs ({100 * ffn / total:.1f}%)")
    return 0
