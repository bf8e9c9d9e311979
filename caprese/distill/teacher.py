"""One teacher pass: the original model's FFN inputs and the residuals FF(x) − FF̂(x) of every
chosen layer, on generated tokens, for a batch of teacher-forced samples.

The method runs in teacher (shadow) mode: every layer outputs the original FFN, so each layer's
input is the original model's (eq 7's x), while FF̂ is computed with each sample's own GRIFFIN
selection / CATS τ from its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..methods.choice import MethodChoice
from .batches import TokenizedPair, collate
from .layerwise import ResidualBatch

__all__ = ["MethodChoice", "ResidualCollector", "Teacher"]  # MethodChoice: re-exported from its old home


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

    def __init__(
        self,
        model,
        choice: MethodChoice,
        pairs: Sequence[TokenizedPair],
        pad_token_id: int,
        *,
        micro_batch: int = 16,
        store_device="cpu",
        tokenizer=None,
    ):
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
                        self.model(**batch.model_inputs(), logits_to_keep=1)

    def __call__(self, indices: Sequence[int]) -> ResidualBatch:
        collector = ResidualCollector(device=self.store_device)
        self.stream(indices, lambda layer, x, residual: collector(layer, x, residual, None))
        return collector.take()
