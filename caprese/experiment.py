"""One experiment run, as the sweep notebook executes it: optionally distill Caprese for a method,
then evaluate dense / method / method+Caprese on math, language and coverage, and write
`metrics.json` (atomically) into the run's own folder.

`ExperimentConfig` nests the configs each stage takes (the method, distillation, layer-wise and
end-to-end training, generation, evaluation). Notebooks, sweep specs and metrics.json see it flat:
`PARAMETERS` maps each flat name (a notebook parameter of notebooks/experiment.ipynb, a key the
specs in ablations/ vary) to its field. `stage="none"` evaluates the method alone.

Adding a parameter: a field on the sub-config it belongs to, and one line in `PARAMETERS`
(and the notebook's parameters cell, which tests/test_experiment.py keeps equal to
`parameter_defaults()`: `to_params()` of the defaults, with the recipe parameters as None).

Distillation recipes: the flat `RECIPE_PARAMETERS` (init, lr, epochs, distill_batch_size, e2e_lr,
e2e_epochs, e2e_batch_size) default to None on the flat surface, "the model's recipe":
`from_params` fills each one not given (absent or None) from a built-in model's recipe
(caprese.models.recipes), else caprese.config's default, so the nested config (and metrics.json's
flat "config") holds the resolved values; `recipe_line` says which recipe values were taken and
run_experiment prints it. From Python, `ExperimentConfig.from_params({"model": ..., ...})` is the
way to get a model's recipe; building `ExperimentConfig(...)` directly takes every value as given.
"""

from __future__ import annotations

import hashlib
import json
import time
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import config as defaults
from .config import DTYPE_NAMES, KINDS, E2EConfig, EvalConfig, GenerationConfig, LayerwiseConfig, LoraConfig
from .errors import CapreseError
from .io import read_jsonl, write_json, write_jsonl
from .registry import check_choice, check_int, check_text
from .validate import check_method_values

# The config half of this module stays torch-free at import (sweep spec checks and notebooks read
# ExperimentConfig): what needs the model stack (the method registry, dtype and device parsing,
# distillation, evaluation) is imported inside the functions that use it.

STAGES = ("none", *defaults.STAGES)
RECIPE_PARAMETERS = ("init", "lr", "epochs", "distill_batch_size", "e2e_lr", "e2e_epochs", "e2e_batch_size")
"""Flat distillation settings whose default is None: the model's recipe, else caprese.config's default."""


@dataclass(frozen=True)
class MethodChoiceConfig:
    """The efficient method an experiment runs, as plain values (`caprese.methods.choice.MethodChoice`
    is built from it when the run starts; that one needs torch)."""

    name: str = field(default="griffin", metadata={"help": "registered method (caprese models lists them)"})
    sparsity: float = field(default=0.5, metadata={"help": "share of FFN neurons the method skips, in [0, 1)"})
    layers: str = field(default="all", metadata={"help": "all | first_half | comma-separated layer indices"})
    calibration: str = field(
        default="",
        metadata={
            "help": "calibration set for methods that need one (teal): toy-language | toy-math | a .txt/.jsonl file"
        },
    )
    calibration_samples: int = field(default=128, metadata={"help": "calibration texts read at most"})
    reselect_every: int = field(
        default=0,
        metadata={"help": "GRIFFIN reselects its kept neurons every this many generated tokens (ρ; 0: never, ρ = ∞)"},
    )

    def __post_init__(self):
        check_method_values(self.name, self.sparsity, self.layers)  # the registry: did-you-mean
        check_text("calibration", self.calibration)
        check_int("calibration_samples", self.calibration_samples)
        check_int("reselect_every", self.reselect_every, 0)  # 0: never
        self.options()

    def options(self) -> dict[str, Any]:
        """The method's options from these values ({"reselect_every": ρ} for ρ > 0)."""
        if not self.reselect_every:
            return {}
        from .methods import METHODS  # torch: see the note at the top

        if "reselect_every" not in METHODS.get(self.name).config_class.__dataclass_fields__:
            raise CapreseError(
                f"reselect_every {self.reselect_every!r} is for a method that reselects (griffin), not {self.name!r} (use 0)"
            )
        return {"reselect_every": self.reselect_every}


