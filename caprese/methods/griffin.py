"""`griffin`: per-sequence structured pruning chosen from the prompt (docs/method.md eqs 4-5).

From the prompt's Z: row-normalise each token, score neuron j by the column norm, keep the top k.
Generated tokens then use only the kept neurons E: masked (Z ⊙ 1_E, the simulation) or truly
pruned (W_g[:,E], W_1[:,E], W_2[E,:] sliced once per sequence, `prune=True`). Both are per
sequence in a batch; the reference code handles batch size 1 only.

Reselection every ρ generated tokens: the x of the tokens generated since the last selection are
kept (ρ × D per sequence), passed through the full FF1 once, and s ← sqrt(s⊙s + s_G⊙s_G) picks a
new E. Buffering x rather than scoring every token keeps each decode step pruned.

GRIFFIN is the one method whose low-rank path merges into its weights (eqs 9-10, `MergedGriffin`)
and the one the eq-11 LoRA baseline is defined on (`LoraGriffin`); both only swap the per-sequence
slices that `Griffin.slice_weights` builds after each (re)selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..errors import CapreseError
from ..registry import check_bool, check_int
from .base import LayerShape, Method, MethodConfig, kept_count, register_method


@dataclass
class GriffinConfig(MethodConfig):
    reselect_every: int | None = field(
        default=None,
        metadata={
            "help": "reselect the kept neurons every RHO generated tokens",
            "flag": "reselect-every",
            "metavar": "RHO",
        },
    )
    prune: bool = field(
        default=False, metadata={"help": "decode through sliced weights (same outputs, less work)", "flag": "prune"}
    )

    def validate(self) -> None:
        check_int("reselect_every", self.reselect_every, allow_none=True)
        check_bool("prune", self.prune)


# -- the GRIFFIN equations (each exactly once) ------------------------------------------------------
def griffin_scores(z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """s_j = ‖Z̄[:, j]‖₂ with Z̄[t,:] = Z[t,:] / ‖Z[t,:]‖₂, over the tokens marked in `tokens` (B, S) -> (B, D_FF)."""
    z = z.float()
    norms = z.norm(dim=-1, keepdim=True)
    normalised = torch.where(norms > 0, z / norms.clamp_min(torch.finfo(z.dtype).tiny), torch.zeros_like(z))
    normalised = normalised * tokens[..., None]
    return normalised.pow(2).sum(dim=1).sqrt()


def reselection_scores(scores: torch.Tensor, new_scores: torch.Tensor) -> torch.Tensor:
    """s ← sqrt(s ⊙ s + s_G ⊙ s_G) (docs/method.md eq 5)."""
    return torch.sqrt(scores * scores + new_scores * new_scores)


def select_neurons(scores: torch.Tensor, k: int) -> torch.Tensor:
    """E = TopK(s, k) per sequence, sorted ascending (so k = D_FF keeps the weights in their own order)."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


# -- truly pruned weights ---------------------------------------------------------------------------
def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x Wᵀ per sequence for (B, n, D) weights and (B, n) biases: F.linear at batch size 1 (the
    dense kernels), one batched matmul otherwise."""
    if weight.shape[0] == 1:
        return F.linear(x, weight[0], None if bias is None else bias[0])
    out = torch.matmul(x, weight.transpose(1, 2))
    return out if bias is None else out + bias[:, None, :]


def project_down(z: torch.Tensor, down: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """z W_2 per sequence for (B, D, n) down slices and the model's own (D,) bias."""
    if down.shape[0] == 1:
        return F.linear(z, down[0], bias)
    out = torch.matmul(z, down.transpose(1, 2))
    return out if bias is None else out + bias


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
    def slice(cls, block, kept: torch.Tensor) -> PrunedFFN:
        gate, gate_bias = block.input_weight("gate", kept) if block.gated else (None, None)
        up, up_bias = block.input_weight("up", kept)
        down = block.down.weight[:, kept].permute(1, 0, 2).contiguous()
        return cls(gate, gate_bias, up, up_bias, down, block.down.bias)

    def replace(self, rows: torch.Tensor, other: PrunedFFN) -> None:
        """Take the slices of sequences `rows` (bool (B,)) from `other` (a slice of those sequences)."""
        for name in ("gate", "gate_bias", "up", "up_bias", "down"):
            mine = getattr(self, name)
            if mine is not None:
                mine[rows] = getattr(other, name)

    _project = staticmethod(project)  # deprecated name

    def __call__(self, block, x: torch.Tensor) -> torch.Tensor:
        gate = None if self.gate is None else project(x, self.gate, self.gate_bias)
        z = block.combine(gate, project(x, self.up, self.up_bias))
        return project_down(z, self.down, self.down_bias)


