"""`caprese diagnose --model M --data D --samples N --out DIR`: layer-wise FFN diagnostics.

Generates greedy continuations of N prompts of task D, traces prompt + continuation teacher-forced,
and writes per-layer statistics (stats.json / stats.csv), reconstruction errors of oracle top-k
with and without the best rank-r correction (errors.json / errors.csv per phase: generated tokens,
and prompt tokens with the same corrections; figure2.csv: generated) and the figures (PNG + PDF):
sparsity vs ε heatmap, |Z| quantiles per layer, error vs density per rank. The notebook's layer
explorer opens the folder: `caprese.diagnostics.widgets.layer_explorer(DIR)`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..arch import ffn_blocks
from ..diagnostics import DiagnoseConfig, run_diagnostics
from ..diagnostics.pipeline import build_prompts, load_prompt_rows
from ..io import check_output_dir, staged_folder
from ..methods.base import resolve_layers
from ..models.loading import check_model_options, load_model
from ..validate import check_rank_fits
from .common import add_model_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "diagnose", help="per-layer FFN sparsity statistics and reconstruction error (figure 2)"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--data",
        required=True,
        help="task name (e.g. toy-math, gsm8k-100), a GSM8K-format file, or a .jsonl file with a 'prompt' field",
    )
    parser.add_argument("--samples", type=int, default=16, help="prompts to generate from (default 16)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--layers", nargs="+", default=["all"], help="layer indices, 'all' or 'first_half' (default all)"
    )
    parser.add_argument(
        "--densities", nargs="+", type=float, default=None, help="top-k densities k/D_FF (default 0.05 0.1 0.2 0.3 0.5)"
    )
    parser.add_argument("--ranks", nargs="+", type=int, default=None, help="correction ranks (default D/32 D/16 D/8)")
    parser.add_argument(
        "--epsilons", nargs="+", type=float, default=None, help="ε for fraction |Z| ≤ ε (default 0 and 2^-12..2^4)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=96, help="greedy continuation length (default 96)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default 8)")
    parser.add_argument("--ridge", type=float, default=None, help="relative ridge of the rank-r fit (default 1e-6)")
    parser.add_argument("--seed", type=int, default=0, help="task sampling seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def config_from_args(args, num_layers: int | None):
    """The DiagnoseConfig of the flags; num_layers None checks every value but the layer indices."""
    layers = None if num_layers is None else tuple(resolve_layers(",".join(args.layers), num_layers))
    options = dict(
        samples=args.samples,
        layers=layers,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    for name in ("densities", "ranks", "epsilons", "ridge"):
        value = getattr(args, name)
        if value is not None:
            options[name] = tuple(value) if isinstance(value, list) else value
    return DiagnoseConfig(**options)


def run(args) -> int:
    # everything that needs no weights first: options, data, model source, output folder
    provisional = config_from_args(args, None)
    rows = load_prompt_rows(args.data, provisional.samples, provisional.seed)
    check_model_options(args.model, args.dtype, args.device)
    check_output_dir(args.out)
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    blocks = ffn_blocks(model)
    config = config_from_args(args, len(blocks))
    for rank in config.ranks or ():
        check_rank_fits("rank", rank, [(f"model {args.model!r}", blocks[0].hidden_size)])
    prompts = build_prompts(rows, tokenizer)
    result = run_diagnostics(
        model, tokenizer, prompts, config, model_name=args.model, data_name=args.data, progress=not args.quiet
    )
    with staged_folder(args.out) as stage:
        paths = result.write(stage)
    paths = {name: Path(args.out) / Path(path).relative_to(stage) for name, path in paths.items()}
    print(
        f"diagnosed {len(result.samples)} samples ({sum(len(s.generated_ids) for s in result.samples)} generated tokens), "
        f"layers {result.layers}, ranks {list(result.ranks)} -> {args.out}"
    )
    for row in result.figure2_rows():
        label = "top-k" if row["rank"] == 0 else f"top-k + rank {row['rank']}"
        print(
            f"  density {row['density']:<5g} {label:<16} relative error {row['relative_l2']:.4f}  cosine {row['cosine']:.4f}"
        )
    for warning in result.warnings():
        print(f"warning: {warning}")
    print(f"wrote {len(paths)} files, e.g. {paths['summary']}")
    return 0
