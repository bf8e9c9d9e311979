"""`distill`: from prompt/response rows to a trained CapreseAdapter, through the chosen stages.

stage="closed_form"  the reduced-rank regression of eq 7 (no training; small models)
stage="layerwise"    eq 7 trained with Adam (optionally starting from the closed form)
stage="e2e"          layer-wise first (or `start_from`), then eq 8 end-to-end
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm.auto import tqdm

from ..arch import ffn_blocks
from ..config import KINDS, STAGES, E2EConfig, LayerwiseConfig, LoraConfig, check_rank
from ..errors import CapreseError
from ..lowrank import RegressionAccumulator
from ..methods import METHODS, resolve_layers
from ..methods.choice import MethodChoice
from ..registry import check_choice
from .adapter import CapreseAdapter
from .batches import rows_hash, tokenize_pairs
from .e2e import train_end_to_end
from .layerwise import NonFiniteLoss, streamed_layerwise_losses, train_layerwise
from .lora import attach_lora, lora_methods, lora_rank_for, train_lora_layerwise
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
    layerwise: LayerwiseConfig | None = None,
    e2e: E2EConfig | None = None,
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
    `parallel.LayerParallel`) fans the layer-wise stage's per-layer fits out across Ray workers."""
    layers = check_distill_inputs(model, choice, rank=rank, stage=stage, kind=kind, start_from=start_from)
    if kind != "lora" and lora is not None and lora.scope != LoraConfig().scope:
        raise CapreseError(f"lora_scope {lora.scope!r} is for kind 'lora' (this run's kind is {kind!r})")
    hidden = ffn_blocks(model)[0].hidden_size
    if len(rows) < 1:
        raise CapreseError(f"samples {len(rows)!r} must be >= 1")
    layerwise = replace(layerwise or LayerwiseConfig(), rank=rank)
    e2e = e2e or E2EConfig()
    pairs = tokenize_pairs(tokenizer, rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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
            lora or LoraConfig(),
        )
        return _distill_lora(run)
    teacher = Teacher(model, choice, pairs, pad, micro_batch=micro_batch, tokenizer=tokenizer)
    adapter = CapreseAdapter.new(
        model,
        base_model,
        choice,
        layers,
        rank,
        stage=stage,
        data_hash=rows_hash(rows),
        training={"samples": len(rows), "layerwise": asdict(layerwise), "e2e": asdict(e2e) if stage == "e2e" else None},
    )
    losses: dict = {}
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
    if stage != "closed_form" and start_from is None:
        initial = (
            {layer: (c.L.detach(), c.R.detach()) for layer, c in adapter.corrections.items()}
            if layerwise.init == "closed_form"
            else None
        )
        train = train_layerwise
        if layer_parallel is not None:
            from functools import partial

            from .parallel import train_layerwise_parallel

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
        adapter.corrections = result.corrections
        losses["layerwise_epochs"] = {str(k): v for k, v in result.epoch_losses.items()}
        losses["layerwise"] = _layerwise_losses(teacher, adapter, len(pairs))
    if stage == "e2e":
        result = train_end_to_end(
            model, choice, pairs, pad, adapter.corrections, e2e, tokenizer=tokenizer, progress=progress
        )
        losses["e2e_epochs"] = result.epoch_losses
        losses["e2e_initial"] = result.initial_loss
    return adapter.with_config(final_losses=losses)


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
        data_hash=rows_hash(run.rows),
        training={
            "samples": len(run.rows),
            "matched_caprese_rank": run.rank,
            "layerwise": asdict(run.layerwise),
            "e2e": asdict(run.e2e) if run.stage == "e2e" else None,
        },
    )
    losses = {
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
        }
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
        )
        losses["e2e_epochs"] = result.epoch_losses
        losses["e2e_initial"] = result.initial_loss
    return adapter.with_config(final_losses=losses)


def _layerwise_losses(teacher: Teacher, adapter: CapreseAdapter, n_samples: int) -> dict:
    """Eq-7 loss per layer over all samples, with and without the low-rank path (one streamed pass)."""
    losses = streamed_layerwise_losses(teacher, n_samples, adapter.corrections)
    return {
        str(layer): {"loss": with_path, "loss_without_path": without} for layer, (with_path, without) in losses.items()
    }