@dataclass(frozen=True)
class DistillConfig:
    """Whether and how an experiment distills Caprese: the stage, the kind of path, its rank and the
    dense model's responses it learns from (the stages' own settings: LayerwiseConfig, E2EConfig)."""

    stage: str = field(default="none", metadata={"help": "none (the method alone) | closed_form | layerwise | e2e"})
    kind: str = field(
        default="caprese",
        metadata={
            "help": "caprese (x L R beside the method) or lora (the eq-11 baseline, GRIFFIN only, "
            "parameter-matched to rank)"
        },
    )
    rank: int = field(default=0, metadata={"help": "rank r of each low-rank path (0: no distillation)"})
    samples: int = field(
        default=512, metadata={"help": "distillation samples (responses generated by the dense model)"}
    )
    mix_data: str = field(
        default="",
        metadata={
            "help": "extra distillation rows of another kind, added to the math ones: toy-language (questions), "
            "toy-language-text (plain stories, taken as written), or a .txt file (one text per line)"
        },
    )
    mix_samples: int = field(default=0, metadata={"help": "rows of mix_data added"})

    def __post_init__(self):
        check_choice("stage", self.stage, STAGES)
        check_choice("kind", self.kind, KINDS)
        check_int("rank", self.rank, 0)
        check_int("samples", self.samples)
        check_text("mix_data", self.mix_data)
        check_int("mix_samples", self.mix_samples, 0)
        if self.stage != "none" and self.rank == 0:
            raise CapreseError(f"stage {self.stage!r} needs rank >= 1")


def _default(factory):
    return field(default_factory=factory)


@dataclass
class ExperimentConfig:
    """One experiment run, nested: each part is the config its stage of the code takes. Notebooks,
    sweep specs and metrics.json see it flat, through `PARAMETERS` (`from_params` / `to_params`)."""

    model: str = field(default="toy-math", metadata={"help": "a built-in name, a local folder or a Hugging Face id"})
    seed: int = field(default=0, metadata={"help": "the run's seed: distillation data and order, sampling"})
    dtype: str = field(default="float32", metadata={"help": "model dtype: " + " | ".join(DTYPE_NAMES)})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | cuda:N"})
    out_dir: str = field(default="runs/experiment", metadata={"help": "the run's own folder"})
    shared_dir: str = field(
        default="",
        metadata={
            "help": "where runs share the dense model's distillation data (default: <runs>/.shared for <runs>/<sweep>/<run>)"
        },
    )
    method: MethodChoiceConfig = _default(MethodChoiceConfig)
    distill: DistillConfig = _default(DistillConfig)
    eval: EvalConfig = _default(EvalConfig)
    generation: GenerationConfig = _default(
        lambda: GenerationConfig(max_new_tokens=160, batch_size=64, temperature=0.7)
    )
    """Greedy evaluation and the teacher's responses; `temperature` / `top_p` are coverage's sampling."""
    layerwise: LayerwiseConfig = _default(LayerwiseConfig)
    e2e: E2EConfig = _default(E2EConfig)
    lora: LoraConfig = _default(LoraConfig)
    """The eq-11 LoRA baseline's scope (kind "lora" only)."""
    recipe_line: str | None = field(
        default=None,
        compare=False,
        metadata={"help": "the one line naming the recipe values from_params took (None: no recipe used)"},
    )

    def __post_init__(self):
        from .models.loading import parse_device, parse_dtype  # torch: see the note at the top

        for name in ("model", "out_dir", "shared_dir"):
            check_text(name, getattr(self, name))
        check_int("seed", self.seed, 0)
        check_choice("dtype", str(self.dtype).lower(), DTYPE_NAMES)  # before any model loads
        parse_dtype(self.dtype)
        parse_device(self.device, available=False)  # availability: where the point runs (load_model)
        if self.distill.stage != "none" and self.method.name == "dense":
            raise CapreseError("method 'dense' has nothing for Caprese to correct: use stage 'none'")
        if self.lora.scope != LoraConfig().scope and self.distill.kind != "lora":
            raise CapreseError(
                f"lora_scope {self.lora.scope!r} is for kind 'lora' (this run's kind is {self.distill.kind!r})"
            )
        # one seed and one rank per run: the stages' configs follow them
        self.generation = replace(self.generation, seed=self.seed)
        self.e2e = replace(self.e2e, seed=self.seed)
        self.layerwise = replace(self.layerwise, seed=self.seed, rank=self.distill.rank or self.layerwise.rank)

    def check(self) -> None:
        """Validation runs in __post_init__; kept for callers that changed fields afterwards."""
        self.__post_init__()

    @classmethod
    def from_params(cls, params: dict) -> ExperimentConfig:
        """The nested config from flat parameters (a notebook's, a sweep point's); errors name the
        flat parameter (`distill_batch_size`, not `layerwise.batch_size`). A recipe parameter not
        given (absent or None) takes the model's recipe value, else caprese.config's default."""
        from .models.recipes import recipe_for

        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise CapreseError(
                f"unknown experiment parameter {unknown[0]!r} (allowed: {', '.join(sorted(PARAMETERS))})"
            )
        params = {k: v for k, v in params.items() if not (k in RECIPE_PARAMETERS and v is None)}
        model = params.get("model", cls.__dataclass_fields__["model"].default)
        recipe = recipe_for(model) if isinstance(model, str) else None
        bases = dict(zip(("layerwise", "e2e"), recipe.configs())) if recipe is not None else {}
        top: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {}
        for flat, value in params.items():
            part, _, name = PARAMETERS[flat].rpartition(".")
            (parts.setdefault(part, {}) if part else top)[name] = value
        for part in {*parts, *bases}:
            try:
                top[part] = replace(bases[part] if part in bases else _PART_DEFAULTS[part](), **parts.get(part, {}))
            except CapreseError as err:
                raise _named_as_flat(err, part) from None
        if recipe is not None:
            given = {tuple(PARAMETERS[flat].split(".")) for flat in RECIPE_PARAMETERS if flat in params}
            top["recipe_line"] = recipe.describe(given, style="param")
        return cls(**top)

    @classmethod
    def parameter_defaults(cls) -> dict[str, Any]:
        """The flat parameters' defaults (the notebook's parameters cell): `to_params()` of the
        defaults, with each recipe parameter None ("the model's recipe")."""
        return {**cls().to_params(), **dict.fromkeys(RECIPE_PARAMETERS)}

    def to_params(self) -> dict[str, Any]:
        """The flat parameters (what metrics.json records as "config"); `from_params` inverts it."""
        out = {}
        for flat, path in PARAMETERS.items():
            value = self
            for name in path.split("."):
                value = getattr(value, name)
            out[flat] = value
        return out

    @classmethod
    def parameter_fields(cls) -> dict[str, tuple[Field, Any]]:
        """Flat name -> (the dataclass field it sets, that field's type): what sweep spec checks read."""
        out = {}
        for flat, path in PARAMETERS.items():
            part, _, name = path.rpartition(".")
            owner = _PART_TYPES[part] if part else cls
            hint = typing.get_type_hints(owner)[name]
            out[flat] = (owner.__dataclass_fields__[name], hint | None if flat in RECIPE_PARAMETERS else hint)
        return out


