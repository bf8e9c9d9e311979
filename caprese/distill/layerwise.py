"""Layer-wise distillation (METHOD.md eq 7): every FFN block learns its own x L R from the
original model's FFN inputs x and the residuals FF(x) − FF̂(x) on generated tokens.

Teacher forcing makes layers independent: one teacher pass over a batch yields (x, residual)
for every chosen layer at once, and each layer takes its own Adam step on it — no
backpropagation through the model. Activations stay in memory only while they fit
`cache_gib`; beyond that the teacher pass is rerun for every batch of every epoch, so memory is
bounded by one batch whatever the data size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import CapreseError
from ..registry import check_choice, check_range
from .correction import LowRankCorrection, check_rank
from .optim import adam_with_linear_schedule

ResidualBatch = dict[int, tuple[torch.Tensor, torch.Tensor]]
"""layer index -> (x: (T, D) FFN inputs of generated tokens, y: (T, D) residuals FF(x) − FF̂(x))."""


@dataclass
class LayerwiseConfig:
    rank: int = 64
    lr: float = 1e-3
    batch_size: int = 128
    """Samples (sequences) per optimizer step; each step uses all their generated tokens."""
    epochs: int = 20
    warmup_fraction: float = 0.02
    init: str = "random"
    """'random' (R = 0, L small random) or 'closed_form' (start from the reduced-rank regression)."""
    ridge: float = 1e-2
    """Closed form's ridge, relative to the mean eigenvalue of XᵀX. Why this large: the path sees
    only math inputs; an unregularised fit amplifies directions that math barely uses, and other
    text does (measured on toy-math, GRIFFIN 50% first half, r 16: ridge 1e-6 took the language
    task from 99.5% to 2%, 1e-2 kept it at 98% and fit math better)."""
    seed: int = 0
    cache_gib: float = 2.0
    """Keep teacher activations in memory up to this size; beyond it, recompute them per batch."""

    def check(self, hidden_size: int) -> None:
        check_rank(self.rank, hidden_size)
        check_range("lr", self.lr, 0.0, math.inf, low_open=True, high_open=True)
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CapreseError(f"{name} {value!r} must be an integer >= 1")
        check_choice("init", self.init, ("random", "closed_form"))
        check_range("ridge", self.ridge, 0.0, math.inf, high_open=True)


@dataclass
class LayerwiseResult:
    corrections: dict[int, LowRankCorrection]
    epoch_losses: dict[int, list[float]] = field(default_factory=dict)
    """Per layer: mean eq-7 loss of each epoch (over its batches, before each step)."""

    def final_losses(self) -> dict[int, float]:
        return {layer: losses[-1] for layer, losses in self.epoch_losses.items() if losses}


def layerwise_loss(correction: LowRankCorrection, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
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
    """Train one LowRankCorrection per layer on residuals from `teacher(sample_indices)`.

    `initial` optionally gives starting (L, R) per layer (e.g. the closed form).
    """
    config.check(hidden_size)
    if n_samples < 1:
        raise CapreseError(f"samples {n_samples!r} must be >= 1")
    corrections = {
        layer: LowRankCorrection(hidden_size, config.rank, device=device, seed=config.seed + layer) for layer in layers
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
    last_good = {layer: copy.deepcopy(c.state_dict()) for layer, c in corrections.items()}
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
                    for good_layer, state in last_good.items():
                        corrections[good_layer].load_state_dict(state)
                    bar.close()
                    raise NonFiniteLoss(
                        f"layer {layer}: eq-7 loss became {loss.item()} in epoch {epoch + 1}; "
                        f"kept the factors of the last finite epoch (lower lr={config.lr})",
                        result,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                sums[layer] += loss.item() * len(batches[key])
            bar.update(1)
        for layer in layers:
            result.epoch_losses[layer].append(sums[layer] / n_samples)
        last_good = {layer: copy.deepcopy(c.state_dict()) for layer, c in corrections.items()}
        bar.set_postfix(loss=f"{sum(result.final_losses().values()) / len(layers):.4g}")
    bar.close()
    return result


class NonFiniteLoss(CapreseError):
    """Training diverged; `.result` holds the factors of the last finite epoch."""

    def __init__(self, message: str, result: LayerwiseResult):
        super().__init__(message)
        self.result = result


def evaluate_layerwise_loss(
    corrections: dict[int, LowRankCorrection], residual_batches: Iterable[ResidualBatch]
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


def config_dict(config: LayerwiseConfig) -> dict:
    return asdict(config)
