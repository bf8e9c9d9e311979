"""`caprese bench`: time to next token of full / GRIFFIN / GRIFFIN+LoRA / Caprese merged (table 5).

    caprese bench                                   # FFN stacks at Llama-3.1-8B and Qwen2.5-14B shapes, fp32 + bf16
    caprese bench --model toy-math --skip-ffn       # whole-model generation on a built-in model
    caprese bench --device cuda                     # the same on a GPU

Prints ratios to the full model and to each variant's bytes-moved limit; writes --out (JSON).
"""

from __future__ import annotations

import torch

from ..bench import SHAPES, ffn_decode_latency, generation_latency
from ..errors import CapreseError
from ..io import check_output_file, write_json
from ..models.loading import check_model_options, load_model, parse_device, parse_dtype
from ..registry import check_range
from ..validate import check_int_at_least, check_rank_fits

RANK = 256  # --rank's default (the paper's r at 8B scale)
MODEL_RANK = 16


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="decode latency: full vs GRIFFIN vs GRIFFIN+LoRA vs Caprese merged")
    parser.add_argument(
        "--shapes", default="Llama-3.1-8B,Qwen2.5-14B", help="comma-separated: Llama-3.1-8B, Qwen2.5-14B, or DxD_FF"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes")
    parser.add_argument("--layers", type=int, default=4, help="FFNs in the timed stack (default: 4)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument(
        "--rank", type=int, default=RANK, help="Caprese rank r (LoRA's r' is matched to its parameters)"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="also time whole-model generation of this model (e.g. toy-math)")
    parser.add_argument("--model-rank", type=int, default=MODEL_RANK, help="Caprese rank for the whole-model timing")
    parser.add_argument("--skip-ffn", action="store_true", help="only the whole-model timing")
    parser.add_argument("--out", default=None, help="write results as JSON here (e.g. figures/latency.json)")
    parser.set_defaults(run=run)


def _shape(text: str) -> tuple[str, int, int]:
    if text in SHAPES:
        return (text, *SHAPES[text])
    try:
        d, d_ff = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CapreseError(f"shape {text!r} is not allowed (choose from: {', '.join(SHAPES)}, or DxD_FF)") from None
    if d < 1 or d_ff < 1:
        raise CapreseError(f"shape {text!r} needs D >= 1 and D_FF >= 1")
    return text, d, d_ff


def run(args) -> int:
    # every option up front: a bad one fails before the first timing, not after some
    check_range("sparsity", args.sparsity, 0.0, 1.0, high_open=True)
    check_int_at_least("--layers", args.layers, 1)
    check_int_at_least("--repeats", args.repeats, 1)
    check_int_at_least("--model-rank", args.model_rank, 1)
    parse_device(args.device)
    shapes = [_shape(s.strip()) for s in args.shapes.split(",") if s.strip()]
    dtypes = [parse_dtype(d.strip()) for d in args.dtypes.split(",") if d.strip()]
    if not args.skip_ffn:
        if not shapes or not dtypes:
            raise CapreseError(f"--shapes {args.shapes!r} and --dtypes {args.dtypes!r} must each name at least one")
        check_rank_fits("--rank", args.rank, [(f"shape {name}", d) for name, d, _ in shapes], default=RANK)
    elif not args.model:
        raise CapreseError("--skip-ffn leaves nothing to time without --model")
    if args.model:
        config = check_model_options(args.model, "float32", args.device)
        hidden = getattr(config, "hidden_size", None)
        if hidden:
            check_rank_fits("--model-rank", args.model_rank, [(f"model {args.model!r}", hidden)], default=MODEL_RANK)
    if args.out:
        check_output_file(args.out)
    results: dict = {"ffn_stack": [], "generation": None}
    if not args.skip_ffn:
        print(f"decode step, batch 1, {args.layers} FFNs, sparsity {args.sparsity}, rank {args.rank}, {args.device}")
        print(f"{'shape':<14}{'dtype':<10}{'variant':<16}{'ms':>9}{'/full':>8}{'limit':>8}{'/limit':>8}")
        for name, d, d_ff in shapes:
            for dtype in dtypes:
                r = ffn_decode_latency(
                    name,
                    d,
                    d_ff,
                    layers=args.layers,
                    dtype=dtype,
                    device=args.device,
                    sparsity=args.sparsity,
                    rank=args.rank,
                    repeats=args.repeats,
                ).as_dict()
                results["ffn_stack"].append(r)
                for variant, ms in r["ms"].items():
                    print(
                        f"{name:<14}{r['dtype']:<10}{variant:<16}{ms:>9.2f}{r['ratio_to_full'][variant]:>8.3f}"
                        f"{r['bytes_limit'][variant]:>8.3f}{r['ratio_to_limit'][variant]:>8.3f}"
                    )
                print(
                    f"{'':<24}Caprese merged / GRIFFIN = {r['caprese_vs_griffin']:.3f}, "
                    f"GRIFFIN+LoRA / GRIFFIN = {r['lora_vs_griffin']:.3f}"
                )
                del r
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if args.model:
        model, tokenizer = load_model(args.model, device=args.device)
        g = generation_latency(
            model, tokenizer, sparsity=args.sparsity, rank=args.model_rank, repeats=max(3, args.repeats // 4)
        )
        results["generation"] = {"model": args.model, **g}
        print(f"whole-model decoding of {args.model} ({g['new_tokens']} tokens, GRIFFIN on {g['layers']}):")
        for variant, ms in g["ms_per_token"].items():
            print(f"  {variant:<16}{ms:>8.2f} ms/token  {g['ratio_to_full'][variant]:.3f} x full")
    if args.out:
        write_json(args.out, results)
    return 0
