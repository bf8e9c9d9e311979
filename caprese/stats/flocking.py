"""GRIFFIN's "flocking": do generated tokens activate the neurons their prompt selected?

GRIFFIN (docs/method.md eq 4) scores neuron j from the prompt's Z: each token row-normalised, then
s_j = ‖Z̄[:, j]‖₂, and keeps E = TopK(s, k) for the whole generation. Flocking is the claim that
each token's own top-k neurons (by |Z|) mostly fall inside E. This statistic measures it: for
each token, |T_k(token) ∩ E_k(its sequence)| / k at each density, averaged per phase (for
prompt tokens it is the in-sample overlap). The selection is recomputed whenever a forward
starts sequences (prefill, or a teacher-forced forward) and kept, one row per sequence, for
the decode forwards that follow: memory depends on the batch size, never on the tokens seen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import CapreseError
from ..methods.griffin import griffin_scores  # the GRIFFIN score equation lives there, once
from .base import IGNORED, PHASES, StreamingStatistic, phase_index
from .topk import check_densities, keep_count, sort_magnitudes


def neuron_ranks(scores: torch.Tensor) -> torch.Tensor:
    """(B, W) rank of each neuron by descending score (0 = best): neuron j is in TopK(s, k) iff rank < k."""
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


class FlockingOverlap(StreamingStatistic):
    """Mean overlap |T_k ∩ E_k| / k between each token's top-k neurons and its prompt's GRIFFIN set."""

    ACCUMULATORS = ("overlap_sum", "tokens")

    def __init__(self, densities: Sequence[float], width: int):
        self.densities = check_densities(densities)
        self.width = int(width)
        self.ks = [keep_count(d, self.width) for d in self.densities]
        self.overlap_sum = torch.zeros(len(PHASES), len(self.densities), dtype=torch.float64)
        self.tokens = torch.zeros(len(PHASES), dtype=torch.int64)
        self._ranks: torch.Tensor | None = None  # (B, W) current sequences' neuron ranks
        self._has_prompt: torch.Tensor | None = None  # (B,) sequences with a selection

    def config(self) -> dict:
        return {"densities": list(self.densities), "width": self.width}

    def select(self, z: torch.Tensor, prompt_mask: torch.Tensor) -> None:
        """Start sequences: GRIFFIN selection from z (B, S, W) over each row's prompt tokens."""
        self._ranks = neuron_ranks(griffin_scores(z, prompt_mask)).to(torch.int32)
        self._has_prompt = prompt_mask.any(dim=1)

    def update(self, z: torch.Tensor, phase_ids: torch.Tensor, prefill: bool) -> None:
        """z (B, S, W), phase ids (B, S); a prefill forward first selects from its prompt tokens."""
        if prefill:
            self.select(z, phase_ids == PHASES.index("prompt"))
        width = z.shape[-1]
        rows = torch.arange(z.shape[0], device=z.device)[:, None].expand(phase_ids.shape).reshape(-1)
        flat, ids = z.reshape(-1, width), phase_ids.reshape(-1)
        keep = ids < IGNORED
        order = sort_magnitudes(flat[keep], max(self.ks))[1]
        self.update_sorted(order, rows[keep], ids[keep])

    def update_sorted(self, order: torch.Tensor, rows: torch.Tensor, phase_ids: torch.Tensor) -> None:
        """From each token's neurons by descending |z| (N, ≥ max k), its sequence row and phase id (N,)."""
        if order.shape[0] == 0:
            return
        if self._ranks is None:
            raise CapreseError("flocking needs the prompt's forward (prefill) before generated tokens")
        if int(rows.max()) >= self._ranks.shape[0]:
            raise CapreseError(
                f"flocking: batch row {int(rows.max())} has no prompt selection (batch of {self._ranks.shape[0]})"
            )
        has = self._has_prompt[rows]
        order, rows, ids = order[has], rows[has], phase_ids[has]
        k_max = max(self.ks)
        # rank (under the sequence's GRIFFIN score) of each token's top neurons, best first
        ranks = self._ranks[rows].gather(1, order[:, :k_max].to(torch.int64))
        overlap = torch.stack([(ranks[:, :k] < k).sum(-1).double() / k for k in self.ks], dim=-1)
        sums = torch.zeros(len(PHASES), len(self.ks), dtype=torch.float64, device=overlap.device)
        sums.index_add_(0, ids.to(overlap.device), overlap)
        self.overlap_sum += sums.cpu()
        self.tokens += torch.bincount(ids.cpu(), minlength=len(PHASES))[: len(PHASES)]

    def overlaps(self, phase: str) -> list[float]:
        p = phase_index(phase)
        n = int(self.tokens[p])
        return [float("nan")] * len(self.ks) if n == 0 else (self.overlap_sum[p] / n).tolist()

    def reset_sequences(self) -> None:
        """Forget the current sequences' selections (they are transient, not part of the state)."""
        self._ranks = self._has_prompt = None
