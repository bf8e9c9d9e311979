"""A dtype-independent fingerprint of a model's FFN weights, so an adapter refuses another base model."""

from __future__ import annotations

import hashlib

import torch

from ..arch import ffn_blocks

_SAMPLES_PER_MATRIX = 4096
SIGNATURE_RTOL = 1e-3


def _samples(model):
    for block in ffn_blocks(model):
        for name in ("gate", "up", "gate_up", "down"):
            linear = getattr(block, name)
            if linear is None:
                continue
            weight = linear.weight.detach()
            flat = weight.reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_MATRIX)
            yield block.index, name, weight.shape, flat[::step]


def ffn_signature(model) -> list[float]:
    """Per FFN matrix, mean |w| and root-mean-square of the same strided sample, in float64.

    The exact fingerprint cannot match across every precision (fp32 → fp16 → bf16 rounds twice,
    fp16 flushes tiny weights), while these means move by ~1e-5 relative between the fp32, bf16
    and fp16 copies of one model and by far more between checkpoints: the tolerant second check."""
    out = []
    for _, _, _, sample in _samples(model):
        values = sample.to("cpu", torch.float64)
        out += [float(values.abs().mean()), float(values.pow(2).mean().sqrt())]
    return out


def signatures_match(a, b, rtol: float = SIGNATURE_RTOL) -> bool:
    if not a or not b or len(a) != len(b):
        return False
    return all(abs(x - y) <= rtol * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b))


def ffn_fingerprint(model) -> str:
    """sha256 over every FFN matrix's shape and a fixed strided sample of its values in bfloat16.

    bfloat16 rounding makes an fp32 model and the same model loaded in bf16 agree; the strided
    sample keeps this fast for 8B-parameter models while any retraining or other checkpoint changes it.
    """
    digest = hashlib.sha256()
    for index, name, shape, sample in _samples(model):
        digest.update(f"{index}.{name}:{tuple(shape)}".encode())
        digest.update(sample.to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return digest.hexdigest()
