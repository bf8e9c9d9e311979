"""The LoRA baseline (docs/method.md eq 11): GRIFFIN's masked W_g, W_1, W_2, each with a rank-r' LoRA,
r' chosen so the parameter count matches Caprese's 2·D·r per layer (`lora_rank_for`).

Two scopes (`caprese.config.LORA_SCOPES`, `LoraConfig.scope`):

kept (default): restricted to the kept neurons E, a sequential adapter on the pruned block,

    g = x W_g[:,E] + (x A_g) B_g[:,E],   u = x W_1[:,E] + (x A_1) B_1[:,E]
    ẑ = σ(g) ⊙ u,                        out = ẑ W_2[E,:] + (ẑ A_2[E,:]) B_2

full (the paper's literal eq 11): the masked matrices W ⊙ M plus LoRA on the full matrices,

    g = (x W_g) ⊙ 1_E + (x A_g) B_g,     u = (x W_1) ⊙ 1_E + (x A_1) B_1
    ẑ = σ(g) ⊙ u,                        out = (ẑ ⊙ 1_E) W_2 + (ẑ A_2) B_2

so a pruned neuron j gets ẑ_j = σ((x A_g) B_g[:,j]) · (x A_1) B_1[:,j] and reaches the output through
A_2[j,:]: pruned neurons can come back through LoRA. Both scopes have the same parameters.

B starts at zero, so either baseline starts as GRIFFIN itself. (With a gate, a neuron whose g and u
are both 0 sits at a saddle of σ(g)·u: in `full` it comes back once its B columns moved, which
training on sequences that keep it does; a neuron no training sequence keeps stays out.) Unlike
Caprese, the low-rank terms sit inside the chain (three extra sequential matmul pairs), which is
what costs latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import LORA_SCOPES
from ..errors import CapreseError
from ..methods.base import METHODS
from ..methods.griffin import LoraGriffin  # noqa: F401  (re-exported: its old home)
from ..registry import check_choice
from .batches import collate
from .optim import adam_with_linear_schedule


def lora_rank_for(hidden: int, intermediate: int, caprese_rank: int, gated: bool = True) -> int:
    """r' whose LoRA on the FFN's matrices has about Caprese's 2·D·r parameters (at least 1):

        r' = max(1, round(2·D·r / (m·(D + D_FF))))      m = 3 matrices with a gate, 2 without

    each matrix's A, B pair holding r'·(D + D_FF); the same for both scopes."""
    matrices = 3 if gated else 2
    return max(1, round(2 * hidden * caprese_rank / (matrices * (hidden + intermediate))))


class LoraPath(nn.Module):
    """Rank-r' LoRA factors for W_g (if gated), W_1 and W_2 of one FFN."""

    def __init__(
        self,
        hidden: int,
        intermediate: int,
        rank: int,
        gated: bool = True,
        *,
        seed: int = 0,
        device=None,
        dtype=torch.float32,
        scope: str = "kept",
    ):
        super().__init__()
        if rank < 1:
            raise CapreseError(f"LoRA rank {rank!r} must be >= 1")
        check_choice("lora_scope", scope, LORA_SCOPES)
        self.scope = scope
        g = torch.Generator().manual_seed(seed)

        def a(rows):  # small random A, zero B: the adapter starts as the identity change
            return nn.Parameter((torch.randn(rows, rank, generator=g) / math.sqrt(rows)).to(device=device, dtype=dtype))

        def b(cols):
            return nn.Parameter(torch.zeros(rank, cols, device=device, dtype=dtype))

        self.rank, self.gated = rank, gated
        self.A_up, self.B_up = a(hidden), b(intermediate)
        self.A_down, self.B_down = a(intermediate), b(hidden)
        if gated:
            self.A_gate, self.B_gate = a(hidden), b(intermediate)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"rank={self.rank}, gated={self.gated}, scope={self.scope}"

    def full(self) -> SlicedLora:
        """The factors on every neuron (scope "full")."""
        gate = (self.A_gate, self.B_gate) if self.gated else (None, None)
        return SlicedLora(None, *gate, self.A_up, self.B_up, self.A_down, self.B_down)

    def sliced(self, kept: torch.Tensor) -> SlicedLora:
        """The factors restricted to each sequence's kept neurons E ((B, k) indices)."""
        b_gate = self.B_gate[:, kept].permute(1, 0, 2) if self.gated else None  # (B, r', k)
        return SlicedLora(
            kept,
            self.A_gate if self.gated else None,
            b_gate,
            self.A_up,
            self.B_up[:, kept].permute(1, 0, 2),
            self.A_down[kept],
            self.B_down,
        )


