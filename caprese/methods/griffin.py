"""`griffin`: per-sequence structured pruning chosen from the prompt (METHOD.md, "GRIFFIN").

From the prompt's Z: row-normalise each token, score neuron j by the column norm, keep the top k.
Generated tokens then use only the kept neurons E: masked (Z ⊙ 1_E, the simulation) or truly
pruned (W_g[:,E], W_1[:,E], W_2[E,:] sliced once per sequence, `prune=True`). Both are per
sequence in a batch; the reference code handles batch size 1 only.

Reselection every ρ generated tokens: the x of the tokens generated since the last selection are
kept (ρ × D per sequence), passed through the full FF1 once, and s ← sqrt(s⊙s + s_G⊙s_G) picks a
new E. Buffering x rather than scoring every token keeps each decode step pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import CapreseError
from .base import Method, MethodConfig, kept_count, register_method


@dataclass
class GriffinConfig(MethodConfig):
    reselect_every: int | None = field(
        default=None, metadata={"help": "ρ: reselect the kept neurons every ρ generated tokens (None: never)"}
    )
    prune: bool = field(default=False, metadata={"help": "decode through sliced weights instead of a mask"})

    def validate(self) -> None:
        rho = self.reselect_every
        if rho is not None:
            if isinstance(rho, bool) or not isinstance(rho, int) or rho < 1:
                raise CapreseError(f"reselect_every {rho!r} must be an integer >= 1 (or None for no reselection)")
        if not isinstance(self.prune, bool):
            raise CapreseError(f"prune {self.prune!r} must be true or false")


# -- the GRIFFIN equations (each exactly once) ------------------------------------------------------
def griffin_scores(z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """s_j = ‖Z̄[:, j]‖₂ with Z̄[t,:] = Z[t,:] / ‖Z[t,:]‖₂, over the tokens marked in `tokens` (B, S) -> (B, D_FF)."""
    z = z.float()
    norms = z.norm(dim=-1, keepdim=True)
    normalised = torch.where(norms > 0, z / norms.clamp_min(torch.finfo(z.dtype).tiny), torch.zeros_like(z))
    normalised = normalised * tokens[..., None]
    return normalised.pow(2).sum(dim=1).sqrt()


def reselection_scores(scores: torch.Tensor, new_scores: torch.Tensor) -> torch.Tensor:
    """s ← sqrt(s ⊙ s + s_G ⊙ s_G) (METHOD.md, reselection)."""
    return torch.sqrt(scores * scores + new_scores * new_scores)


def select_neurons(scores: torch.Tensor, k: int) -> torch.Tensor:
    """E = TopK(s, k) per sequence, sorted ascending (so k = D_FF keeps the weights in their own order)."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


# -- truly pruned weights ---------------------------------------------------------------------------
@dataclass
class PrunedFFN:
    """W_g[:,E], W_1[:,E], W_2[E,:] for each sequence of a batch, sliced once (after a selection).

    Batch size 1 decodes with F.linear (the dense kernels, k rows instead of D_FF); larger batches
    with one batched matmul over the per-sequence (B, k, D) slices.
    """

    gate: torch.Tensor | None  # (B, k, D) rows of W_g (nn.Linear layout), None without a gate
    gate_bias: torch.Tensor | None  # (B, k)
    up: torch.Tensor  # (B, k, D)
    up_bias: torch.Tensor | None
    down: torch.Tensor  # (B, D, k) columns of the down projection's (D, D_FF) weight
    down_bias: torch.Tensor | None  # (D,)

    @classmethod
    @torch.no_grad()
    def slice(cls, block, kept: torch.Tensor) -> "PrunedFFN":
        gate, gate_bias = block.input_weight("gate", kept) if block.gated else (None, None)
        up, up_bias = block.input_weight("up", kept)
        down = block.down.weight[:, kept].permute(1, 0, 2).contiguous()
        return cls(gate, gate_bias, up, up_bias, down, block.down.bias)

    def replace(self, rows: torch.Tensor, other: "PrunedFFN") -> None:
        """Take the slices of sequences `rows` (bool (B,)) from `other` (a slice of those sequences)."""
        for name in ("gate", "gate_bias", "up", "up_bias", "down"):
            mine = getattr(self, name)
            if mine is not None:
                mine[rows] = getattr(other, name)

    @staticmethod
    def _project(x, weight, bias):
        if weight.shape[0] == 1:
            return F.linear(x, weight[0], None if bias is None else bias[0])
        out = torch.matmul(x, weight.transpose(1, 2))
        return out if bias is None else out + bias[:, None, :]

    def __call__(self, block, x: torch.Tensor) -> torch.Tensor:
        gate = None if self.gate is None else self._project(x, self.gate, self.gate_bias)
        z = block.combine(gate, self._project(x, self.up, self.up_bias))
        if self.down.shape[0] == 1:
            return F.linear(z, self.down[0], self.down_bias)
        out = torch.matmul(z, self.down.transpose(1, 2))
        return out if self.down_bias is None else out + self.down_bias


