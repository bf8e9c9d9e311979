"""Per-layer FFN reconstruction error on generated tokens, before and after the Caprese path:
‖FF − FF̂‖/‖FF‖ and ‖FF − (FF̂ + xLR)‖/‖FF‖ (through the diagnostics' ErrorMeter)."""

from __future__ import annotations

from typing import Sequence

import torch

from ..diagnostics.error import ErrorMeter
from .batches import TokenizedPair, collate
from .correction import LowRankCorrection
from .teacher import MethodChoice


def ffn_errors(model, choice: MethodChoice, pairs: Sequence[TokenizedPair], pad_token_id: int,
               corrections: dict[int, LowRankCorrection] | None = None, *, tokenizer=None,
               micro_batch: int = 16) -> dict[str, dict]:
    """{layer: {"method": ErrorMeter result, "caprese": ... (when corrections are given)}}."""
    corrections = corrections or {}
    meters: dict[int, dict[str, ErrorMeter]] = {}

    def observe(layer, x, residual, efficient):
        slot = meters.setdefault(layer, {"method": ErrorMeter(), **({"caprese": ErrorMeter()} if layer in corrections else {})})
        reference = residual + efficient
        slot["method"].update(reference, efficient)
        if layer in corrections:
            path = corrections[layer]
            slot["caprese"].update(reference, efficient + path(x.to(path.L.dtype)).to(efficient.dtype))

    device = next(model.parameters()).device
    with choice.apply(model, tokenizer, teacher_callback=observe) as session, torch.inference_mode():
        for start in range(0, len(pairs), micro_batch):
            batch = collate(pairs[start : start + micro_batch], pad_token_id).to(device)
            with session.teacher_forced(batch.prompt_lengths):
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)
    return {str(layer): {name: meter.result() for name, meter in slot.items()} for layer, slot in sorted(meters.items())}
