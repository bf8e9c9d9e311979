"""Teacher-forced batches and their incremental-decode reference.

`teacher_forced_batch` lays prompt + continuation out the way `generate` does: prompts left
padded to a common length P (so every prompt ends at position P, and P is each sequence's prompt
length in padded coordinates), continuations right padded. One forward over it inside
`session.teacher_forced(batch.prompt_lengths)` equals `incremental_logits` (prefill over the
prompts, then one token at a time through the KV cache) — what distillation and perplexity use.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import CapreseError


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so left padding does not shift a sequence."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


@dataclass
class ForcedBatch:
    input_ids: torch.Tensor  # (B, S)
    attention_mask: torch.Tensor  # (B, S)
    prompt_lengths: torch.Tensor  # (B,), in padded coordinates
    generated: torch.Tensor  # (B, S) bool: real continuation tokens

    @property
    def position_ids(self) -> torch.Tensor:
        return position_ids(self.attention_mask)

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    def to(self, device) -> ForcedBatch:
        return ForcedBatch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.prompt_lengths, self.generated))
        )


def teacher_forced_batch(
    prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad_id: int = 0
) -> ForcedBatch:
    if len(prompts) != len(continuations) or not prompts:
        raise CapreseError(
            f"need as many prompts as continuations, and at least one (got {len(prompts)} and {len(continuations)})"
        )
    prompts = [list(map(int, p)) for p in prompts]
    continuations = [list(map(int, c)) for c in continuations]
    if any(not p for p in prompts):
        raise CapreseError("every prompt needs at least one token")
    width_p = max(map(len, prompts))
    width_c = max(map(len, continuations))
    batch = len(prompts)
    ids = torch.full((batch, width_p + width_c), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (p, c) in enumerate(zip(prompts, continuations)):
        ids[row, width_p - len(p) : width_p] = torch.tensor(p)
        mask[row, width_p - len(p) : width_p] = 1
        if c:
            ids[row, width_p : width_p + len(c)] = torch.tensor(c)
            mask[row, width_p : width_p + len(c)] = 1
    generated = mask.bool().clone()
    generated[:, :width_p] = False
    return ForcedBatch(ids, mask, torch.full((batch,), width_p, dtype=torch.long), generated)


def _cache_keyword(model) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; take whichever this model's forward has."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _returned_cache(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


def incremental_logits(model, batch: ForcedBatch) -> torch.Tensor:
    """Logits (B, S, V) from a prefill over the prompt region, then token-by-token decode."""
    keyword = _cache_keyword(model)
    width_p = int(batch.prompt_lengths.max())
    if bool((batch.prompt_lengths != width_p).any()):
        raise CapreseError(
            "incremental_logits needs prompts that end at the same position (teacher_forced_batch's layout)"
        )
    positions = batch.position_ids
    out = model(
        input_ids=batch.input_ids[:, :width_p],
        attention_mask=batch.attention_mask[:, :width_p],
        position_ids=positions[:, :width_p],
        use_cache=True,
    )
    logits, cache = [out.logits], _returned_cache(out)
    for t in range(width_p, batch.input_ids.shape[1]):
        out = model(
            input_ids=batch.input_ids[:, t : t + 1],
            attention_mask=batch.attention_mask[:, : t + 1],
            position_ids=positions[:, t : t + 1],
            use_cache=True,
            **{keyword: cache},
        )
        logits.append(out.logits)
        cache = _returned_cache(out)
    return torch.cat(logits, dim=1)
