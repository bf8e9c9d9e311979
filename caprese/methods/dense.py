"""`dense`: the original FFN on every token — the baseline every method is compared with."""

from __future__ import annotations

import torch

from ..errors import CapreseError
from .base import LayerShape, Method, register_method


@register_method("dense", aliases=("full", "none"))
class Dense(Method):
    """FF̂ = FF: generated tokens also run the original module."""

    takes_sparsity = False

    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity, config) -> float:
        """n_in·D·D_FF + D·D_FF: every weight."""
        return shape.dense

    def __init__(self, block, sparsity, config):
        if sparsity != 0:
            raise CapreseError(f"method 'dense' takes no sparsity, got {sparsity!r} (use 0 or choose another method)")
        super().__init__(block, sparsity, config)

    def efficient(self, x: torch.Tensor, state, meter=None, count=None) -> torch.Tensor:
        if meter is not None:
            keep = torch.ones(*x.shape[:-1], 1, dtype=torch.bool, device=x.device).expand(
                *x.shape[:-1], self.block.intermediate_size
            )
            meter.add("intermediate", keep, count)
        return self.block.module(x)
