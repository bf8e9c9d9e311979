"""Merged inference (METHOD.md eqs 9-10): the low-rank path concatenated into the pruned GRIFFIN FFN.

For a kept set E and factors L (D×r), R (r×D):

    ẑ⁺  = [σ(x W_g[:,E]), 1_r] ⊙ x [W_1[:,E], L]        (eq 9; 1_r is never materialised)
    out = ẑ⁺ [W_2[E,:] ; R]                             (eq 10)

so decode runs one matmul chain of width k + r: the gate slice (k rows), the up slice with L
appended (k + r rows) and the down slice with R appended (k + r columns). For per-token methods
(top-k, CATS, TEAL) there is nothing to concatenate: merged is the sparse path plus x L R.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..methods.griffin import Griffin
from .correction import LowRankCorrection


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x Wᵀ per sequence: F.linear at batch size 1, one batched matmul otherwise."""
    if weight.shape[0] == 1:
        return F.linear(x, weight[0], None if bias is None else bias[0])
    out = torch.matmul(x, weight.transpose(1, 2))
    return out if bias is None else out + bias[:, None, :]


@dataclass
class MergedFFN:
    """Per-sequence merged weights: gate (B,k,D), up⁺ (B,k+r,D), down⁺ (B,D,k+r)."""

    gate: torch.Tensor | None
    gate_bias: torch.Tensor | None
    up: torch.Tensor
    up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None
    kept: int

    @classmethod
    @torch.no_grad()
    def slice(cls, block, kept: torch.Tensor, path: LowRankCorrection) -> "MergedFFN":
        batch, r = kept.shape[0], path.rank
        dtype, device = block.down.weight.dtype, block.down.weight.device
        L = path.L.detach().to(device, dtype).T.expand(batch, r, -1)  # r extra rows of the up projection
        R = path.R.detach().to(device, dtype).T.expand(batch, -1, r)  # r extra columns of the down projection
        gate, gate_bias = block.input_weight("gate", kept) if block.gated else (None, None)
        up, up_bias = block.input_weight("up", kept)
        up = torch.cat([up, L], dim=1)
        if up_bias is not None:
            up_bias = torch.cat([up_bias, up_bias.new_zeros(batch, r)], dim=1)
        down = torch.cat([block.down.weight[:, kept].permute(1, 0, 2), R], dim=2).contiguous()
        return cls(gate, gate_bias, up.contiguous(), up_bias, down, block.down.bias, kept.shape[1])

    def __call__(self, block, x: torch.Tensor) -> torch.Tensor:
        up = _project(x, self.up, self.up_bias)  # (B, S, k + r): [x W_1[:,E], x L]
        gate = None if self.gate is None else _project(x, self.gate, self.gate_bias)
        # eq 9: the first k entries take their gate; the last r keep the constant gate 1
        up[..., : self.kept] = block.combine(gate, up[..., : self.kept])
        if self.down.shape[0] == 1:
            return F.linear(up, self.down[0], self.down_bias)
        out = torch.matmul(up, self.down.transpose(1, 2))
        return out if self.down_bias is None else out + self.down_bias


class MergedGriffin(Griffin):
    """GRIFFIN whose pruned weights carry the Caprese path (eqs 9-10) after every (re)selection."""

    def __init__(self, griffin: Griffin, path: LowRankCorrection):
        super().__init__(griffin.block, griffin.sparsity, replace(griffin.config, prune=True))
        self.path = path

    def _apply_selection(self, state, rows=None) -> None:
        state.pruned = None  # GRIFFIN's own slices are replaced by the merged ones below
        super()._apply_selection(state, rows)
        state.pruned = MergedFFN.slice(self.block, state.kept, self.path)

    def describe(self) -> dict:
        return {**super().describe(), "merged_rank": self.path.rank}


def merge_into(session, corrections: dict[int, LowRankCorrection]) -> None:
    """Attach each layer's path to an applied method: concatenated into GRIFFIN, added otherwise."""
    for layer, path in corrections.items():
        wrapper = session.wrapper(layer)
        if isinstance(wrapper.method, Griffin):
            wrapper.method = MergedGriffin(wrapper.method, path)
            wrapper.correction = None
        else:
            wrapper.correction = path
