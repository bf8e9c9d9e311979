"""`distill`: from prompt/response rows to a trained CapreseAdapter, through the chosen stages.

    stage="closed_form"  the reduced-rank regression of eq 7 (no training; small models)
    stage="layerwise"    eq 7 trained with Adam (optionally starting from the closed form)
    stage="e2e"          layer-wise first (or `start_from`), then eq 8 end-to-end
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import torch
from tqdm.auto import tqdm

from ..arch import ffn_blocks
from ..errors import CapreseError
from ..lowrank import RegressionAccumulator
from ..methods import resolve_layers
from ..registry import check_choice
from .adapter import CapreseAdapter
from .batches import rows_hash, tokenize_pairs
from .correction import check_rank
from .e2e import E2EConfig, train_end_to_end
from .layerwise import LayerwiseConfig, NonFiniteLoss, evaluate_layerwise_loss, train_layerwise
from .teacher import MethodChoice, Teacher

STAGES = ("closed_form", "layerwise", "e2e")


def closed_form_factors(teacher: Teacher, n_samples: int, layers: Sequence[int], hidden_size: int, rank: int,
                        *, ridge: float = LayerwiseConfig.ridge, batch_size: int = 64, progress: bool = True):
    """Per layer, the exact minimiser of eq 7 (reduced-rank regression) from one streamed teacher pass."""
    accumulators = {layer: RegressionAccumulator(hidden_size, hidden_size) for layer in layers}
    for start in tqdm(range(0, n_samples, batch_size), desc="closed form", disable=not progress, unit="batch"):
        residuals = teacher(list(range(start, min(start + batch_size, n_samples))))
        for layer in layers:
            accumulators[layer].update(*residuals[layer])
    return {layer: acc.fit(rank, ridge=ridge) for layer, acc in accumulators.items()}


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
) -> CapreseAdapter:
    """Train Caprese low-rank paths for `choice` on `rows` ({"prompt", "response"} texts).

    kind="lora" trains the eq-11 baseline instead (GRIFFIN only), with `rank` = Caprese's rank:
    its own rank r' is chosen to match Caprese's parameter count. `layer_parallel` (a
    `parallel.LayerParallel`) fans the layer-wise stage's per-layer fits out across Ray workers."""
    check_choice("stage", stage, STAGES)
    blocks = ffn_blocks(model)
    hidden = blocks[0].hidden_size
    check_rank(rank, hidden)
    if len(rows) < 1:
        raise CapreseError(f"samples {len(rows)!r} must be >= 1")
    layerwise = layerwise or LayerwiseConfig(rank=rank)
    layerwise.rank = rank
    e2e = e2e or E2EConfig()
    layers = resolve_layers(choice.layers, len(blocks))
    pairs = tokenize_pairs(tokenizer, rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if kind == "lora":
        return _distill_lora(model, tokenizer, rows, pairs, pad, choice, layers, rank, stage, layerwise, e2e,
                             base_model, micro_batch, progress)
    teacher = Teacher(model, choice, pairs, pad, micro_batch=micro_batch, tokenizer=tokenizer)
    adapter = CapreseAdapter.new(
        model, base_model, choice, layers, rank, stage=stage, data_hash=rows_hash(rows),
        training={"samples": len(rows), "layerwise": asdict(layerwise), "e2e": asdict(e2e) if stage == "e2e" else None},
    )
    losses: dict = {}
    if start_from is not None:
        if start_from.config.layers != layers or start_from.config.rank != rank:
            raise CapreseError(
                f"start_from adapter has layers {start_from.config.layers} and rank {start_from.config.rank}, "
                f"this run wants {layers} and {rank}"
            )
        adapter.corrections = {layer: c for layer, c in start_from.corrections.items()}
    elif stage == "closed_form" or layerwise.init == "closed_form":
        factors = closed_form_factors(teacher, len(pairs), layers, hidden, rank, ridge=layerwise.ridge, progress=progress)
        for layer, (L, R) in factors.items():
            adapter.corrections[layer].set_factors(L, R)
        if stage == "closed_form":
            losses["layerwise"] = _layerwise_losses(teacher, adapter, len(pairs))
    if stage != "closed_form" and start_from is None:
        initial = {layer: (c.L.detach(), c.R.detach()) for layer, c in adapter.corrections.items()} \
            if layerwise.init == "closed_form" else None
        train = train_layerwise
        if layer_parallel is not None:
            from functools import partial

            from .parallel import train_layerwise_parallel

            train = partial(train_layerwise_parallel, parallel=layer_parallel)
        try:
            result = train(teacher, len(pairs), layers, hidden, layerwise,
                           device=next(model.parameters()).device, initial=initial, progress=progress)
        except NonFiniteLoss as err:
            adapter.corrections = err.result.corrections
            raise
        adapter.corrections = result.corrections
        losses["layerwise_epochs"] = {str(k): v for k, v in result.epoch_losses.items()}
        losses["layerwise"] = _layerwise_losses(teacher, adapter, len(pairs))
    if stage == "e2e":
        result = train_end_to_end(model, choice, pairs, pad, adapter.corrections, e2e, tokenizer=tokenizer,
                                  progress=progress)
        losses["e2e_epochs"] = result.epoch_losses
        losses["e2e_initial"] = result.initial_loss
    return adapter.with_config(final_losses=losses)


def _distill_lora(model, tokenizer, rows, pairs, pad, choice, layers, rank, stage, layerwise, e2e, base_model,
                  micro_batch, progress) -> CapreseAdapter:
    from .lora import attach_lora, lora_rank_for, train_lora_layerwise

    if choice.name != "griffin":
        raise CapreseError(f"the LoRA baseline is defined for method 'griffin', not {choice.name!r}")
    if stage == "closed_form":
        raise CapreseError("the LoRA baseline has no closed form (choose stage: layerwise, e2e)")
    block = ffn_blocks(model)[0]
    lora_rank = lora_rank_for(block.hidden_size, block.intermediate_size, rank, block.gated)
    adapter = CapreseAdapter.new(
        model, base_model, choice, layers, lora_rank, kind="lora", stage=stage, data_hash=rows_hash(rows),
        training={"samples": len(rows), "matched_caprese_rank": rank, "layerwise": asdict(layerwise),
                  "e2e": asdict(e2e) if stage == "e2e" else None},
    )
    losses = {"layerwise_epochs": {str(k): v for k, v in train_lora_layerwise(
        model, choice, pairs, pad, adapter.corrections, layerwise, tokenizer=tokenizer, micro_batch=micro_batch,
        progress=progress).items()}}
    if stage == "e2e":
        result = train_end_to_end(model, choice, pairs, pad, adapter.corrections, e2e, tokenizer=tokenizer,
                                  progress=progress, attach=attach_lora)
        losses["e2e_epochs"] = result.epoch_losses
        losses["e2e_initial"] = result.initial_loss
    return adapter.with_config(final_losses=losses)


def _layerwise_losses(teacher: Teacher, adapter: CapreseAdapter, n_samples: int, batch_size: int = 64) -> dict:
    """Eq-7 loss per layer over all samples, with and without the low-rank path."""
    batches = [teacher(list(range(s, min(s + batch_size, n_samples)))) for s in range(0, n_samples, batch_size)]
    with_path = evaluate_layerwise_loss(adapter.corrections, batches)
    zero = {layer: _ZeroPath(c) for layer, c in adapter.corrections.items()}
    without = evaluate_layerwise_loss(zero, batches)
    return {str(layer): {"loss": with_path[layer], "loss_without_path": without[layer]} for layer in with_path}


class _ZeroPath(torch.nn.Module):
    """The efficient block alone (x L R = 0), for the loss the path starts from."""

    def __init__(self, like):
        super().__init__()
        self.L = like.L

    def forward(self, x):
        return torch.zeros(*x.shape[:-1], self.L.shape[0], dtype=self.L.dtype, device=x.device)
