"""Layer-wise distillation (docs/method.md eq 7): every FFN block learns its own x L R from the
original model's FFN inputs x and the residuals FF(x) − FF̂(x) on generated tokens.

Teacher forcing makes layers independent: one teacher pass over a batch yields (x, residual)
for every chosen layer at once, and each layer takes its own Adam step on it — no
backpropagation through the model. Activations stream: each layer's fit consumes a micro-batch
as soon as the teacher produces it (gradients accumulate over the batch, one Adam step per
batch), so memory holds one micro-batch of one layer, never a whole batch nor the data set.
Later epochs replay what the first wrote to a temporary folder on disk (up to `cache_gib`;
beyond that the teacher pass is rerun for the batches that did not fit).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ..config import LayerwiseConfig
from ..errors import CapreseError
from .optim import adam_with_linear_schedule
from .path import LowRankPath
from .rollback import NonFiniteLoss, Rollback

__all__ = [
    "LayerwiseConfig",
    "NonFiniteLoss",
    "train_layerwise",
    "layerwise_loss",
    "evaluate_layerwise_loss",
    "streamed_layerwise_losses",
]

ResidualBatch = dict[int, tuple[torch.Tensor, torch.Tensor]]
"""layer index -> (x: (T, D) FFN inputs of generated tokens, y: (T, D) residuals FF(x) − FF̂(x))."""

ResidualSink = Callable[[int, torch.Tensor, torch.Tensor], None]
"""sink(layer, x, residual): one micro-batch of one layer, (N, D) each, on the model's device."""


class StreamingTeacher(Protocol):
    def stream(self, indices: Sequence[int], sink: ResidualSink) -> None:
        """Run the teacher over samples `indices`, handing each layer's micro-batches to `sink`."""


@dataclass
class LayerwiseResult:
    corrections: dict[int, LowRankPath]
    epoch_losses: dict[int, list[float]] = field(default_factory=dict)
    """Per layer: mean eq-7 loss of each epoch (over its batches, before each step)."""
    validation_losses: dict[int, list[float]] = field(default_factory=dict)
    """Per layer: eq-7 loss on the held-out rows after each epoch (empty without a validation split)."""
    stopped_epoch: int | None = None
    """The epoch whose factors were kept when early stopping ended training (1-based), else None."""

    def final_losses(self) -> dict[int, float]:
        return {layer: losses[-1] for layer, losses in self.epoch_losses.items() if losses}


