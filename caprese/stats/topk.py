"""Per-token top-k: how much of ‖Z‖² the k largest |Z| entries keep (oracle top-k, docs/method.md eq 3).

For density d a token keeps k = round(d·D_FF) entries; the statistic is the mean over tokens of
Σ_{top-k} z_j² / Σ_j z_j² (a token with Z = 0 keeps everything: fraction 1), per phase. One sort
per token serves every density (and the flocking statistic, which shares it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import CapreseError
from ..methods.base import kept_count
from ..registry import check_range
from .base import IGNORED, PHASES, StreamingStatistic, phase_index


def keep_count(density: float, width: int) -> int:
    """k = round(density · width), at least 1: the entries a per-token top-k keeps (the methods' rounding)."""
    check_range("density", float(density), 0.0, 1.0, low_open=True)
    return max(1, min(width, kept_count(1.0 - float(density), width)))


def check_densities(densities: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(d) for d in densities)
    for d in values:
        check_range("density", d, 0.0, 1.0, low_open=True)
    if len(set(values)) != len(values):
        raise CapreseError(f"densities {list(values)} contain duplicates")
    return values


def sort_magnitudes(z: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest |z| per token, descending, and their neuron indices (k=None: all, a full sort).

    A partial top-k is cheaper than a sort when the largest density is well below 1."""
    magnitudes = z.abs()
    if k is None or k >= z.shape[-1]:
        return torch.sort(magnitudes, dim=-1, descending=True)
    return torch.topk(magnitudes, k, dim=-1, sorted=True)


class TopKEnergy(StreamingStatistic):
    """Mean per-token fraction of ‖Z‖² kept by per-token top-k at each density, per phase."""

    ACCUMULATORS = ("kept_sum", "tokens")

    def __init__(self, densities: Sequence[float], width: int):
        self.densities = check_densities(densities)
        self.width = int(width)
        self.ks = [keep_count(d, self.width) for d in self.densities]
        self.kept_sum = torch.zeros(len(PHASES), len(self.densities), dtype=torch.float64)
        self.tokens = torch.zeros(len(PHASES), dtype=torch.int64)

    def config(self) -> dict:
        return {"densities": list(self.densities), "width": self.width}

    def update(self, z: torch.Tensor, phase_ids: torch.Tensor) -> None:
        """z (..., W) and phase ids (...): sorts each token itself."""
        z, ids = z.reshape(-1, z.shape[-1]), phase_ids.reshape(-1)
        keep = ids < IGNORED
        z = z[keep]
        self.update_sorted(sort_magnitudes(z, max(self.ks))[0], ids[keep], z.double().square().sum(-1))

    def update_sorted(
        self, magnitudes_desc: torch.Tensor, phase_ids: torch.Tensor, totals: torch.Tensor | None = None
    ) -> None:
        """From each token's largest |z| sorted descending (N, ≥ max k), its phase id (N,) and its
        ‖z‖² (N,; may be omitted when `magnitudes_desc` holds all W entries)."""
        if magnitudes_desc.shape[-1] < max(self.ks) or (totals is None and magnitudes_desc.shape[-1] != self.width):
            raise CapreseError(
                f"top-k energy needs the {max(self.ks)} largest of {self.width} entries "
                f"(and ‖z‖² unless all are given), got {magnitudes_desc.shape[-1]}"
            )
        if magnitudes_desc.shape[0] == 0:
            return
        energy = magnitudes_desc.double().square_().cumsum_(-1)  # float64: exact to ~1e-12 for any W
        total = (energy[:, -1] if totals is None else totals.double()).unsqueeze(-1)
        kept = energy[:, [k - 1 for k in self.ks]]
        fraction = torch.where(
            total > 0, kept / total.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(kept)
        )
        ids = phase_ids.to(fraction.device)
        sums = torch.zeros(len(PHASES), len(self.ks), dtype=torch.float64, device=fraction.device)
        sums.index_add_(0, ids, fraction)
        self.kept_sum += sums.cpu()
        self.tokens += torch.bincount(ids, minlength=len(PHASES))[: len(PHASES)].cpu()

    def kept_fractions(self, phase: str) -> list[float]:
        p = phase_index(phase)
        n = int(self.tokens[p])
        return [float("nan")] * len(self.ks) if n == 0 else (self.kept_sum[p] / n).tolist()
