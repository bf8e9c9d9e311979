"""`caprese lm-eval`: lm-evaluation-harness tasks on a model under a method or a trained adapter.

    caprese lm-eval --model toy-math --method griffin --sparsity 0.5 --layers first_half \\
        --tasks caprese_toy_math --limit 100 --out runs/harness-griffin

needs `pip install 'caprese[eval]'`. Runs lm-eval's `simple_evaluate` with the `caprese` model
(prompt tokens dense, generated tokens the method; loglikelihood continuations count as generated)
and writes DIR/lm_eval_results.json (lm-eval's own results), DIR/lm_eval_samples.jsonl (with
--log-samples) and, last, DIR/metrics.json (each task's metrics, method, adapter, settings).
caprese's offline tasks (caprese_toy_math, caprese_toy_language, caprese_gsm8k_100,
caprese_toy_math_mc) are always available; hub tasks (gsm8k, minerva_math500, ...) need network.
"""

from __future__ import annotations

import argparse
import difflib
import json
import time
from pathlib import Path

import torch

from ..errors import CapreseError
from ..io import check_output_dir, write_json, write_jsonl
from ..methods.cli_options import add_method_arguments
from ..models.loading import check_model_options
from .common import add_adapter_arguments, add_model_arguments
from .eval import DefaultsOnceFormatter


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lm-eval",
        help="lm-evaluation-harness tasks under a method or adapter (needs caprese[eval])",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsOnceFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--tasks",
        required=True,
        help="comma-separated lm-eval task names, e.g. caprese_toy_math,caprese_toy_math_mc or gsm8k",
    )
    parser.add_argument("--out", required=True, help="output folder for metrics.json and lm_eval_results.json")
    parser.add_argument("--limit", type=float, default=None, help="first N documents per task (or a fraction < 1)")
    parser.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation cap for generate_until tasks (default: the task's max_gen_toks)",
    )
    parser.add_argument(
        "--apply-chat-template", action="store_true", help="render prompts with the model's chat template"
    )
    parser.add_argument("--include-path", default=None, metavar="DIR", help="a folder of your own YAML tasks")
    parser.add_argument("--log-samples", action="store_true", help="also write every document's response/score")
    parser.add_argument("--seed", type=int, default=0, help="lm-eval's random / numpy / torch / few-shot seed")
    add_method_arguments(parser)
    extra = parser.add_argument_group("Caprese")
    add_adapter_arguments(extra)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import lm_eval
        from lm_eval.utils import handle_non_serializable
    except ImportError:
        raise CapreseError("caprese lm-eval needs lm-eval: pip install 'caprese[eval]'") from None
    from ..harness import task_manager  # needs lm-eval (an optional extra), checked above
    from ..harness.model import CapreseLM, method_option_names

    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    if not tasks:
        raise CapreseError(f"--tasks {args.tasks!r} names no task")
    if args.limit is not None and args.limit <= 0:
        raise CapreseError(f"--limit {args.limit!r} must be > 0")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CapreseError(f"--max-new-tokens {args.max_new_tokens!r} must be >= 1")
    # caprese's own tasks alone need no index of lm-eval's thousands of task files (the slow part)
    only_ours = args.include_path is None and all(name.startswith("caprese") for name in tasks)
    manager = task_manager(args.include_path, include_defaults=not only_ours)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        ours = task_manager(include_defaults=False).all_tasks
        raise CapreseError(
            f"unknown lm-eval task {unknown[0]!r}{hint} (caprese's offline tasks: "
            f"{', '.join(n for n in ours if n.startswith('caprese_'))}; or any lm-eval task)"
        )
    method = {key: getattr(args, key) for key in method_option_names()}  # the very flags add_method_arguments made

    check_model_options(args.model, args.dtype, args.device)
    check_output_dir(args.out)  # before the model loads and the tasks run
    lm = CapreseLM(
        pretrained=args.model,
        adapter=args.adapter,
        merged=args.merged,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        **method,
    )
    started = time.time()
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=args.num_fewshot,
        limit=limit,
        task_manager=manager,
        gen_kwargs=None if args.max_new_tokens is None else {"max_gen_toks": args.max_new_tokens},
        apply_chat_template=args.apply_chat_template,
        log_samples=args.log_samples,
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        torch_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )
    samples = results.pop("samples", None) or {}
    out = Path(args.out)
    # lm-eval's results hold task configs with functions in them: its own serialiser turns those into text
    jsonable = json.loads(json.dumps(results, default=handle_non_serializable))
    write_json(out / "lm_eval_results.json", jsonable)
    if args.log_samples:
        rows = [{"task": task, **sample} for task, task_rows in samples.items() for sample in task_rows]
        write_jsonl(out / "lm_eval_samples.jsonl", json.loads(json.dumps(rows, default=handle_non_serializable)))
    metrics = {
        "model": args.model,
        "tasks": tasks,
        "results": {
            task: {k: v for k, v in values.items() if k not in ("name", "alias")}
            for task, values in jsonable["results"].items()
        },
        **lm.describe(),
        "last_session": lm.last_session,
        "harness": {
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            "limit": limit,
            "num_fewshot": args.num_fewshot,
            "apply_chat_template": args.apply_chat_template,
        },
        "seconds": time.time() - started,
        "settings": {
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "dtype": args.dtype,
            "device": args.device,
            "seed": args.seed,
            "torch_threads": torch.get_num_threads(),
        },
    }
    write_json(out / "metrics.json", metrics)  # written last: its presence marks a finished run
    for task, values in metrics["results"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float) and "stderr" not in k)
        print(f"{task}: {shown}")
    print(f"wrote {out / 'metrics.json'} and {out / 'lm_eval_results.json'}")
    return 0
