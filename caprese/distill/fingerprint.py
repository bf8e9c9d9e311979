"""A dtype-independent fingerprint of a base model, so an adapter refuses any other base model.

`model_fingerprint` hashes every weight of the original model (attention, embeddings, norms, FFNs:
inside an FFN wrapper only its `base_layer`, so an attached Caprese path never counts), each
rounded to bfloat16 so that an fp32 model and the same model loaded in bf16 agree. It streams one
tensor at a time (an 8B model is hashed in seconds, never copied whole). Its value carries the
scheme as a prefix ("all-bf16:..."). Adapters written before it held `ffn_fingerprint`, a strided
sample of the FFN matrices only (64 hex digits, no prefix); `fingerprint_of(model, like=stored)`
recomputes whichever scheme a stored value used, so those adapters still load.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..arch import ffn_blocks
from ..arch.ffn import FFNWrapper

SCHEME = "all-bf16"
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
    """Per FFN matrix, mean |w| and root-mean-square of the same strided sample, in float64
    (the signature kept beside legacy FFN-sample fingerprints)."""
    out = []
    for _, _, _, sample in _samples(model):
        values = sample.to("cpu", torch.float64)
        out += [float(values.abs().mean()), float(values.pow(2).mean().sqrt())]
    return out


def model_signature(model: nn.Module) -> list[float]:
    """Per base-model weight (every one `model_fingerprint` hashes), mean |w| and root-mean-square.

    The exact fingerprint cannot match across every precision (fp32 → fp16 → bf16 rounds twice,
    fp16 flushes tiny weights), while these means move by ~1e-5 relative between the fp32, bf16
    and fp16 copies of one model and by far more between checkpoints: the tolerant second check.
    Its limit: a change to a few weights of a large matrix moves its means by less than the
    tolerance, so only the exact fingerprint tells such near-identical models apart."""
    out = []
    with torch.no_grad():
        for _, tensor in base_named_tensors(model):
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            values = tensor.detach().float()  # reduced on the tensor's own device
            stats = torch.stack([values.abs().mean(), values.pow(2).mean().sqrt()]).double().cpu()
            out += stats.tolist()
    return out


def signature_of(model: nn.Module, like: str | None = None) -> list[float]:
    """The model's signature in the scheme of the stored fingerprint `like` (see `fingerprint_of`)."""
    if like is not None and ":" not in like:
        return ffn_signature(model)
    return model_signature(model)


def signatures_match(a, b, rtol: float = SIGNATURE_RTOL) -> bool:
    if not a or not b or len(a) != len(b):
        return False
    return all(abs(x - y) <= rtol * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b))


def base_named_tensors(model: nn.Module):
    """(name, tensor) for every parameter and persistent buffer of the original model, each once
    (tied weights under their first name); wrapper levels are left out of the names."""
    seen: set[int] = set()

    def visit(module: nn.Module, prefix: str):
        if isinstance(module, FFNWrapper):
            module = module.get_base_layer()
        persistent = {name for name in module._buffers if name not in module._non_persistent_buffers_set}
        tensors = [*module._parameters.items(), *((n, b) for n, b in module._buffers.items() if n in persistent)]
        for name, tensor in tensors:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            yield prefix + name, tensor
        for name, child in module.named_children():
            yield from visit(child, f"{prefix}{name}.")

    yield from visit(model, "")


def _rounded_bytes(tensor: torch.Tensor) -> bytes:
    value = tensor.detach()
    if value.is_floating_point():
        value = value.to(torch.bfloat16).view(torch.int16)
    return value.contiguous().cpu().numpy().tobytes()


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the name, shape and bfloat16-rounded values of every base-model weight."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in base_named_tensors(model):
            digest.update(f"{name}:{tuple(tensor.shape)}\0".encode())
            digest.update(_rounded_bytes(tensor))
    return f"{SCHEME}:{digest.hexdigest()}"


def ffn_fingerprint(model) -> str:
    """The earlier scheme (kept to check adapters saved with it): sha256 over every FFN matrix's
    shape and a fixed strided sample of its values in bfloat16."""
    digest = hashlib.sha256()
    for index, name, shape, sample in _samples(model):
        digest.update(f"{index}.{name}:{tuple(shape)}".encode())
        digest.update(sample.to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def fingerprint_of(model: nn.Module, like: str | None = None) -> str:
    """The model's fingerprint in the scheme `like` was made with (the current one by default)."""
    if like is not None and ":" not in like:
        return ffn_fingerprint(model)
    return model_fingerprint(model)