PARAMETERS: dict[str, str] = {
    # flat parameter (notebook, sweep spec, metrics.json "config") -> where it lives in ExperimentConfig;
    # the order is the notebook's
    "model": "model",
    "task": "eval.task",
    "method": "method.name",
    "sparsity": "method.sparsity",
    "layers": "method.layers",
    "calibration": "method.calibration",
    "calibration_samples": "method.calibration_samples",
    "rank": "distill.rank",
    "samples": "distill.samples",
    "mix_data": "distill.mix_data",
    "mix_samples": "distill.mix_samples",
    "stage": "distill.stage",
    "kind": "distill.kind",
    "seed": "seed",
    "eval_samples": "eval.samples",
    "eval_seed": "eval.seed",
    "eval_levels": "eval.levels",
    "max_new_tokens": "generation.max_new_tokens",
    "batch_size": "generation.batch_size",
    "coverage_samples": "eval.coverage_samples",
    "coverage_prompts": "eval.coverage_prompts",
    "temperature": "generation.temperature",
    "language_samples": "eval.language_samples",
    "text_sets": "eval.text_sets",
    "text_samples": "eval.text_samples",
    "text_prefix_tokens": "eval.text_prefix_tokens",
    "text_tokens": "eval.text_tokens",
    "error_samples": "eval.error_samples",
    "init": "layerwise.init",
    "lr": "layerwise.lr",
    "epochs": "layerwise.epochs",
    "distill_batch_size": "layerwise.batch_size",
    "e2e_lr": "e2e.lr",
    "e2e_epochs": "e2e.epochs",
    "e2e_batch_size": "e2e.batch_size",
    "dtype": "dtype",
    "device": "device",
    "out_dir": "out_dir",
    "shared_dir": "shared_dir",
    "validation_fraction": "layerwise.validation_fraction",
    "patience": "layerwise.patience",
    "e2e_patience": "e2e.patience",
    "reselect_every": "method.reselect_every",
    "lora_scope": "lora.scope",
}


