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


def topk_sparsify(z: torch.Tensor, k: int) -> torch.Tensor:
    """Z with all but each token's k largest |Z| zeroed: `z * topk_mask(z, k)`, in fewer passes
    (unsorted selection, the kept values scattered into zeros; no mask, no multiply)."""
    width = z.shape[-1]
    if k >= width:
        return z
    if k <= 0:
        return torch.zeros_like(z)
    indices = z.abs().topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(z).scatter_(-1, indices, z.gather(-1, indices))


@register_method("topk", aliases=("top-k", "oracle"))
class TopK(Method):
    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity, config) -> float:
        """n_in·D·D_FF + D·k: an oracle computes the whole Z to choose; only the down projection skips."""
        return shape.inputs * shape.hidden * shape.intermediate + shape.hidden * kept_count(
            sparsity, shape.intermediate
        )

    def __init__(self, block, sparsity, config):
        super().__init__(block, sparsity, config)
        self.k = kept_count(sparsity, block.intermediate_size)

    def efficient(self, x: torch.Tensor, state, meter=None, count=None) -> torch.Tensor:
        z = self.block.intermediate(x)
        if meter is not None:  # exactly min(k, D_FF) kept per token: no need to count the mask
            meter.add_fixed("intermediate", min(self.k, z.shape[-1]), z.shape[-1], z.shape[:-1], count, z.device)
        return self.block.output(topk_sparsify(z, self.k))

    def describe(self) -> dict:
        return {"k": self.k}
