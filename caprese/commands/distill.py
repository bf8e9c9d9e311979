"""`caprese distill`: train Caprese low-rank paths for an efficient FFN method and save the adapter.

    caprese distill --model toy-math --method griffin --sparsity 0.5 --layers first_half \\
        --rank 32 --samples 512 --stage e2e --out runs/distill/griffin

writes OUT/adapter/ (adapter.safetensors + caprese_adapter.json), OUT/distill_data.jsonl,
OUT/metrics.json (losses per stage, extra parameters) and OUT/spectra.json (singular values of
each L·R, the paper's figure 8). Evaluate with `caprese eval ... --adapter OUT/adapter`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import INITS, KINDS, STAGES, E2EConfig, LayerwiseConfig, LoraConfig
from ..distill.adapter import CapreseAdapter
from ..distill.api import check_distill_inputs, distill
from ..distill.data import distillation_rows, mixed_question_rows
from ..distill.parallel import LayerParallel
from ..distill.report import adapter_report
from ..errors import CapreseError
from ..evaluate.generation import GenerationConfig
from ..experiment import DistillConfig
from ..io import check_output_dir, staged_folder, write_json, write_jsonl
from ..methods.choice import MethodChoice
from ..methods.cli_options import add_method_arguments, method_from_args
from ..models.loading import check_model_options, load_model
from ..registry import check_choice, check_int
from .common import add_config_arguments, add_model_arguments

# Training modules (torch, transformers) are imported in run(): `caprese --help` builds every verb's parser.


# config field -> flag; a flag not given is None, so a built-in model's recipe can fill it in
LAYERWISE_FLAGS = {
    "init": "init",
    "ridge": "ridge",
    "lr": "lr",
    "batch_size": "batch-size",
    "epochs": "epochs",
    "validation_fraction": "validation-fraction",
    "patience": "patience",
}
E2E_FLAGS = {
    "lr": "e2e-lr",
    "batch_size": "e2e-batch-size",
    "epochs": "e2e-epochs",
    "gradient_checkpointing": "gradient-checkpointing",
    "patience": "e2e-patience",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("distill", help="train Caprese low-rank paths (layer-wise eq 7, end-to-end eq 8)")
    add_model_arguments(parser)
    add_method_arguments(parser)
    group = parser.add_argument_group("distillation")
    group.add_argument("--rank", type=int, required=True, help="rank r of each low-rank path (1..D)")
    add_config_arguments(group, DistillConfig, {"samples": "samples"})
    group.add_argument("--stage", default="layerwise", help=f"{' | '.join(STAGES)} (default: layerwise)")
    group.add_argument(
        "--kind",
        default=KINDS[0],
        help="caprese (the x L R path) | lora (the eq-11 baseline on GRIFFIN, rank matched to --rank's parameters)",
    )
    group.add_argument(
        "--data", default="toy-math", help="toy-math | gsm-symbolic | a GSM8K-format file (default: toy-math)"
    )
    group.add_argument(
        "--mix-data",
        default="",
        metavar="SOURCE",
        help="extra non-math rows to mix in: toy-language (questions) | toy-language-text (plain stories, "
        "taken as written) | toy-math | gsm-symbolic | a GSM8K-format file | a .txt file (one text per line)",
    )
    group.add_argument("--mix-samples", type=int, default=0, metavar="N", help="how many --mix-data rows (default: 0)")
    group.add_argument(
        "--responses", default="model", help="model (the dense model answers, default) | dataset (worked solutions)"
    )
    # the teacher's responses: GenerationConfig's defaults and help
    add_config_arguments(group, GenerationConfig, {"max_new_tokens": "max-new-tokens", "temperature": "temperature"})
    add_config_arguments(group, LayerwiseConfig, LAYERWISE_FLAGS, unset=True)
    add_config_arguments(group, E2EConfig, E2E_FLAGS, unset=True)
    add_config_arguments(group, LoraConfig, {"scope": "lora-scope"})
    group.add_argument(
        "--start-from", default=None, metavar="ADAPTER", help="continue from a saved adapter (e.g. a layer-wise one)"
    )
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--layer-parallel",
        type=int,
        default=None,
        metavar="N",
        help="fit the layer-wise stage's layers as Ray tasks, N at once (pip install 'caprese[ray]'); same adapter as serial",
    )
    group.add_argument(
        "--layer-parallel-gpus",
        type=float,
        default=None,
        metavar="G",
        help="GPUs per layer fit under --layer-parallel (fractions share a GPU; default 1 when the model is on a GPU, else 0)",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster for --layer-parallel (default: start a local one)",
    )
    group.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)


def check_arguments(args) -> tuple[LayerwiseConfig, E2EConfig]:
    """Every distillation option checked (one-line errors) before the model loads; the two configs
    (`args.lora_config` gets the LoRA baseline's)."""
    check_choice("stage", args.stage, STAGES)
    check_choice("kind", args.kind, KINDS)
    if args.init is not None:
        check_choice("init", args.init, INITS)
    if args.rank < 1:
        raise CapreseError(f"rank {args.rank!r} is out of range (allowed: integers 1..D)")
    check_int("--mix-samples", args.mix_samples, 0)
    for name in ("samples", "max_new_tokens"):
        check_int(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.method == "dense":
        raise CapreseError("--method dense has nothing for Caprese to correct (choose another --method)")
    args.lora_config = LoraConfig(scope=args.lora_scope)
    if args.kind != "lora" and args.lora_scope != LoraConfig().scope:
        raise CapreseError(f"--lora-scope {args.lora_scope} is for --kind lora (not --kind {args.kind})")
    if args.layer_parallel is None and (args.ray_address or args.layer_parallel_gpus is not None):
        raise CapreseError("--ray-address and --layer-parallel-gpus go with --layer-parallel N")
    if args.layer_parallel is not None:
        if args.stage == "closed_form" or args.kind == "lora":
            raise CapreseError(
                f"--layer-parallel parallelizes the layer-wise Caprese fit; not for --stage {args.stage} --kind {args.kind}"
            )
        args.layer_parallel_config = LayerParallel(
            workers=args.layer_parallel, address=args.ray_address, gpus=args.layer_parallel_gpus
        )
    from ..models.recipes import training_configs

    given = {name: getattr(args, flag.replace("-", "_")) for name, flag in LAYERWISE_FLAGS.items()}
    layerwise = {name: value for name, value in given.items() if value is not None}
    given = {name: getattr(args, flag.replace("-", "_")) for name, flag in E2E_FLAGS.items()}
    e2e = {name: value for name, value in given.items() if value is not None}
    # the recipe of a built-in --model, the user's flags on top; the paper's settings otherwise
    layerwise, e2e, line = training_configs(
        args.model, {**layerwise, "rank": args.rank, "seed": args.seed}, {**e2e, "seed": args.seed}
    )
    args.recipe_line = line
    return layerwise, e2e


def run(args) -> int:
    spec = method_from_args(args)
    layerwise, e2e = check_arguments(args)  # fail before the model loads
    # everything that needs no weights: the questions (data files), model source, adapter, --out
    settings = GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed
    ).check()
    questions = mixed_question_rows(args.data, args.samples, args.mix_data, args.mix_samples, seed=args.seed)
    choice = MethodChoice.from_spec(spec)
    choice.calibration_texts()  # reads a --calibration file now
    check_model_options(args.model, args.dtype, args.device)
    if args.start_from:
        CapreseAdapter.load(args.start_from)  # a damaged adapter fails before the model loads
    check_output_dir(args.out)
    out = Path(args.out)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    start_from = CapreseAdapter.load(args.start_from, model) if args.start_from else None
    # rank <= D, layer indices, --start-from's fit: before minutes of teacher generation
    check_distill_inputs(model, choice, rank=args.rank, stage=args.stage, kind=args.kind, start_from=start_from)
    if args.recipe_line:
        print(args.recipe_line)
    start = time.perf_counter()
    with staged_folder(out) as stage:  # an earlier result in --out stays whole until this one is
        rows = distillation_rows(model, tokenizer, questions, responses=args.responses, settings=settings)
        write_jsonl(stage / "distill_data.jsonl", rows)
        adapter = distill(
            model,
            tokenizer,
            rows,
            choice,
            rank=args.rank,
            stage=args.stage,
            layerwise=layerwise,
            e2e=e2e,
            base_model=args.model,
            start_from=start_from,
            kind=args.kind,
            layer_parallel=getattr(args, "layer_parallel_config", None),
            lora=args.lora_config,
        )
        report = write_results(stage, model, adapter, args, spec, start)
    print(
        f"adapter: {out / 'adapter'}  ({report['extra_parameters']:,} parameters, "
        f"{report['extra_percent_of_model']:.2f}% of the model, {report['extra_percent_of_ffn']:.2f}% of its FFNs)"
    )
    final = adapter.config.final_losses
    held_out = final.get("layerwise_validation", {})
    for layer, losses in final.get("layerwise", {}).items():
        line = f"  layer {layer}: eq-7 loss {losses['loss_without_path']:.4g} -> {losses['loss']:.4g}"
        if layer in held_out:
            line += f" (validation {held_out[layer]['loss_without_path']:.4g} -> {held_out[layer]['loss']:.4g})"
        print(line)
    if "e2e_epochs" in final:
        line = f"  end-to-end loss: {final['e2e_initial']:.4g} -> {final['e2e_epochs'][-1]:.4g} (last epoch mean)"
        if final.get("e2e_validation_epochs"):
            line += f"; validation {final['e2e_validation_initial']:.4g} -> {final['e2e_validation_epochs'][-1]:.4g}"
        print(line)
    if final.get("validation_rows"):
        print(f"  validation: {final['validation_rows']} held-out rows, never trained on (--validation-fraction)")
    return 0


def write_results(out: Path, model, adapter, args, spec, start: float) -> dict:
    """The adapter, spectra.json and metrics.json (last) into `out`; returns the adapter report."""
    adapter.save(out / "adapter")
    report = adapter_report(model, adapter)
    write_json(out / "spectra.json", report.pop("singular_values"))
    metrics = {
        "model": args.model,
        "method": spec.describe(),
        "kind": args.kind,
        **({"lora_scope": args.lora_scope} if args.kind == "lora" else {}),
        "rank": args.rank,
        "adapter_rank": adapter.config.rank,
        "stage": args.stage,
        "samples": args.samples,
        "data": args.data,
        "responses": args.responses,
        "seconds": round(time.perf_counter() - start, 2),
        **report,
        "losses": adapter.config.final_losses,
    }
    write_json(out / "metrics.json", metrics)
    return report