_PART_TYPES = typing.get_type_hints(ExperimentConfig)
_PART_DEFAULTS = {f.name: f.default_factory for f in fields(ExperimentConfig) if f.default_factory is not MISSING}
"""The parts (sub-configs) of ExperimentConfig and the default each starts from."""


def _named_as_flat(err: CapreseError, part: str) -> CapreseError:
    """A sub-config's error with its field named as the flat parameter (`batch_size` ->
    `distill_batch_size` for the layer-wise part)."""
    text = str(err)
    for flat, path in PARAMETERS.items():
        name = path.rpartition(".")[2]
        if path.startswith(part + ".") and text.startswith(name + " "):
            return CapreseError(flat + text[len(name) :])
    return err


def distillation_data_key(cfg: ExperimentConfig, source: str) -> str:
    """What the cached teacher responses depend on, hashed; the model's weights fingerprint
    included, so a retrained model never reuses its predecessor's responses."""
    from .models.loading import weights_fingerprint

    distill = cfg.distill
    parts = [
        cfg.model,
        weights_fingerprint(cfg.model),
        source,
        distill.samples,
        cfg.seed,
        cfg.generation.max_new_tokens,
    ]
    if distill.mix_samples:
        parts += [distill.mix_data, distill.mix_samples]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _distillation_rows(cfg: ExperimentConfig, model, tokenizer) -> list[dict]:
    """The dense model's responses, shared by every run of a sweep with the same model/samples/seed."""
    from .distill.data import distillation_rows, mixed_question_rows

    shared = Path(cfg.shared_dir) if cfg.shared_dir else Path(cfg.out_dir).parent.parent / ".shared"
    # training questions of the evaluated task's kind: toy-math's own distill split, else GSM-Symbolic
    source = "toy-math" if cfg.eval.task == "toy-math" else "gsm-symbolic"
    key = distillation_data_key(cfg, source)
    path = shared / f"distill_data_{key}.jsonl"
    if path.exists():
        return read_jsonl(path)
    distill = cfg.distill
    questions = mixed_question_rows(source, distill.samples, distill.mix_data, distill.mix_samples, seed=cfg.seed)
    rows = distillation_rows(model, tokenizer, questions, settings=cfg.generation.greedy())
    write_jsonl(path, rows)  # atomic: concurrent runs may both write the same rows
    return rows


def _ffn_errors(cfg: ExperimentConfig, model, tokenizer, choice, adapter) -> dict:
    """Relative FFN error per layer on the same held-out worked solutions for every run of a sweep."""
    from .data.tasks import load_task_rows
    from .distill.batches import tokenize_pairs
    from .distill.data import distillation_rows
    from .distill.ffn_error import ffn_errors
    from .methods import METHODS

    if not METHODS.get(choice.name).takes_sparsity:  # dense: no FFN error to measure
        return {}
    evaluation = cfg.eval
    held_out = load_task_rows(evaluation.task, evaluation.error_samples, seed=evaluation.seed + 1)
    rows = distillation_rows(model, tokenizer, held_out, responses="dataset")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ffn_errors(model, choice, tokenize_pairs(tokenizer, rows), pad, adapter, tokenizer=tokenizer)


def _teacher_forced(cfg: ExperimentConfig, model, tokenizer, session) -> dict:
    """Per text set: perplexity and KL(dense ‖ method) of held-out texts, teacher-forced, with
    95% bootstrap intervals over texts and the per-text sums (for paired comparisons)."""
    from .data.texts import load_text_rows, texts_as_items
    from .evaluate.perplexity import perplexity

    evaluation = cfg.eval
    out = {}
    for name in evaluation.text_set_names():
        items = texts_as_items(tokenizer, load_text_rows(name, evaluation.text_samples, seed=evaluation.seed))
        result = perplexity(
            model,
            tokenizer,
            items,
            session,
            prefix_tokens=evaluation.text_prefix_tokens,
            max_continuation_tokens=evaluation.text_tokens,
            batch_size=cfg.generation.batch_size,
            progress=True,
            desc=name,
        )
        out[name] = result.as_dict(per_text=True)
    return out


