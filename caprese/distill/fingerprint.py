"""A dtype-independent fingerprint of a model's FFN weights, so an adapter refuses another base model."""

from __future__ import annotations

import hashlib

import torch

from ..arch import ffn_blocks

_SAMPLES_PER_MATRIX = 4096


def ffn_fingerprint(model) -> str:
    """sha256 over every FFN matrix's shape and a fixed strided sample of its values in bfloat16.

    bfloat16 rounding makes an fp32 model and the same model loaded in bf16 agree; the strided
    sample keeps this fast for 8B-parameter models while any retraining or other checkpoint changes it.
    """
    digest = hashlib.sha256()
    for block in ffn_blocks(model):
        for name in ("gate", "up", "gate_up", "down"):
            linear = getattr(block, name)
            if linear is None:
                continue
            weight = linear.weight.detach()
            flat = weight.reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_MATRIX)
            sample = flat[::step].to("cpu", torch.bfloat16).view(torch.int16)
            digest.update(f"{block.index}.{name}:{tuple(weight.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()
