"""`caprese eval`: accuracy of a model on a task, with per-sample generations saved.

    caprese eval --model toy-math --task toy-math --samples 200 --out runs/eval-toy

writes DIR/metrics.json (accuracy and mean response tokens, overall and per level, counts,
model, task and settings) and DIR/samples.jsonl (one generation per problem), atomically.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..config import EvalConfig, GenerationConfig
from ..data.math_scoring import SCORINGS
from ..data.tasks import load_task_rows, task_names, task_scoring
from ..distill.adapter import CapreseAdapter
from ..errors import CapreseError
from ..evaluate import evaluate_accuracy
from ..evaluate.run import evaluate_model
from ..io import check_output_dir, staged_folder, write_json, write_jsonl
from ..methods.cli_options import add_method_arguments, method_from_args
from ..models.loading import check_model_options, load_model
from ..validate import check_int_at_least
from .common import add_adapter_arguments, add_model_arguments


class DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, unless its help already states one."""

    def _get_help_string(self, action):
        text = action.help or ""
        return text if "default" in text else super()._get_help_string(action)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="accuracy of a model on a task (generations + metrics.json)",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsOnceFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--task",
        required=True,
        help=f"one of: {', '.join(task_names())}; a GSM8K-format or MATH-style "
        ".jsonl/.json/.parquet file; or math:FILE_OR_HUB_ID",
    )
    parser.add_argument(
        "--scoring",
        default="auto",
        help="answer scoring: auto (the task's: gsm, or math-verify for MATH-style tasks) | gsm | math-verify",
    )
    parser.add_argument("--samples", type=int, default=200, help="number of problems (fixed sets use their first N)")
    parser.add_argument("--out", required=True, help="output folder for metrics.json and samples.jsonl")
    parser.add_argument(
        "--levels", default=None, help="tasks with levels (toy-math, arithmetic): comma-separated levels, e.g. 1,3,5"
    )
    parser.add_argument(
        "--data-seed", type=int, default=0, help="seed of generated tasks (toy-math, toy-language, gsm-symbolic)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (ignored when greedy)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_method_arguments(parser)
    extra = parser.add_argument_group("Caprese and evaluation breadth")
    add_adapter_arguments(extra)
    extra.add_argument(
        "--language-samples",
        type=int,
        default=0,
        help="also score toy-language short answers and teacher-forced perplexity / KL on this many texts",
    )
    extra.add_argument(
        "--coverage-samples",
        type=int,
        default=0,
        metavar="N",
        help="also sample N responses per prompt for pass@k, k = 1..N (needs --temperature > 0)",
    )
    extra.add_argument("--coverage-prompts", type=int, default=20, help="prompts used for coverage")
    extra.add_argument("--coverage-temperature", type=float, default=0.7, help="sampling temperature for coverage")
    parser.set_defaults(run=run)
    return parser


def parse_levels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CapreseError(
            f"--levels {text!r} is not a comma-separated list of integers (allowed: 1, 2, 3, 4, 5)"
        ) from None


def format_summary(metrics: dict) -> str:
    lines = [
        f"{metrics['task']} on {metrics['model']}: accuracy {metrics['accuracy']:.3f} "
        f"({metrics['correct']}/{metrics['count']}), mean response tokens {metrics['mean_response_tokens']:.1f}, "
        f"{metrics['seconds']:.1f}s"
    ]
    for level, group in metrics["per_level"].items():
        lines.append(
            f"  level {level}: accuracy {group['accuracy']:.3f} ({group['correct']}/{group['count']}), "
            f"mean response tokens {group['mean_response_tokens']:.1f}"
        )
    measured = metrics.get("measured_sparsity", {})
    if measured.get("overall") is not None:
        requested = metrics["params"].get("model_active_fraction_with_extra")
        active = metrics["params_measured"].get("model_active_fraction_with_extra")
        lines.append(
            f"  sparsity on generated tokens: requested {measured['requested']:.3f}, measured {measured['overall']:.3f}"
            f"; active-parameter fraction: requested {requested:.4f}, measured {active:.4f}"
        )
    return "\n".join(lines)


def method_context(args, model, tokenizer):
    """The session the evaluation runs in: an adapter's method + paths, a bare method, or dense."""
    if args.adapter:
        if args.method != "dense":
            raise CapreseError(f"--method {args.method!r} conflicts with --adapter, which carries its own method")
        adapter = CapreseAdapter.load(args.adapter, model)
        return adapter.apply(model, tokenizer, merged=args.merged), adapter
    if args.merged:
        raise CapreseError("--merged needs --adapter")
    spec = method_from_args(args)
    return spec.apply(model, tokenizer, progress=not args.quiet), None


def run(args: argparse.Namespace) -> int:
    settings = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    for name in ("language_samples", "coverage_samples"):
        if getattr(args, name) < 0:
            raise CapreseError(f"--{name.replace('_', '-')} {getattr(args, name)!r} must be >= 0")
    if args.coverage_samples and args.coverage_temperature <= 0:
        raise CapreseError(f"--coverage-temperature {args.coverage_temperature!r} must be > 0")
    # everything that needs no weights first: options, data, model source, adapter, output folder
    check_int_at_least("--coverage-prompts", args.coverage_prompts, 1)
    evaluation = EvalConfig(
        task=args.task,
        samples=0,  # the accuracy above; evaluate_model adds language and coverage
        language_samples=args.language_samples,
        coverage_samples=args.coverage_samples,
        coverage_prompts=args.coverage_prompts,
    )
    scoring = SCORINGS.get(args.scoring).name if args.scoring != "auto" else None
    if args.adapter:
        if args.method != "dense":
            raise CapreseError(f"--method {args.method!r} conflicts with --adapter, which carries its own method")
        CapreseAdapter.load(args.adapter)  # a damaged adapter fails here, before the model loads
    else:
        if args.merged:
            raise CapreseError("--merged needs --adapter")
        method_from_args(args)
    rows = load_task_rows(args.task, args.samples, seed=args.data_seed, levels=parse_levels(args.levels))
    scoring = scoring or task_scoring(args.task)
    check_model_options(args.model, args.dtype, args.device)
    check_output_dir(args.out)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    started = time.time()
    context, adapter = method_context(args, model, tokenizer)
    with context as session:
        session.reset_measurements()
        result = evaluate_accuracy(
            model, tokenizer, rows, settings, progress=not args.quiet, desc=f"eval {args.task}", scoring=scoring
        )
        breadth = evaluate_model(
            model,
            tokenizer,
            session,
            evaluation,
            replace(settings, temperature=args.coverage_temperature),  # coverage's sampling
            extra_parameters=adapter.parameter_count() if adapter else 0,
            progress=not args.quiet,
            coverage_rows=rows,
            scoring=scoring,
        )
    metrics = {
        "model": args.model,
        "task": args.task,
        "samples_requested": args.samples,
        "levels": parse_levels(args.levels),
        "data_seed": args.data_seed,
        **result.metrics,
        "method": session.describe(),
        "adapter": None
        if adapter is None
        else {
            "path": args.adapter,
            "kind": adapter.kind,
            "rank": adapter.config.rank,
            "stage": adapter.config.stage,
            "merged": args.merged,
        },
        **breadth,
        "seconds": time.time() - started,
        "settings": {
            **settings.as_dict(),
            "dtype": args.dtype,
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
        },
    }
    out = Path(args.out)
    with staged_folder(out) as stage:  # an earlier result in --out stays whole until this one is
        write_jsonl(stage / "samples.jsonl", result.samples)
        write_json(stage / "metrics.json", metrics)  # moved in last: its presence marks a finished run
    print(format_summary(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'samples.jsonl'}")
    return 0