def method_choice(method: MethodChoiceConfig):
    """The `MethodChoice` an experiment's method part describes (a dense run has no sparsity)."""
    from .methods import METHODS
    from .methods.choice import MethodChoice

    registered = METHODS.get(method.name)
    return MethodChoice(
        registered.name,
        method.sparsity if registered.takes_sparsity else 0.0,
        method.layers,
        method.options(),
        calibration_source=method.calibration or None,
        calibration_samples=method.calibration_samples,
    )


def _caprese_report(model, adapter) -> dict:
    from .distill.report import adapter_report, parameter_share

    report = adapter_report(model, adapter)
    return {
        "kind": adapter.kind,
        "adapter_rank": adapter.config.rank,
        **parameter_share(model, adapter.parameter_count()),
        "singular_values": report["singular_values"],
        "losses": adapter.config.final_losses,
        "training": adapter.config.training,  # the settings used (recipe and run's values), validation rows
    }


def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    import torch

    from .distill.api import distill
    from .evaluate.run import evaluate_model
    from .io import check_output_dir
    from .models.loading import check_model_options, load_model

    cfg.check()
    check_model_options(cfg.model, cfg.dtype, cfg.device)
    check_output_dir(cfg.out_dir, "out_dir")
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    choice = method_choice(cfg.method)
    choice.calibration_texts()  # a bad calibration source fails before any distillation
    adapter = None
    if cfg.distill.stage != "none":
        if cfg.recipe_line:
            print(cfg.recipe_line)
        rows = _distillation_rows(cfg, model, tokenizer)
        adapter = distill(
            model,
            tokenizer,
            rows,
            choice,
            rank=cfg.distill.rank,
            stage=cfg.distill.stage,
            base_model=cfg.model,
            kind=cfg.distill.kind,
            layerwise=cfg.layerwise,
            e2e=cfg.e2e,
            lora=cfg.lora if cfg.distill.kind == "lora" else None,
        )
        adapter.save(out / "adapter")
    context = adapter.apply(model, tokenizer) if adapter is not None else choice.apply(model, tokenizer)
    with context as session:
        extra = adapter.parameter_count() if adapter is not None else 0
        results = evaluate_model(model, tokenizer, session, cfg.eval, cfg.generation, extra_parameters=extra)
        if cfg.eval.text_sets:
            results["teacher_forced"] = _teacher_forced(cfg, model, tokenizer, session)
    if cfg.eval.error_samples:
        results["ffn_error"] = _ffn_errors(cfg, model, tokenizer, choice, adapter)
    samples = results.pop("samples", [])  # none when eval_samples = 0 (teacher-forced texts only)
    write_jsonl(out / "samples.jsonl", samples)
    metrics = {"config": cfg.to_params(), **results}
    if adapter is not None:
        metrics["caprese"] = _caprese_report(model, adapter)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    write_json(out / "metrics.json", metrics)  # last: a run is done once this file exists
    return metrics


def summary_table(metrics: dict):
    """The headline numbers of one run as a small pandas table (for the notebook's last cell)."""
    import pandas as pd

    row = {
        "method": metrics["config"]["method"],
        "sparsity": metrics["config"]["sparsity"],
        "stage": metrics["config"]["stage"],
        "rank": metrics["config"]["rank"],
    }
    if "math" in metrics:
        row.update(accuracy=metrics["math"]["accuracy"], mean_response_tokens=metrics["math"]["mean_response_tokens"])
    if "language" in metrics:
        row.update(
            language_accuracy=metrics["language"]["short_answer_accuracy"],
            perplexity=metrics["language"]["perplexity"],
            kl=metrics["language"]["kl_dense_to_method"],
        )
    if "coverage" in metrics:
        row["pass@N"] = metrics["coverage"]["pass_at_k"][str(metrics["coverage"]["n"])]
    for name, scores in metrics.get("teacher_forced", {}).items():
        row[f"{name}_kl"], row[f"{name}_perplexity"] = scores["kl_dense_to_method"], scores["perplexity"]
    row["model_active_fraction"] = metrics["params"].get("model_active_fraction_with_extra")
    return pd.DataFrame([row])
