"""Calibration statistics of the dense model, collected in one streamed pass over a calibration set.

Per chosen layer, only what the method asks for (`Method.calibration_needs`):
  gate_abs      histogram of |σ(x W_g)| (|σ(x W_1)| without a gate): CATS's calibrated τ
  inputs        histogram of the signed FFN inputs x: TEAL's gate/up thresholds
  intermediate  histogram of the signed Z: TEAL's down threshold
  sample        `max_sample_tokens` rows of x drawn uniformly at random (seeded) from all counted
                tokens, in random order, so any prefix is a uniform sample too: TEAL's down
                threshold and greedy search score on them
Pads never count; for prompt/response pairs only response tokens count. A `caprese.trace.Trace` on
each chosen layer's FFN input reads x (its hooks are removed on exit, also after an exception); the
forward stops after the last needed layer (`stop=True`), so the LM head and later layers never run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..arch.ffn import FFNBlock, ffn_blocks
from ..errors import CapreseError
from ..trace import StopForward, Trace
from .distributions import StreamingHistogram
from .forcing import teacher_forced_batch

NEEDS = ("gate_abs", "inputs", "intermediate", "sample")


@dataclass
class LayerCalibration:
    gate_abs: StreamingHistogram | None = None
    inputs: StreamingHistogram | None = None
    intermediate: StreamingHistogram | None = None
    sample: torch.Tensor | None = None
    sample_keys: torch.Tensor | None = field(default=None, repr=False)
    """The sampled rows' random keys (ascending): bottom-k sampling keeps the rows with the smallest."""
    generator: torch.Generator | None = field(default=None, repr=False)
    tokens: int = 0


@dataclass
class CalibrationStats:
    """What a calibration pass measured, per layer; reusable across sparsities and methods."""

    layers: dict[int, LayerCalibration] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    sequences: int = 0

    def layer(self, index: int, needs: set[str]) -> LayerCalibration:
        missing = set(needs) - set(self.needs)
        if index not in self.layers or missing:
            what = ", ".join(sorted(missing)) or f"layer {index}"
            raise CapreseError(
                f"the calibration statistics lack {what}; collect them with the method's needs and layers"
            )
        return self.layers[index]


def _is_pair(item: Any) -> bool:
    return (isinstance(item, dict) and "prompt" in item and "response" in item) or (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and all(isinstance(part, (str, list, tuple, torch.Tensor)) for part in item)
        and not all(isinstance(part, int) for part in item)
    )


def _pair_batches(items: list, tokenizer, batch_size: int, max_length: int) -> list[dict]:
    """Prompt/response pairs laid out as in generation; only response tokens are counted."""

    def ids(part, special: bool) -> list[int]:
        if isinstance(part, str):
            if tokenizer is None:
                raise CapreseError("a calibration set of texts needs the model's tokenizer (tokenizer=...)")
            return list(tokenizer(part, add_special_tokens=special)["input_ids"])
        return torch.as_tensor(part, dtype=torch.long).reshape(-1).tolist()

    pad = getattr(tokenizer, "pad_token_id", None) or 0
    batches = []
    for start in range(0, len(items), batch_size):
        pairs = [
            (row["prompt"], row["response"]) if isinstance(row, dict) else tuple(row)
            for row in items[start : start + batch_size]
        ]
        prompts = [ids(p, True)[-max_length:] for p, _ in pairs]
        responses = [ids(r, False)[:max_length] for _, r in pairs]
        if any(not p for p in prompts):
            raise CapreseError("the calibration set has a pair with an empty prompt")
        forced = teacher_forced_batch(prompts, responses, pad)
        batches.append(
            {"input_ids": forced.input_ids, "attention_mask": forced.attention_mask, "counted": forced.generated}
        )
    return batches


def calibration_batches(data: Any, tokenizer=None, batch_size: int = 8, max_length: int = 512) -> list[dict]:
    """Normalise a calibration set to batches of {input_ids, attention_mask, counted} (left padded).

    Accepts: strings or {"text": ...} rows (needs `tokenizer`), token-id lists or 1-D tensors,
    a dict batch with input_ids (and attention_mask), or a list of such dict batches: every real
    token counts. Or prompt/response pairs ({"prompt", "response"} rows or 2-tuples of texts or
    token lists): only response tokens count, the tokens efficient methods act on.
    """
    if isinstance(data, dict):
        data = [data]
    items = list(data) if data is not None else []
    if not items:
        raise CapreseError("the calibration set is empty: give at least one text or token sequence")
    if isinstance(items[0], dict) and "input_ids" in items[0]:
        batches = [
            {"input_ids": b["input_ids"], "attention_mask": b.get("attention_mask", torch.ones_like(b["input_ids"]))}
            for b in items
        ]
    elif _is_pair(items[0]):
        batches = _pair_batches(items, tokenizer, batch_size, max_length)
    else:
        batches = _token_batches(
            [row["text"] if isinstance(row, dict) and "text" in row else row for row in items],
            tokenizer,
            batch_size,
            max_length,
        )
    for batch in batches:
        batch.setdefault("counted", batch["attention_mask"].bool())
    if sum(int(b["counted"].sum()) for b in batches) == 0:
        raise CapreseError("the calibration set is empty: it has no real (non-pad) token to count")
    return batches


