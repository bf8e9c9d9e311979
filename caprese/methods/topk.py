"""`topk`: the oracle per-token top-k of |Z| (docs/method.md eq 3; the paper's figure 2).

An oracle: it computes the whole Z to choose, so it saves no FF1 work; it bounds what any
per-token activation-sparsity method could keep.
"""

from __future__ import annotations

import torch

from .base import LayerShape, Method, kept_count, register_method


def topk_mask(z: torch.Tensor, k: int) -> torch.Tensor:
    """Keep, per token, the k entries of Z with the largest |Z| (ties broken by torch.topk)."""
    width = z.shape[-1]
    if k >= width:
        return torch.ones_like(z, dtype=torch.bool)
    mask = torch.zeros_like(z, dtype=torch.bool)
    if k <= 0:
        return mask
    return mask.scatter_(-1, z.abs().topk(k, dim=-1).indices, True)


@register_method("topk", aliases=("top-k", "oracle"))
class TopK(Method):
    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity, config) -> float:
        """n_in·D·D_FF + D·k: an oracle computes the whole Z to choose; only the down projection skips."""
        return shape.inputs * shape.hidden * shape.intermediate + shape.hidden * kept_count(sparsity, shape.intermediate)

    def __init__(self, block, sparsity, config):
        super().__init__(block, sparsity, config)
        self.k = kept_count(sparsity, block.intermediate_size)

    def efficient(self, x: torch.Tensor, state, meter=None, count=None) -> torch.Tensor:
        z = self.block.intermediate(x)
        keep = topk_mask(z, self.k)
        if meter is not None:
            meter.add("intermediate", keep, count)
        return self.block.output(z * keep)

    def describe(self) -> dict:
        return {"k": self.k}