# -- per-sequence state -------------------------------------------------------------------------------
@dataclass
class GriffinState:
    scores: torch.Tensor  # (B, D_FF) float32, s accumulated over every token selected from
    kept: torch.Tensor  # (B, k) long, sorted: E per sequence
    keep: torch.Tensor  # (B, 1, D_FF) bool, 1_E
    pruned: PrunedFFN | None
    generated: torch.Tensor  # (B,) long, generated tokens seen since the prefill
    reselections: torch.Tensor  # (B,) long, selections made after the prompt's
    pending: torch.Tensor | None  # (B, ρ, D) x of tokens generated since the last selection
    pending_count: torch.Tensor  # (B,) long

    @property
    def batch_size(self) -> int:
        return self.kept.shape[0]


@register_method("griffin")
class Griffin(Method):
    config_class = GriffinConfig
    stateful = True

    def __init__(self, block, sparsity, config: GriffinConfig):
        super().__init__(block, sparsity, config)
        self.k = kept_count(sparsity, block.intermediate_size)

    # -- selection -------------------------------------------------------------------------------
    def _apply_selection(self, state: GriffinState, rows: torch.Tensor | None = None) -> None:
        """(Re)compute E, 1_E and the pruned slices from the scores, for all sequences or `rows`."""
        if rows is None:
            state.kept = select_neurons(state.scores, self.k)
            state.keep = torch.zeros_like(state.scores, dtype=torch.bool).scatter_(-1, state.kept, True)[:, None, :]
            state.pruned = PrunedFFN.slice(self.block, state.kept) if self.config.prune else None
            return
        kept = select_neurons(state.scores[rows], self.k)
        state.kept[rows] = kept
        state.keep[rows] = torch.zeros_like(state.scores[rows], dtype=torch.bool).scatter_(-1, kept, True)[:, None, :]
        if state.pruned is not None:
            state.pruned.replace(rows, PrunedFFN.slice(self.block, kept))

    @torch.no_grad()
    def prepare(self, x: torch.Tensor, prompt: torch.Tensor) -> GriffinState:
        empty = (~prompt.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise CapreseError(f"layer {self.block.index}: GRIFFIN selects from the prompt, but sequence {empty[0]} has no prompt token")
        scores = griffin_scores(self.block.intermediate(x), prompt)
        batch = x.shape[0]
        rho = self.config.reselect_every
        zeros = torch.zeros(batch, dtype=torch.long, device=x.device)
        state = GriffinState(
            scores=scores,
            kept=None,
            keep=None,
            pruned=None,
            generated=zeros.clone(),
            reselections=zeros.clone(),
            pending=None if rho is None else x.new_zeros(batch, rho, x.shape[-1]),
            pending_count=zeros.clone(),
        )
        self._apply_selection(state)
        return state

    @torch.no_grad()
    def _reselect(self, state: GriffinState, rows: torch.Tensor) -> None:
        """Score the buffered generated tokens of `rows` with the full FF1 and pick a new E."""
        buffered = state.pending[rows]
        every = torch.ones(buffered.shape[:2], dtype=torch.bool, device=buffered.device)
        new_scores = griffin_scores(self.block.intermediate(buffered), every)
        state.scores[rows] = reselection_scores(state.scores[rows], new_scores)
        self._apply_selection(state, rows)
        state.pending_count[rows] = 0
        state.reselections[rows] += 1

    # -- the efficient FFN -------------------------------------------------------------------------
    def efficient(self, x: torch.Tensor, state: GriffinState, meter=None, count=None) -> torch.Tensor:
        if meter is not None:
            meter.add("intermediate", state.keep, count)
        if state.pruned is not None:
            return state.pruned(self.block, x)
        return self.block.output(self.block.intermediate(x) * state.keep)

    def decode(self, x, generated, state: GriffinState, meter=None):
        rho = self.config.reselect_every
        if rho is None:
            out = self.efficient(x, state, meter, generated)
            state.generated += generated.sum(dim=1)
            return out
        # Each generated token belongs to a segment of ρ tokens; segment j uses the j-th selection.
        # Walk the segments present in this forward (one for token-by-token decode, several in a
        # teacher-forced forward), reselecting whenever a sequence completes one.
        index = state.generated[:, None] + generated.long().cumsum(dim=1)  # 1-based, valid where generated
        segment = (index - 1).div(rho, rounding_mode="floor")
        remaining = generated.clone()
        out = None
        while bool(remaining.any()):
            current = remaining & (segment == state.reselections[:, None])
            if not bool(current.any()):  # cannot happen for consecutive generated tokens; never loop forever
                raise CapreseError(f"layer {self.block.index}: generated tokens are not consecutive within a sequence")
            step_out = self.efficient(x, state, meter, current)
            out = step_out if out is None else torch.where(current[..., None], step_out, out)
            self._buffer(state, x, current)
            remaining &= ~current
            full = state.pending_count >= rho
            if bool(full.any()):
                self._reselect(state, full)
        if out is None:  # no generated token: FF̂ with the current selection
            out = self.efficient(x, state)
        state.generated += generated.sum(dim=1)
        return out

    @staticmethod
    def _buffer(state: GriffinState, x: torch.Tensor, tokens: torch.Tensor) -> None:
        rows, cols = tokens.nonzero(as_tuple=True)
        slots = state.pending_count[rows] + (tokens.long().cumsum(dim=1) - 1)[rows, cols]
        state.pending[rows, slots] = x[rows, cols].detach().to(state.pending.dtype)
        state.pending_count += tokens.sum(dim=1)

    def describe(self) -> dict:
        return {"k": self.k, "reselect_every": self.config.reselect_every, "prune": self.config.prune}
