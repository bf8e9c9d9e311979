"""`distill`: from prompt/response rows to a trained CapreseAdapter, through the chosen stages.

stage="closed_form"  the reduced-rank regression of eq 7 (no training; small models)
stage="layerwise"    eq 7 trained with Adam (optionally starting from the closed form)
stage="e2e"          layer-wise first (or `start_from`), then eq 8 end-to-end
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import torch
from tqdm.auto import tqdm

from ..arch import ffn_blocks
from ..config import KINDS, STAGES, E2EConfig, LayerwiseConfig, LoraConfig, check_rank
from ..errors import CapreseError
from ..lowrank import RegressionAccumulator
from ..methods import METHODS, resolve_layers
from ..methods.choice import MethodChoice
from ..models.recipes import training_configs
from ..registry import check_choice
from .adapter import CapreseAdapter
from .batches import rows_hash, tokenize_pairs
from .e2e import train_end_to_end
from .layerwise import HeldOutLosses, NonFiniteLoss, streamed_layerwise_losses, train_layerwise
from .lora import attach_lora, lora_methods, lora_rank_for, train_lora_layerwise
from .parallel import train_layerwise_parallel
from .teacher import Teacher

__all__ = ["STAGES", "distill", "closed_form_factors"]


def closed_form_factors(
    teacher: Teacher,
    n_samples: int,
    layers: Sequence[int],
    hidden_size: int,
    rank: int,
    *,
    ridge: float = LayerwiseConfig.ridge,
    batch_size: int = 64,
    progress: bool = True,
):
    """Per layer, the exact minimiser of eq 7 (reduced-rank regression) from one streamed teacher pass."""
    accumulators = {layer: RegressionAccumulator(hidden_size, hidden_size) for layer in layers}

    def consume(layer, x, residual):
        if layer in accumulators:
            accumulators[layer].update(x, residual)

    for start in tqdm(range(0, n_samples, batch_size), desc="closed form", disable=not progress, unit="batch"):
        teacher.stream(list(range(start, min(start + batch_size, n_samples))), consume)
    return {layer: acc.fit(rank, ridge=ridge) for layer, acc in accumulators.items()}


def check_distill_inputs(
    model,
    choice: MethodChoice,
    *,
    rank: int,
    stage: str = "layerwise",
    kind: str = "caprese",
    start_from: CapreseAdapter | None = None,
) -> list[int]:
    """Everything about a distillation that the model decides, checked before any teacher
    response is generated: stage and kind, a method to correct, rank 1..D, the layers, the LoRA
    baseline's limits and a `start_from` adapter's layers and rank. Returns the layer indices."""
    check_choice("stage", stage, STAGES)
    check_choice("kind", kind, KINDS)
    if choice.name == "dense":
        correctable = ", ".join(name for name in METHODS.names() if name != "dense")
        raise CapreseError(f"method 'dense' has nothing for Caprese to correct (choose from: {correctable})")
    blocks = ffn_blocks(model)
    check_rank(rank, blocks[0].hidden_size)
    layers = resolve_layers(choice.layers, len(blocks))
    if kind == "lora":
        if not METHODS.get(choice.name).defines("with_lora"):
            raise CapreseError(
                f"the LoRA baseline is not defined for method {choice.name!r} "
                f"(choose from: {', '.join(lora_methods())})"
            )
        if stage == "closed_form":
            raise CapreseError("the LoRA baseline has no closed form (choose stage: layerwise, e2e)")
        if start_from is not None:
            raise CapreseError("start_from is for Caprese paths; the LoRA baseline always trains from its own start")
    if start_from is not None and (start_from.config.layers != layers or start_from.config.rank != rank):
        raise CapreseError(
            f"start_from adapter has layers {start_from.config.layers} and rank {start_from.config.rank}, "
            f"this run wants {layers} and {rank}"
        )
    return layers


def distill(
    model,
    tokenizer,
    rows: Sequence[dict],
    choice: MethodChoice,
    *,
    rank: int,
    stage: str = "layerwise",
    layerwise: LayerwiseConfig | dict | None = None,
    e2e: E2EConfig | dict | None = None,
    base_model: str = "unknown",
    start_from: CapreseAdapter | None = None,
    micro_batch: int = 16,
    progress: bool = True,
    kind: str = "caprese",
    layer_parallel=None,
    lora: LoraConfig | None = None,
) -> CapreseAdapter:
    """Train Caprese low-rank paths for `choice` on `rows` ({"prompt", "response"} texts).

    kind="lora" trains the eq-11 baseline instead (on a method that defines it, `Method.with_lora`),
    with `rank` = Caprese's rank: its own rank r' is chosen to match Caprese's parameter count;
    `lora` (a `LoraConfig`) sets its scope (kept neurons only, or the full matrices).
    `layerwise` and `e2e` are not modified (the run's rank goes into a copy). `layer_parallel` (a
    `parallel.LayerParallel`) fans the layer-wise stage's per-layer fits out across Ray workers.

    Settings: a built-in model (by `base_model`'s name, or the folder `model` was loaded from)
    brings its distillation recipe (caprese.models.recipes), other models get caprese.config's
    defaults (the paper's). `layerwise` / `e2e` as a config object are used as they are; as a
    dict, its values replace the recipe's (e.g. e2e={"lr": 1e-4}); None takes the recipe. A run
    that uses a recipe prints one line saying which values it took.

    `layerwise.validation_fraction` of the rows (drawn with `layerwise.seed`) are held out: never
    trained on, they give the eq-7 and eq-8 validation losses after every epoch (`final_losses`)
    and early stopping (`patience`)."""
    layers = check_distill_inputs(model, choice, rank=rank, stage=stage, kind=kind, start_from=start_from)
    if kind != "lora" and lora is not None and lora.scope != LoraConfig().scope:
        raise CapreseError(f"lora_scope {lora.scope!r} is for kind 'lora' (this run's kind is {kind!r})")
    hidden = ffn_blocks(model)[0].hidden_size
    if len(rows) < 1:
        raise CapreseError(f"samples {len(rows)!r} must be >= 1")
    layerwise, e2e, line = training_configs(base_model, layerwise, e2e, model=model, style="api")
    if line:
        print(line)
    layerwise = replace(layerwise, rank=rank)
    held_out = validation_indices(len(rows), layerwise.validation_fraction, layerwise.seed)
    all_rows = rows
    skip = set(held_out)
    rows = [row for i, row in enumerate(all_rows) if i not in skip]
    validation_pairs = tokenize_pairs(tokenizer, [all_rows[i] for i in held_out])
    pairs = tokenize_pairs(tokenizer, rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    validation = {"rows": len(held_out), "fraction": layerwise.validation_fraction, "indices": held_out}
    if kind == "lora":
        run = _Run(
            model,
            tokenizer,
            rows,
            pairs,
            pad,
            choice,
            layers,
            rank,
            stage,
            layerwise,
            e2e,
            base_model,
            micro_batch,
            progress,
            validation_pairs,
            validation,
            all_rows,
            lora or LoraConfig(),
        )
        return _distill_lora(run)
    teacher = Teacher(model, choice, pairs, pad, micro_batch=micro_batch, tokenizer=tokenizer)
    checker = (
        Teacher(model, choice, validation_pairs, pad, micro_batch=micro_batch, tokenizer=tokenizer)
        if validation_pairs
        else None
    )
    adapter = CapreseAdapter.new(
        model,
        base_model,
        choice,
        layers,
        rank,
        stage=stage,
        data_hash=rows_hash(all_rows),
        training={
            "samples": len(all_rows),
            "trained_samples": len(rows),
            "validation": validation,
            "layerwise": asdict(layerwise),
            "e2e": asdict(e2e) if stage == "e2e" else None,
        },
    )
    losses: dict = {"validation_rows": len(held_out)}
    if start_from is not None:
        # copies of the loaded float32 masters on the model's device: start_from itself stays as loaded
        device = next(model.parameters()).device
        adapter.corrections = {
            layer: copy.deepcopy(c).to(device=device, dtype=torch.float32)
            for layer, c in start_from.corrections.items()
        }
    elif stage == "closed_form" or layerwise.init == "closed_form":
        factors = closed_form_factors(
            teacher, len(pairs), layers, hidden, rank, ridge=layerwise.ridge, progress=progress
        )
        for layer, (L, R) in factors.items():
            adapter.corrections[layer].set_factors(L, R)
        if stage == "closed_form":
            losses["layerwise"] = _layerwise_losses(teacher, adapter, len(pairs))
            if checker is not None:
                losses["layerwise_validation"] = _layerwise_losses(checker, adapter, len(validation_pairs))
    if stage != "closed_form" and start_from is None:
        initial = (
            {layer: (c.L.detach(), c.R.detach()) for layer, c in adapter.corrections.items()}
            if layerwise.init == "closed_form"
            else None
        )
        train = train_layerwise
        scorer = None
        if checker is not None:
            scorer = HeldOutLosses(checker, len(validation_pairs), layerwise.cache_gib)
            train = partial(train_layerwise, validate=scorer)
        if layer_parallel is not None:  # per-epoch validation stays serial-only; the final one is below
            train = partial(train_layerwise_parallel, parallel=layer_parallel)
        try:
            result = train(
                teacher,
                len(pairs),
                layers,
                hidden,
                layerwise,
                device=next(model.parameters()).device,
                initial=initial,
                progress=progress,
            )
        except NonFiniteLoss as err:
            adapter.corrections = err.result.corrections
            raise
        finally:
            if scorer is not None:
                scorer.close()
        adapter.corrections = result.corrections
        losses["layerwise_epochs"] = {str(k): v for k, v in result.epoch_losses.items()}
        if result.validation_losses:
            losses["layerwise_validation_epochs"] = {str(k): v for k, v in result.validation_losses.items()}
        if result.stopped_epoch is not None:
            losses["layerwise_stopped_epoch"] = result.stopped_epoch
        losses["layerwise"] = _layerwise_losses(teacher, adapter, len(pairs))
        if checker is not None:
            losses["layerwise_validation"] = _layerwise_losses(checker, adapter, len(validation_pairs))
    if stage == "e2e":
        result = train_end_to_end(
            model,
            choice,
            pairs,
            pad,
            adapter.corrections,
            e2e,
            tokenizer=tokenizer,
            progress=progress,
            validation_pairs=validation_pairs,
        )
        losses.update(_e2e_losses(result))
    return adapter.with_config(final_losses=losses)


def validation_indices(n_rows: int, fraction: float, seed: int) -> list[int]:
    """The rows held out for validation: round(fraction · n) of them (at least 1 when fraction > 0),
    drawn with `seed`, sorted; none when that would leave nothing to train on."""
    if fraction <= 0 or n_rows < 2:
        return []
    count = min(max(1, round(fraction * n_rows)), n_rows - 1)
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:count])


def _e2e_losses(result) -> dict:
    losses = {"e2e_epochs": result.epoch_losses, "e2e_initial": result.initial_loss}
    if result.validation_losses:
        losses["e2e_validation_epochs"] = result.validation_losses
        losses["e2e_validation_initial"] = result.initial_validation_loss
    if result.stopped_epoch is not None:
        losses["e2e_stopped_epoch"] = result.stopped_epoch
    return losses


@dataclass
class _Run:
    """What one distillation run trains on and with (so helpers take one argument, not fourteen)."""

    model: object
    tokenizer: object
    rows: Sequence[dict]
    pairs: list
    pad: int
    choice: MethodChoice
    layers: list[int]
    rank: int
    stage: str
    layerwise: LayerwiseConfig
    e2e: E2EConfig
    base_model: str
    micro_batch: int
    progress: bool
    validation_pairs: list
    validation: dict
    all_rows: Sequence[dict]
    lora: LoraConfig = field(default_factory=LoraConfig)


def _distill_lora(run: _Run) -> CapreseAdapter:
    block = ffn_blocks(run.model)[0]  # the method, stage and rank were checked by check_distill_inputs
    lora_rank = lora_rank_for(block.hidden_size, block.intermediate_size, run.rank, block.gated)
    adapter = CapreseAdapter.new(
        run.model,
        run.base_model,
        run.choice,
        run.layers,
        lora_rank,
        kind="lora",
        lora_scope=run.lora.scope,
        stage=run.stage,
        data_hash=rows_hash(run.all_rows),
        training={
            "samples": len(run.all_rows),
            "trained_samples": len(run.rows),
            "validation": run.validation,
            "matched_caprese_rank": run.rank,
            "layerwise": asdict(run.layerwise),
            "e2e": asdict(run.e2e) if run.stage == "e2e" else None,
        },
    )
    losses = {
        "validation_rows": len(run.validation_pairs),
        "layerwise_epochs": {
            str(k): v
            for k, v in train_lora_layerwise(
                run.model,
                run.choice,
                run.pairs,
                run.pad,
                adapter.corrections,
                run.layerwise,
                tokenizer=run.tokenizer,
                micro_batch=run.micro_batch,
                progress=run.progress,
            ).items()
        },
    }
    if run.stage == "e2e":
        result = train_end_to_end(
            run.model,
            run.choice,
            run.pairs,
            run.pad,
            adapter.corrections,
            run.e2e,
            tokenizer=run.tokenizer,
            progress=run.progress,
            attach=attach_lora,
            validation_pairs=run.validation_pairs,
        )
        losses.update(_e2e_losses(result))
    return adapter.with_config(final_losses=losses)


def _layerwise_losses(teacher: Teacher, adapter: CapreseAdapter, n_samples: int) -> dict:
    """Eq-7 loss per layer over all samples, with and without the low-rank path (one streamed pass)."""
    losses = streamed_layerwise_losses(teacher, n_samples, adapter.corrections)
    return {
        str(layer): {"loss": with_path, "loss_without_path": without} for layer, (with_path, without) in losses.items()
    }