@dataclass
class SlicedLora:
    """LoRA factors on the kept neurons: (x A) B[:, E] for the inputs, (ẑ A_2[E, :]) B_2 for the output.
    Computed in the activations' dtype (the model's); float32 master factors are cast on the fly."""

    kept: torch.Tensor | None  # None: every neuron (`LoraPath.full`)
    A_gate: torch.Tensor | None
    B_gate: torch.Tensor | None
    A_up: torch.Tensor
    B_up: torch.Tensor
    A_down: torch.Tensor  # (B, k, r')
    B_down: torch.Tensor  # (r', D)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x @ self.A_gate.to(x.dtype), self.B_gate.to(x.dtype))

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x @ self.A_up.to(x.dtype), self.B_up.to(x.dtype))

    def down(self, z: torch.Tensor) -> torch.Tensor:
        return torch.matmul(z, self.A_down.to(z.dtype)) @ self.B_down.to(z.dtype)


def attach_lora(session, paths: dict[int, LoraPath]) -> None:
    """Swap each applied layer for its LoRA-adapted version (`Method.with_lora`; GRIFFIN's `LoraGriffin`)."""
    for layer, path in paths.items():
        wrapper = session.wrapper(layer)
        adapted = wrapper.method.with_lora(path)
        if adapted is None:
            raise CapreseError(
                f"the LoRA baseline is not defined for method {wrapper.method.name!r} "
                f"(methods that define it: {', '.join(lora_methods())})"
            )
        wrapper.method = adapted


def lora_methods() -> list[str]:
    """The registered methods the eq-11 baseline is defined on."""
    return [name for name, cls in METHODS.items() if cls.defines("with_lora")]


def train_lora_layerwise(
    model,
    choice,
    pairs,
    pad_token_id: int,
    paths: dict[int, LoraPath],
    config,
    *,
    tokenizer=None,
    micro_batch: int = 16,
    progress: bool = True,
) -> dict[int, list[float]]:
    """Layer-wise (eq-7-style) training of the LoRA baseline: each layer's LoRA-GRIFFIN block
    matches the original FFN output on generated tokens, given the original model's inputs.

    LoRA is not additive, so residuals cannot be cached as for Caprese: every step runs the
    teacher pass (the model outputs the original FFNs everywhere) with the LoRA blocks computing
    FF̂ alongside, and each layer's loss reaches only its own factors.
    """
    device = next(model.parameters()).device
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for path in paths.values() for p in path.parameters()]
    batches = [list(range(s, min(s + config.batch_size, len(pairs)))) for s in range(0, len(pairs), config.batch_size)]
    optimizer, scheduler = adam_with_linear_schedule(
        params, config.lr, len(batches) * config.epochs, config.warmup_fraction
    )
    losses: dict[int, list[float]] = {layer: [] for layer in paths}
    generator = torch.Generator().manual_seed(config.seed)
    sums: dict[int, torch.Tensor] = {}

    def observe(layer, x, residual, efficient):
        sums[layer] = sums.get(layer, 0) + residual.float().pow(2).sum()

    bar = tqdm(total=len(batches) * config.epochs, desc="LoRA layer-wise", disable=not progress, unit="step")
    try:
        with choice.apply(model, tokenizer, teacher_callback=observe) as session:
            attach_lora(session, paths)
            for _ in range(config.epochs):
                totals = {layer: 0.0 for layer in paths}
                for key in torch.randperm(len(batches), generator=generator).tolist():
                    optimizer.zero_grad(set_to_none=True)
                    tokens = 0
                    for start in range(0, len(batches[key]), micro_batch):
                        batch = collate([pairs[i] for i in batches[key][start : start + micro_batch]], pad_token_id).to(
                            device
                        )
                        sums.clear()
                        with session.teacher_forced(batch.prompt_lengths):
                            model(**batch.model_inputs(), logits_to_keep=1)
                        n = int(batch.generated_mask.sum())
                        tokens += n
                        sum(sums.values()).backward()  # each layer's sum only reaches its own LoRA
                        for layer in paths:
                            totals[layer] += sums[layer].detach().item()
                    for p in params:
                        if p.grad is not None:
                            p.grad /= max(tokens, 1)
                    optimizer.step()
                    scheduler.step()
                    bar.update(1)
                count = sum(len(pairs[i].response) for i in range(len(pairs)))
                for layer in paths:
                    value = totals[layer] / max(count, 1)
                    if not math.isfinite(value):
                        raise CapreseError(f"layer {layer}: LoRA loss became {value}; lower lr={config.lr}")
                    losses[layer].append(value)
    finally:
        bar.close()
        for name, p in model.named_parameters():
            p.requires_grad_(frozen[name])
    return losses