def _token_batches(items: list, tokenizer, batch_size: int, max_length: int) -> list[dict]:
    batches = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        if isinstance(chunk[0], str):
            if tokenizer is None:
                raise CapreseError("a calibration set of texts needs the model's tokenizer (tokenizer=...)")
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        else:
            sequences = [torch.as_tensor(seq, dtype=torch.long).reshape(-1)[-max_length:] for seq in chunk]
            if any(seq.numel() == 0 for seq in sequences):
                raise CapreseError("the calibration set has an empty token sequence")
            width = max(seq.numel() for seq in sequences)
            ids = torch.zeros(len(sequences), width, dtype=torch.long)
            mask = torch.zeros(len(sequences), width, dtype=torch.long)
            for row, seq in enumerate(sequences):
                ids[row, width - seq.numel() :] = seq
                mask[row, width - seq.numel() :] = 1
            batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def _observe(block: FFNBlock, stats: LayerCalibration, x: torch.Tensor, counted: torch.Tensor, needs, max_sample: int):
    rows = x[counted]  # (N, D) counted tokens only (never pads)
    stats.tokens += rows.shape[0]
    if "inputs" in needs:
        stats.inputs.update(rows)
    if "gate_abs" in needs or "intermediate" in needs:
        gate_pre, up = block.pre_activations(rows)
        if "gate_abs" in needs:
            stats.gate_abs.update(block.act(gate_pre if block.gated else up).abs())
        if "intermediate" in needs:
            stats.intermediate.update(block.combine(gate_pre, up))
    if "sample" in needs and rows.shape[0]:
        _reservoir(stats, rows.detach().cpu(), max_sample)


def _reservoir(stats: LayerCalibration, rows: torch.Tensor, max_sample: int) -> None:
    """Uniform sample without replacement over every token seen so far (bottom-k of i.i.d. keys),
    independent of batch order and of how the tokens were split into batches' lengths."""
    keys = torch.rand(rows.shape[0], generator=stats.generator, dtype=torch.float64)
    if stats.sample is not None:
        rows, keys = torch.cat([stats.sample, rows]), torch.cat([stats.sample_keys, keys])
    order = torch.argsort(keys)[:max_sample]
    stats.sample, stats.sample_keys = rows[order], keys[order]


def collect_calibration(
    model,
    data: Any,
    *,
    needs: Iterable[str],
    layers: Iterable[int] | None = None,
    tokenizer=None,
    batch_size: int = 8,
    max_length: int = 512,
    max_sample_tokens: int = 2048,
    bins: int = 1 << 14,
    progress: bool = True,
    seed: int = 0,
) -> CalibrationStats:
    """One pass of the dense model over `data`, collecting `needs` at `layers` (default: all)."""
    needs = frozenset(needs)
    unknown = needs - set(NEEDS)
    if unknown:
        raise CapreseError(f"calibration need {sorted(unknown)[0]!r} is not known (choose from: {', '.join(NEEDS)})")
    batches = calibration_batches(data, tokenizer, batch_size, max_length)
    blocks = ffn_blocks(model)
    chosen = sorted(set(range(len(blocks)) if layers is None else layers))
    stats = CalibrationStats(needs=needs)
    for index in chosen:
        stats.layers[index] = LayerCalibration(
            gate_abs=StreamingHistogram(bins, nonnegative=True) if "gate_abs" in needs else None,
            inputs=StreamingHistogram(bins) if "inputs" in needs else None,
            intermediate=StreamingHistogram(bins) if "intermediate" in needs else None,
            generator=torch.Generator().manual_seed(seed * 100003 + index) if "sample" in needs else None,
        )
    if not needs:
        return stats
    current: dict[str, torch.Tensor] = {}

    def observe(layer: int, x: torch.Tensor) -> None:
        _observe(blocks[layer], stats.layers[layer], x, current["counted"], needs, max_sample_tokens)

    device = next(model.parameters()).device
    # the FFN inputs through caprese.trace (hooks removed on exit); stop=True ends each forward
    # after the last calibrated layer, since nothing after it is needed
    with (
        Trace(model, points=["ffn_in"], layers=chosen, callback={"ffn_in": observe}, stop=True, blocks=blocks),
        torch.inference_mode(),
    ):
        for batch in tqdm(batches, desc="calibration", disable=not progress, leave=False):
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            current["counted"] = batch["counted"].to(device) & mask.bool()
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens
            try:
                model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            except StopForward:
                pass
            stats.sequences += ids.shape[0]
    return stats