@dataclass
class MergedFFN(PrunedFFN):
    """Pruned slices with the low-rank path appended (eqs 9-10): gate (B,k,D), up⁺ (B,k+r,D) =
    [W_1[:,E], L]ᵀ, down⁺ (B,D,k+r) = [W_2[E,:] ; R]ᵀ; `kept` is k."""

    kept: int = 0

    @classmethod
    @torch.no_grad()
    def slice(cls, block, kept: torch.Tensor, path=None) -> MergedFFN:
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
        up = project(x, self.up, self.up_bias)  # (B, S, k + r): [x W_1[:,E], x L]
        gate = None if self.gate is None else project(x, self.gate, self.gate_bias)
        # eq 9: the first k entries take their gate; the last r keep the constant gate 1
        up[..., : self.kept] = block.combine(gate, up[..., : self.kept])
        return project_down(up, self.down, self.down_bias)  # eq 10


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
    lora_slices: object = None  # LoraGriffin's factors sliced to `kept` (inference), reset on each selection

    @property
    def batch_size(self) -> int:
        return self.kept.shape[0]


@register_method("griffin")
class Griffin(Method):
    config_class = GriffinConfig
    stateful = True
    prepare_point = "z"  # the prompt's own Z, captured from the original FFN's prefill

    def __init__(self, block, sparsity, config: GriffinConfig):
        super().__init__(block, sparsity, config)
        self.k = kept_count(sparsity, block.intermediate_size)

    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity, config: GriffinConfig) -> float:
        """(n_in + 1)·D·k: every projection runs on the kept neurons only."""
        return (shape.inputs + 1) * shape.hidden * kept_count(sparsity, shape.intermediate)

    @classmethod
    def reselection_parameters(cls, shape: LayerShape, sparsity, config: GriffinConfig) -> float:
        """n_in·D·D_FF/ρ: the full FF1 over the buffered tokens once every ρ."""
        rho = config.reselect_every
        return cls.reselection_cost(shape, config) / rho if rho else 0.0

    @classmethod
    def reselection_cost(cls, shape: LayerShape, config: GriffinConfig) -> float:
        """n_in·D·D_FF: one reselection runs the full FF1 (all of W_g and W_1) over the buffer."""
        return shape.inputs * shape.hidden * shape.intermediate

    # -- hooks: merged inference, the LoRA baseline, the kept set -------------------------------------
    def merged(self, path) -> MergedGriffin:
        return MergedGriffin(self, path)

    def with_lora(self, lora) -> LoraGriffin:
        return LoraGriffin(self, lora)

    def kept_neurons(self, state: GriffinState) -> torch.Tensor:
        return state.kept.clone()

    # -- selection -------------------------------------------------------------------------------
    def slice_weights(self, kept: torch.Tensor) -> PrunedFFN | None:
        """The per-sequence weights decode runs through for kept sets `kept` (B, k); None: a mask."""
        return PrunedFFN.slice(self.block, kept) if self.config.prune else None

    def _apply_selection(self, state: GriffinState, rows: torch.Tensor | None = None) -> None:
        """(Re)compute E, 1_E and the sliced weights from the scores, for all sequences or `rows`."""
        if rows is None:
            state.kept = select_neurons(state.scores, self.k)
            state.keep = torch.zeros_like(state.scores, dtype=torch.bool).scatter_(-1, state.kept, True)[:, None, :]
            state.pruned = self.slice_weights(state.kept)
        else:
            kept = select_neurons(state.scores[rows], self.k)
            state.kept[rows] = kept
            state.keep[rows] = torch.zeros_like(state.scores[rows], dtype=torch.bool).scatter_(-1, kept, True)[
                :, None, :
            ]
            if state.pruned is not None:
                state.pruned.replace(rows, self.slice_weights(kept))
        state.lora_slices = None  # a new kept set: LoRA factors are sliced again

    @torch.no_grad()
    def prepare(self, x: torch.Tensor, prompt: torch.Tensor, features: torch.Tensor | None = None) -> GriffinState:
        empty = (~prompt.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise CapreseError(
                f"layer {self.block.index}: GRIFFIN selects from the prompt, but sequence {empty[0]} has no prompt token"
            )
        scores = griffin_scores(self.block.intermediate(x) if features is None else features, prompt)
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
        # the masked form: Z once, then each token's own 1_E (one FF2 instead of one FFN per segment)
        masked = state.pruned is None and type(self).efficient is Griffin.efficient
        z, keep = (self.block.intermediate(x), state.keep) if masked else (None, None)
        while bool(remaining.any()):
            current = remaining & (segment == state.reselections[:, None])
            if not bool(current.any()):  # cannot happen for consecutive generated tokens; never loop forever
                raise CapreseError(f"layer {self.block.index}: generated tokens are not consecutive within a sequence")
            if masked:
                if meter is not None:
                    meter.add("intermediate", state.keep, current)
                keep = torch.where(current[..., None], state.keep, keep)
            else:
                step_out = self.efficient(x, state, meter, current)
                out = step_out if out is None else torch.where(current[..., None], step_out, out)
            self._buffer(state, x, current)
            remaining &= ~current
            full = state.pending_count >= rho
            if bool(full.any()):
                self._reselect(state, full)
                if meter is not None:
                    meter.add_events("reselection", full.sum())
        if masked:
            out = self.block.output(z * keep)
        elif out is None:  # no generated token: FF̂ with the current selection
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


# -- GRIFFIN with a low-rank path inside its pruned block -------------------------------------------
class MergedGriffin(Griffin):
    """GRIFFIN whose pruned weights carry the Caprese path (eqs 9-10) after every (re)selection:
    decode runs one matmul chain of width k + r."""

    def __init__(self, griffin: Griffin, path):
        super().__init__(griffin.block, griffin.sparsity, replace(griffin.config, prune=True))
        self.path = path

    def slice_weights(self, kept: torch.Tensor) -> MergedFFN:
        return MergedFFN.slice(self.block, kept, self.path)

    def describe(self) -> dict:
        return {**super().describe(), "merged_rank": self.path.rank}


class LoraGriffin(Griffin):
    """GRIFFIN with the eq-11 LoRA (`caprese.distill.lora.LoraPath`) inside its block: on the pruned
    block (scope "kept") or on the full masked matrices (scope "full", where pruned neurons can
    come back through the factors; computed masked, so no sliced weights)."""

    def __init__(self, griffin: Griffin, lora):
        full = getattr(lora, "scope", "kept") == "full"
        super().__init__(griffin.block, griffin.sparsity, replace(griffin.config, prune=not full))
        if lora.gated != self.block.gated:
            raise CapreseError(
                f"layer {self.block.index}: LoRA made for a {'gated' if lora.gated else 'non-gated'} FFN"
            )
        self.path = lora
        self.full = full

    def _efficient_full(self, x: torch.Tensor, state) -> torch.Tensor:
        """(x W ⊙ 1_E + x A B) for W_g, W_1; out = (ẑ ⊙ 1_E) W_2 + (ẑ A_2) B_2 (docs/method.md eq 11, full)."""
        block, factors, keep = self.block, self.path.full(), state.keep
        gate, up = block.pre_activations(x)
        up = up * keep + factors.up(x).to(x.dtype)
        if gate is not None:
            gate = gate * keep + factors.gate(x).to(x.dtype)
        z = block.combine(gate, up)
        return block.output(z * keep) + factors.down(z).to(x.dtype)

    def efficient(self, x: torch.Tensor, state, meter=None, count=None) -> torch.Tensor:
        if meter is not None:
            meter.add("intermediate", state.keep, count)  # the masked weights' sparsity
        if self.full:
            return self._efficient_full(x, state)
        pruned, block = state.pruned, self.block
        # training needs the factors' graph; inference slices them once per selection
        factors = self.path.sliced(state.kept) if torch.is_grad_enabled() else self._cached_slices(state)
        gate = None
        if block.gated:
            gate = project(x, pruned.gate, pruned.gate_bias) + factors.gate(x).to(x.dtype)
        up = project(x, pruned.up, pruned.up_bias) + factors.up(x).to(x.dtype)
        z = block.combine(gate, up)
        return project_down(z, pruned.down, pruned.down_bias) + factors.down(z).to(x.dtype)

    def _cached_slices(self, state):
        """The factors sliced to the current kept set, once per selection (any state with `kept`)."""
        cached = getattr(state, "lora_slices", None)
        if cached is None or cached.kept is not state.kept:
            with torch.no_grad():
                cached = self.path.sliced(state.kept)
            state.lora_slices = cached
        return cached

    def describe(self) -> dict:
        return {**super().describe(), "lora_rank": self.path.rank, "lora_scope": "full" if self.full else "kept"}
