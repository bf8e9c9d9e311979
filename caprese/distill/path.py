"""The Caprese low-rank path x ↦ x L R (L ∈ R^{D×r}, R ∈ R^{r×D}) that runs beside an efficient FFN."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import check_rank
from ..errors import CapreseError


class LowRankPath(nn.Module):
    """x L R. R starts at zero so the efficient block starts exactly as it is (docs/method.md eqs 7, 13);
    L starts small and random so gradients reach R from the first step.

    Dtypes: the factors are the trained masters and stay float32 by default (Adam on bf16 factors
    loses the small updates of a low learning rate); the forward computes in the input's dtype —
    the model's — casting the factors on the fly (the cast is differentiable, so training a float32
    master under a bf16 model works like autocast), and returns the input's dtype and device, so
    the residual stream keeps its dtype. `accumulate_fp32=True` computes x L R in float32 instead
    and casts only the result. Inference (`CapreseAdapter.apply`) uses copies already cast to the
    model's dtype, so nothing is cast per step."""

    def __init__(
        self,
        hidden_size: int,
        rank: int,
        *,
        dtype=torch.float32,
        device=None,
        seed: int | None = None,
        accumulate_fp32: bool = False,
    ):
        super().__init__()
        check_rank(rank, hidden_size)
        self.hidden_size, self.rank = hidden_size, rank
        self.accumulate_fp32 = accumulate_fp32
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        init = torch.randn(hidden_size, rank, generator=generator) / math.sqrt(hidden_size)
        self.L = nn.Parameter(init.to(device=device, dtype=dtype))
        self.R = nn.Parameter(torch.zeros(rank, hidden_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L, R = self.L, self.R
        h = x.to(L.device)  # data moves to the module's device (a no-op when it is there already)
        if self.accumulate_fp32:
            out = (h.float() @ L.float()) @ R.float()
        else:
            out = (h @ L.to(h.dtype)) @ R.to(h.dtype)
        return out.to(device=x.device, dtype=x.dtype)

    def set_factors(self, L: torch.Tensor, R: torch.Tensor) -> None:
        if L.shape != self.L.shape or R.shape != self.R.shape:
            raise CapreseError(
                f"low-rank factors of shape {tuple(L.shape)}/{tuple(R.shape)} do not fit "
                f"{tuple(self.L.shape)}/{tuple(self.R.shape)}"
            )
        with torch.no_grad():
            self.L.copy_(L)
            self.R.copy_(R)

    def product(self) -> torch.Tensor:
        """The D×D matrix L R (for spectra: the paper's figure 8)."""
        return self.L.detach().float() @ self.R.detach().float()

    def singular_values(self) -> torch.Tensor:
        """Singular values of L R, computed from the r×r core (cheap for large D)."""
        _, rl = torch.linalg.qr(self.L.detach().float())
        _, rr = torch.linalg.qr(self.R.detach().float().T)
        return torch.linalg.svdvals(rl @ rr.T)

    def parameter_count(self) -> int:
        return self.L.numel() + self.R.numel()

    def extra_repr(self) -> str:
        extra = ", accumulate_fp32=True" if self.accumulate_fp32 else ""
        return f"D={self.hidden_size}, rank={self.rank}{extra}"


LowRankCorrection = LowRankPath
"""Deprecated name of `LowRankPath`."""