def residual_sum(correction: LowRankPath, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Σ over tokens of ‖FF(x) − FF̂(x) − x L R‖²₂, with the batch moved to the correction's device."""
    device = correction.L.device
    x = x.to(device, non_blocking=True)
    residual = residual.to(device, correction.L.dtype, non_blocking=True)
    return (residual - correction(x)).pow(2).sum()


def layerwise_loss(correction: LowRankPath, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Eq 7: mean over tokens of ‖FF(x) − FF̂(x) − x L R‖²₂."""
    return residual_sum(correction, x, residual) / x.shape[0]


class ActivationSpill:
    """Teacher micro-batches of each sample batch, written once into a temporary folder and read back
    in the same order. Reads go through plain file reads into a buffer that lives for one micro-batch
    (not a memory map, whose touched pages would count as resident), so memory stays flat; the
    operating system's page cache keeps recently written files fast."""

    def __init__(self, budget_bytes: float, directory: str | None = None):
        self.budget = budget_bytes
        self.used = 0
        self.folder = Path(tempfile.mkdtemp(prefix="caprese-teacher-", dir=directory)) if budget_bytes > 0 else None
        self.index: dict[int, list[tuple[int, int, int, torch.dtype, torch.dtype]]] = {}
        self.full = budget_bytes <= 0
        self._open: tuple[int, object, list] | None = None

    def __contains__(self, key: int) -> bool:
        return key in self.index

    def recording(self, key: int) -> bool:
        """Start writing batch `key`; False when the budget (or the disk) is already full."""
        if self.full:
            return False
        self._open = (key, open(self.folder / f"{key}.bin", "wb"), [])
        return True

    def write(self, layer: int, x: torch.Tensor, residual: torch.Tensor) -> None:
        if self._open is None:
            return
        _, handle, records = self._open
        size = x.numel() * x.element_size() + residual.numel() * residual.element_size()
        if self.used + size > self.budget or shutil.disk_usage(self.folder).free < size + 2**30:
            self.full = True  # keep the batches written so far; the rest reruns the teacher
            self._discard()
            return
        for t in (x, residual):
            handle.write(t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().data)
        records.append((layer, x.shape[0], x.shape[1], x.dtype, residual.dtype))
        self.used += size

    def finish(self) -> None:
        if self._open is not None:
            key, handle, records = self._open
            handle.close()
            self.index[key] = records
            self._open = None

    def _discard(self) -> None:
        key, handle, records = self._open
        handle.close()
        (self.folder / f"{key}.bin").unlink(missing_ok=True)
        self.used -= sum(n * d * (_size(a) + _size(b)) for _, n, d, a, b in records)
        self._open = None

    def replay(self, key: int, sink: ResidualSink) -> None:
        with open(self.folder / f"{key}.bin", "rb") as handle:
            for layer, n, d, x_dtype, y_dtype in self.index[key]:
                x, y = (_read(handle, n, d, dtype) for dtype in (x_dtype, y_dtype))
                sink(layer, x, y)

    def close(self) -> None:
        if self._open is not None:
            self._discard()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.index = {}


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _read(handle, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    buffer = torch.empty(rows * cols * _size(dtype), dtype=torch.uint8)
    if handle.readinto(memoryview(buffer.numpy())) != buffer.numel():
        raise CapreseError(f"teacher activation file {handle.name} is truncated")
    return buffer.view(dtype).view(rows, cols)


def train_layerwise(
    teacher: StreamingTeacher,
    n_samples: int,
    layers: Sequence[int],
    hidden_size: int,
    config: LayerwiseConfig,
    *,
    device=None,
    initial: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: bool = True,
    validate: Callable[[dict[int, LowRankPath]], dict[int, float]] | None = None,
) -> LayerwiseResult:
    """Train one LowRankPath per layer on residuals streamed from `teacher.stream(indices, sink)`.

    `initial` optionally gives starting (L, R) per layer (e.g. the closed form). `validate(corrections)`
    (eq-7 loss per layer on held-out rows) runs after every epoch; with `config.patience` > 0,
    training stops once the summed validation loss has not improved for that many epochs, and the
    best epoch's factors are kept.
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
    # one epoch needs no replay; a run of one batch replays nothing either way, but it costs nothing
    spill = ActivationSpill(config.cache_gib * 2**30 if config.epochs > 1 else 0)
    result = LayerwiseResult(corrections=corrections, epoch_losses={layer: [] for layer in layers})
    rollback = Rollback(corrections)
    bar = tqdm(total=total, desc="layer-wise distillation", disable=not progress, unit="step")
    generator = torch.Generator().manual_seed(config.seed)
    # fixed sample batches, visited in a new order each epoch, so the spilled batches stay valid
    batches = [list(range(s, min(s + config.batch_size, n_samples))) for s in range(0, n_samples, config.batch_size)]
    sums: dict[int, torch.Tensor] = {}
    tokens: dict[int, int] = {}
    stopper = EarlyStopping(corrections, config.patience, "layer-wise")

    def consume(layer: int, x: torch.Tensor, residual: torch.Tensor) -> None:
        if layer not in corrections:
            return
        spill.write(layer, x, residual)
        with torch.enable_grad():
            part = residual_sum(corrections[layer], x, residual)
            part.backward()  # gradients of the batch's sum accumulate; scaled to its mean below
        sums[layer] = sums[layer] + part.detach()
        tokens[layer] += x.shape[0]

    try:
        for epoch in range(config.epochs):
            epoch_sums = {layer: 0.0 for layer in layers}
            for key in torch.randperm(len(batches), generator=generator).tolist():
                for layer, correction in corrections.items():
                    correction.zero_grad(set_to_none=True)
                    sums[layer] = torch.zeros((), device=correction.L.device, dtype=correction.L.dtype)
                    tokens[layer] = 0
                if key in spill:
                    spill.replay(key, consume)
                else:
                    recording = spill.recording(key)
                    teacher.stream(batches[key], consume)
                    if recording:
                        spill.finish()
                # one device sync per step for every layer's loss
                losses = torch.stack([sums[layer].float() / max(tokens[layer], 1) for layer in layers]).tolist()
                for layer, loss in zip(layers, losses):
                    if not math.isfinite(loss) or tokens[layer] == 0:
                        what = loss if tokens[layer] else "undefined (no tokens)"
                        rollback.fail(f"layer {layer}: eq-7 loss became {what} in epoch {epoch + 1}", config.lr, result)
                for layer, loss in zip(layers, losses):
                    for p in corrections[layer].parameters():
                        if p.grad is not None:
                            p.grad /= tokens[layer]
                    optimizer, scheduler = optimizers[layer]
                    optimizer.step()
                    scheduler.step()
                    epoch_sums[layer] += loss * len(batches[key])
                bar.update(1)
            for layer in layers:
                result.epoch_losses[layer].append(epoch_sums[layer] / n_samples)
            rollback.keep()
            train_loss = sum(result.final_losses().values()) / len(layers)
            bar.set_postfix(loss=f"{train_loss:.4g}")
            if validate is not None and stopper.watch(epoch, validate(corrections), result, bar, train_loss):
                break
    finally:
        bar.close()
        spill.close()
    return result


class HeldOutLosses:
    """Eq-7 loss per layer on held-out samples, measured after every epoch: the teacher runs over
    them once, later epochs replay its activations from disk (within `cache_gib`, like training)."""

    def __init__(self, teacher: StreamingTeacher, n_samples: int, cache_gib: float, *, chunk: int = 64):
        self.teacher = teacher
        self.chunks = [list(range(s, min(s + chunk, n_samples))) for s in range(0, n_samples, chunk)]
        self.spill = ActivationSpill(cache_gib * 2**30)

    def __call__(self, corrections: dict[int, LowRankPath]) -> dict[int, float]:
        sums = {layer: 0.0 for layer in corrections}
        counts = {layer: 0 for layer in corrections}

        def consume(layer: int, x: torch.Tensor, residual: torch.Tensor) -> None:
            if layer not in corrections:
                return
            self.spill.write(layer, x, residual)
            sums[layer] += residual_sum(corrections[layer], x, residual).double().item()
            counts[layer] += x.shape[0]

        with torch.no_grad():
            for key, indices in enumerate(self.chunks):
                if key in self.spill:
                    self.spill.replay(key, consume)
                else:
                    recording = self.spill.recording(key)
                    self.teacher.stream(indices, consume)
                    if recording:
                        self.spill.finish()
        return {layer: sums[layer] / max(1, counts[layer]) for layer in corrections}

    def close(self) -> None:
        self.spill.close()


class EarlyStopping:
    """Validation loss after each epoch: recorded, shown, and (patience > 0) the best epoch's
    factors kept once `patience` epochs in a row brought no lower loss."""

    def __init__(self, modules: dict[int, torch.nn.Module], patience: int, stage: str):
        self.modules, self.patience, self.stage = modules, patience, stage
        self.best, self.best_epoch, self.best_state = math.inf, -1, None

    def start(self, loss: float) -> None:
        """The loss before training (epoch 0): training must beat it to be kept."""
        self.best, self.best_epoch = loss, -1
        self._snapshot()

    def _snapshot(self) -> None:
        if self.patience:
            self.best_state = {
                key: {name: t.detach().clone() for name, t in module.state_dict().items()}
                for key, module in self.modules.items()
            }

    def watch(self, epoch: int, losses, result, bar, train_loss: float) -> bool:
        """Record epoch `epoch`'s validation `losses` (layer -> loss, or one float); True: stop now."""
        if isinstance(losses, dict):
            for layer, loss in losses.items():
                result.validation_losses.setdefault(layer, []).append(loss)
            total = sum(losses.values()) / max(len(losses), 1)
        else:
            result.validation_losses.append(losses)
            total = losses
        bar.set_postfix(loss=f"{train_loss:.4g}", validation=f"{total:.4g}")
        if not getattr(bar, "disable", False):
            bar.write(f"{self.stage} epoch {epoch + 1}: train loss {train_loss:.4g}, validation loss {total:.4g}")
        if total < self.best:
            self.best, self.best_epoch = total, epoch
            self._snapshot()
            return False
        if self.patience and epoch - self.best_epoch >= self.patience:
            for key, state in self.best_state.items():
                self.modules[key].load_state_dict(state)
            result.stopped_epoch = self.best_epoch + 1
            bar.write(
                f"{self.stage}: validation loss has not improved for {self.patience} epoch(s); "
                f"stopped after epoch {epoch + 1}, kept epoch {self.best_epoch + 1} ({self.best:.4g})"
            )
            return True
        return False


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
                totals[layer] += residual_sum(correction, x, y).item()
                counts[layer] += x.shape[0]
    return {layer: totals[layer] / max(1, counts[layer]) for layer in corrections}


def streamed_layerwise_losses(
    teacher: StreamingTeacher, n_samples: int, corrections: dict[int, LowRankPath], *, chunk: int = 64
) -> dict[int, tuple[float, float]]:
    """Per layer, (eq-7 loss with the path, without it) over all samples, token-weighted, from one
    streamed teacher pass (sums stay on the device until the end)."""
    device = next(iter(corrections.values())).L.device
    with_path = {layer: torch.zeros((), dtype=torch.float64, device=device) for layer in corrections}
    without = {layer: torch.zeros((), dtype=torch.float64, device=device) for layer in corrections}
    counts = {layer: 0 for layer in corrections}

    def consume(layer: int, x: torch.Tensor, residual: torch.Tensor) -> None:
        if layer not in corrections:
            return
        correction = corrections[layer]
        with_path[layer] += residual_sum(correction, x, residual).double()
        without[layer] += residual.to(device, correction.L.dtype).pow(2).sum().double()
        counts[layer] += x.shape[0]

    with torch.no_grad():
        for start in range(0, n_samples, chunk):
            teacher.stream(list(range(start, min(start + chunk, n_samples))), consume)
    return {
        layer: (with_path[layer].item() / max(1, counts[layer]), without[layer].item() / max(1, counts[layer]))
        for layer in corrections
    }
