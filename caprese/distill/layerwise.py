"""Layer-wise distillation (docs/method.md eq 7): every FFN block learns its own x L R from the
original model's FFN inputs x and the residuals FF(x) − FF̂(x) on generated tokens.

Teacher forcing makes layers independent: one teacher pass over a batch yields (x, residual)
for every chosen layer at once, and each layer takes its own Adam step on it — no
backpropagation through the model. Activations stay in memory only while they fit
`cache_gib`; beyond that the teacher pass is rerun for every batch of every epoch, so memory is
bounded by one batch whatever the data size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..config import LayerwiseConfig
from ..errors import CapreseError
from .optim import adam_with_linear_schedule
from .path import LowRankPath
from .rollback import NonFiniteLoss, Rollback

__all__ = ["LayerwiseConfig", "NonFiniteLoss", "train_layerwise", "layerwise_loss", "evaluate_layerwise_loss"]

ResidualBatch = dict[int, tuple[torch.Tensor, torch.Tensor]]
"""layer index -> (x: (T, D) FFN inputs of generated tokens, y: (T, D) residuals FF(x) − FF̂(x))."""


@dataclass
class LayerwiseResult:
    corrections: dict[int, LowRankPath]
    epoch_losses: dict[int, list[float]] = field(default_factory=dict)
    """Per layer: mean eq-7 loss of each epoch (over its batches, before each step)."""

    def final_losses(self) -> dict[int, float]:
        return {layer: losses[-1] for layer, losses in self.epoch_losses.items() if losses}


def layerwise_loss(correction: LowRankPath, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Eq 7: mean over tokens of ‖FF(x) − FF̂(x) − x L R‖²₂, on the correction's device (the
    teacher may store activations elsewhere), in the stored activations' dtype (float32 copies)."""
    device = correction.L.device
    x, residual = x.to(device, non_blocking=True), residual.to(device, non_blocking=True)
    return (residual.to(x.dtype) - correction(x)).float().pow(2).sum(-1).mean()


class ResidualCache:
    """Teacher outputs per sample batch, kept while they fit the budget."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.used = 0
        self.batches: dict[int, ResidualBatch] = {}
        self.overflowed = False

    def get(self, key: int) -> ResidualBatch | None:
        return self.batches.get(key)

    def put(self, key: int, batch: ResidualBatch) -> None:
        size = sum(x.numel() * x.element_size() + y.numel() * y.element_size() for x, y in batch.values())
        if self.overflowed or self.used + size > self.budget:
            self.overflowed = True
            self.batches.clear()  # a partial cache would only cost memory: recompute everything
            self.used = 0
            return
        self.batches[key] = batch
        self.used += size


def train_layerwise(
    teacher: Callable[[Sequence[int]], ResidualBatch],
    n_samples: int,
    layers: Sequence[int],
    hidden_size: int,
    config: LayerwiseConfig,
    *,
    device=None,
    initial: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: bool = True,
) -> LayerwiseResult:
    """Train one LowRankPath per layer on residuals from `teacher(sample_indices)`.

    `initial` optionally gives starting (L, R) per layer (e.g. the closed form).
    """
    config.check(hidden_size)
    if n_samples < 1:
        raise CapreseError(f"samples {n_samples!r} must be >= 1")
    corrections = {
        layer: LowRankPath(hidden_size, config.rank, device=device, seed=config.seed + layer) for layer in layers
    }
    for layer, (L, R) in (initial or {}).items():
        corrections[layer].set_factors(L, R)
    steps_per_epoch = math.ceil(n_samples / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizers = {
        layer: adam_with_linear_schedule(c.parameters(), config.lr, total, config.warmup_fraction)
        for layer, c in corrections.items()
    }
    cache = ResidualCache(config.cache_gib * 2**30)
    result = LayerwiseResult(corrections=corrections, epoch_losses={layer: [] for layer in layers})
    rollback = Rollback(corrections)
    bar = tqdm(total=total, desc="layer-wise distillation", disable=not progress, unit="step")
    generator = torch.Generator().manual_seed(config.seed)
    # fixed sample batches, visited in a new order each epoch, so the cache keys stay valid
    batches = [list(range(s, min(s + config.batch_size, n_samples))) for s in range(0, n_samples, config.batch_size)]
    for epoch in range(config.epochs):
        sums = {layer: 0.0 for layer in layers}
        for key in torch.randperm(len(batches), generator=generator).tolist():
            residuals = cache.get(key)
            if residuals is None:
                residuals = teacher(batches[key])
                cache.put(key, residuals)
            for layer in layers:
                x, y = residuals[layer]
                optimizer, scheduler = optimizers[layer]
                loss = layerwise_loss(corrections[layer], x, y)
                if not torch.isfinite(loss):
                    bar.close()
                    rollback.fail(f"layer {layer}: eq-7 loss became {loss.item()} in epoch {epoch + 1}", config.lr, result)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                sums[layer] += loss.item() * len(batches[key])
            bar.update(1)
        for layer in layers:
            result.epoch_losses[layer].append(sums[layer] / n_samples)
        rollback.keep()
        bar.set_postfix(loss=f"{sum(result.final_losses().values()) / len(layers):.4g}")
    bar.close()
    return result


def evaluate_layerwise_loss(
    corrections: dict[int, LowRankPath], residual_batches: Iterable[ResidualBatch]
) -> dict[int, float]:
    """Eq-7 loss per layer over whole batches (token-weighted), without training."""
    totals: dict[int, float] = {layer: 0.0 for layer in corrections}
    counts: dict[int, int] = {layer: 0 for layer in corrections}
    with torch.no_grad():
        for batch in residual_batches:
            for layer, correction in corrections.items():
                x, y = batch[layer]
                totals[layer] += layerwise_loss(correction, x, y).item() * x.shape[0]
                counts[layer] += x.shape[0]
    return {layer: totals[layer] / max(1, counts[layer]) for layer in corrections}

