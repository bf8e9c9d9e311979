"""One teacher pass: the original model's FFN inputs and the residuals FF(x) − FF̂(x) of every
chosen layer, on generated tokens, for a batch of teacher-forced samples.

The method runs in teacher (shadow) mode: every layer outputs the original FFN, so each layer's
input is the original model's (eq 7's x), while FF̂ is computed with each sample's own GRIFFIN
selection / CATS τ from its prompt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .batches import TokenizedPair, collate
from .layerwise import ResidualBatch


@dataclass
class MethodChoice:
    """Which efficient FFN Caprese corrects: a registered method, its sparsity, layers and options."""

    name: str
    sparsity: float
    layers: Any = "all"
    options: dict = field(default_factory=dict)
    calibration: Any = None
    """Calibration texts or precomputed CalibrationStats for methods that need them."""

    @classmethod
    def from_spec(cls, spec) -> "MethodChoice":
        """From the CLI's validated `MethodSpec` (caprese.methods.cli_options)."""
        return cls(spec.name, spec.sparsity, spec.layers, dict(spec.options), spec.calibration_texts())

    @contextlib.contextmanager
    def apply(self, model, tokenizer=None, **kwargs):
        """`apply_method` with this choice; calibration statistics are computed once and reused."""
        from ..methods import apply_method

        with apply_method(
            model, self.name, self.sparsity, self.layers,
            calibration=self.calibration, tokenizer=tokenizer, progress=False, **self.options, **kwargs,
        ) as session:
            if session.calibration is not None:
                self.calibration = session.calibration
            yield session

    def describe(self) -> dict:
        return {"method": self.name, "sparsity": self.sparsity, "layers": self.layers, "options": dict(self.options)}


class ResidualCollector:
    """Gathers (x, residual) per layer from the wrappers' teacher callback."""

    def __init__(self, dtype=torch.float32, device="cpu"):
        self.dtype, self.device = dtype, device
        self.parts: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def __call__(self, layer: int, x: torch.Tensor, residual: torch.Tensor, efficient: torch.Tensor) -> None:
        xs, ys = self.parts.setdefault(layer, ([], []))
        xs.append(x.detach().to(self.device, self.dtype))
        ys.append(residual.detach().to(self.device, self.dtype))

    def take(self) -> ResidualBatch:
        batch = {layer: (torch.cat(xs), torch.cat(ys)) for layer, (xs, ys) in self.parts.items()}
        self.parts = {}
        return batch


class Teacher:
    """The teacher pass over tokenized pairs, in micro-batches.

    `teacher.stream(indices, sink)` hands every layer's (x, residual) of each micro-batch to
    `sink(layer, x, residual)` as the forward produces them, on the model's device and in its dtype
    (memory: one micro-batch); `teacher(indices)` gathers a whole ResidualBatch in float32 on
    `store_device` (memory: every sample of `indices`)."""

    def __init__(self, model, choice: MethodChoice, pairs: Sequence[TokenizedPair], pad_token_id: int,
                 *, micro_batch: int = 16, store_device="cpu", tokenizer=None):
        self.model, self.choice, self.pairs = model, choice, pairs
        self.pad_token_id, self.micro_batch = pad_token_id, micro_batch
        self.store_device = store_device
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device

    def stream(self, indices: Sequence[int], sink) -> None:
        def callback(layer, x, residual, efficient):
            sink(layer, x, residual)

        # no_grad rather than inference_mode: a sink may train on what it receives
        with self.choice.apply(self.model, self.tokenizer, teacher_callback=callback) as session:
            self.layers = session.layers
            with torch.no_grad():
                for start in range(0, len(indices), self.micro_batch):
                    chunk = [self.pairs[i] for i in indices[start : start + self.micro_batch]]
                    batch = collate(chunk, self.pad_token_id).to(self.device)
                    with session.teacher_forced(batch.prompt_lengths):
                        self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)

    def __call__(self, indices: Sequence[int]) -> ResidualBatch:
        collector = ResidualCollector(device=self.store_device)
        self.stream(indices, lambda layer, x, residual: collector(layer, x, residual, None))
        return collector.take()
