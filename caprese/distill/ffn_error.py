"""Per-layer FFN reconstruction error on generated tokens, of the method alone and with its
trained modules: ‖FF − FF̂‖/‖FF‖ and cosine, through the diagnostics' ErrorMeter."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..diagnostics.error import ErrorMeter
from .adapter import attach
from .batches import TokenizedPair, collate
from .teacher import MethodChoice


def _errors(model, choice, pairs, pad_token_id, tokenizer, micro_batch, attach=None) -> dict[int, dict]:
    meters: dict[int, ErrorMeter] = {}
    session = None

    def observe(layer, x, residual, efficient):
        dense = residual + efficient
        # teacher mode hands over FF̂ alone; a Caprese path beside it is added here (a LoRA path
        # lives inside the method, so FF̂ already carries it)
        correction = session.wrappers[layer].correction
        if correction is not None:
            efficient = efficient + correction(x)
        meters.setdefault(layer, ErrorMeter()).update(dense, efficient)

    device = next(model.parameters()).device
    # `observe` reads `session` once the with-statement has bound it
    with choice.apply(model, tokenizer, teacher_callback=observe) as session, torch.inference_mode():  # noqa: F811
        if attach is not None:
            attach(session)
        for start in range(0, len(pairs), micro_batch):
            batch = collate(pairs[start : start + micro_batch], pad_token_id).to(device)
            with session.teacher_forced(batch.prompt_lengths):
                model(**batch.model_inputs(), logits_to_keep=1)
    return {layer: meter.result() for layer, meter in meters.items()}


def ffn_errors(
    model,
    choice: MethodChoice,
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    adapter=None,
    *,
    tokenizer=None,
    micro_batch: int = 16,
) -> dict[str, dict]:
    """{layer: {"method": {...}, "<adapter kind>": {...}}} (the second only with an adapter)."""
    method = _errors(model, choice, pairs, pad_token_id, tokenizer, micro_batch)
    out = {str(layer): {"method": result} for layer, result in sorted(method.items())}
    if adapter is not None:
        modules = adapter.modules_for(model)  # copies: the adapter's own factors stay as trained
        adapted = _errors(
            model,
            choice,
            pairs,
            pad_token_id,
            tokenizer,
            micro_batch,
            attach=lambda session: attach(adapter.kind, session, modules),
        )
        for layer, result in adapted.items():
            out[str(layer)][adapter.kind] = result
    return out
