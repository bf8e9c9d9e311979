"""`EfficientFFN`: the module caprese installs at a chosen layer's FFN path while a method is applied.

Phase semantics (docs/method.md eq 13: full FFN in prefill, the approximation on generated tokens):
  - a prefill (new sequence) resets the per-sequence state from the real prompt tokens;
  - prompt and pad tokens get the original module's own output, bit for bit;
  - generated tokens get FF̂(x) (+ `correction(x)` when a correction is attached);
  - inputs of a sequence that already ended (`Phase.ended`) are neither: nothing is measured on
    them and their output (FF̂ without advancing the state) is never used.

Teacher (shadow) mode, for layer-wise distillation: the block returns the original output on every
token, so every later layer sees the original model's inputs, while FF̂ is still computed on the
generated tokens (with each sequence's state exactly as in efficient mode) and handed to
`teacher_callback(layer_index, x, residual, efficient)`, all (N, D) over the generated tokens in
(batch, position) order, residual = FF(x) − FF̂(x).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..arch.ffn import FFNBlock, FFNWrapper
from ..errors import CapreseError
from ..phase import Phase, PhaseTracker
from ..trace import run_capturing
from .base import Method, SparsityMeter

TeacherCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


class PhaseFlags:
    """Whether the forward in flight has any / only generated tokens, computed once per forward and
    shared by every wrapper (each answer is a device sync; one per forward, not one per layer)."""

    def __init__(self):
        self._phase: Phase | None = None
        self.any_generated = self.all_generated = False

    def of(self, phase: Phase) -> PhaseFlags:
        if phase is not self._phase:
            generated = phase.generated
            self.any_generated = bool(generated.any())
            # ended sequences' outputs are never used: they need no original FFN either
            self.all_generated = self.any_generated and bool(phase.settled.all())
            self._phase = phase
        return self


def _state_batch(state) -> int | None:
    if state is None:
        return None
    if hasattr(state, "batch_size"):
        return state.batch_size
    return state.shape[0]


class EfficientFFN(FFNWrapper):
    def __init__(
        self,
        block: FFNBlock,
        method: Method,
        tracker: PhaseTracker,
        teacher_callback: TeacherCallback | None = None,
        correction: nn.Module | None = None,
        flags: PhaseFlags | None = None,
    ):
        super().__init__()
        self.base_layer = block.module
        self.block = block  # a plain dataclass (not registered): the adapter's view of base_layer
        self.method = method
        self.tracker = tracker
        self.teacher_callback = teacher_callback
        self.correction = correction
        """Optional low-rank path x -> (..., D), added to FF̂ on generated tokens only (Caprese)."""
        self.flags = flags or PhaseFlags()
        self.state = None
        self.meter: SparsityMeter | None = SparsityMeter()

    @property
    def layer_index(self) -> int:
        return self.block.index

    @property
    def teacher(self) -> bool:
        return self.teacher_callback is not None

    def extra_repr(self) -> str:
        mode = "teacher" if self.teacher else "efficient"
        return f"layer={self.layer_index}, method={self.method.name}, sparsity={self.method.sparsity}, mode={mode}"

    # -- the sparse computation (also what distillation targets are computed from) ------------------
    def efficient_output(self, x: torch.Tensor, phase: Phase) -> torch.Tensor:
        """FF̂(x) on every token of x with this layer's per-sequence state; advances that state over
        the generated tokens (GRIFFIN reselection). No correction is added here."""
        if self.method.stateful:
            batch = _state_batch(self.state)
            if batch is None:
                raise CapreseError(f"layer {self.layer_index}: a generated token arrived before any prefill")
            if batch != x.shape[0]:
                raise CapreseError(
                    f"layer {self.layer_index}: a batch of {x.shape[0]} after a prefill of {batch} "
                    "(beam search and batches that change size are not supported)"
                )
        return self.method.decode(x, phase.generated, self.state, self.meter)

    def _prefill(self, x: torch.Tensor, phase: Phase) -> torch.Tensor | None:
        """Reset the per-sequence state; for a stateful method also return the original output
        (a prefill needs it for its prompt tokens), whose activations `prepare` may read."""
        if not self.method.stateful:
            self.state = None
            return None
        point = self.method.prepare_point
        if point is None:
            self.state = self.method.prepare(x, phase.prompt_valid)
            return self.base_layer(x)
        original, features = run_capturing(self.block, point, lambda: self.base_layer(x))
        self.state = self.method.prepare(x, phase.prompt_valid, features)
        return original

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = self.tracker.phase()
        original = self._prefill(x, phase) if phase.prefill else None
        flags = self.flags.of(phase)
        if not flags.any_generated:
            return original if original is not None else self.base_layer(x)
        generated = phase.generated
        if self.teacher:
            dense = original if original is not None else self.base_layer(x)
            efficient = self.efficient_output(x, phase)
            self.teacher_callback(self.layer_index, x[generated], (dense - efficient)[generated], efficient[generated])
            return dense
        out = self.efficient_output(x, phase)
        if self.correction is not None:
            out = out + self.correction(x)
        if flags.all_generated:  # token-by-token decode: no original output needed
            return out
        return torch.where(generated[..., None], out, original if original is not None else self.base_layer(x))
