"""Caprese adapters on disk: `adapter.safetensors` (per-layer factors) + `adapter_config.json`.

The config records what the factors are only valid for — the base model (id or path and a
fingerprint of its FFN weights), the efficient method and its settings, the layers and rank —
and how they were made (training settings, data hash, final losses). Loading refuses, in one
line, a different base model or a shape mismatch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..arch import adapter_for, ffn_blocks
from ..errors import CapreseError
from ..io import read_json, write_json
from .fingerprint import fingerprint_of

WEIGHTS = "adapter.safetensors"
CONFIG = "adapter_config.json"
FORMAT_VERSION = 1


@dataclass
class AdapterConfig:
    kind: str
    """'caprese' (x L R beside the efficient FFN) or 'lora' (the eq 11 baseline)."""
    base_model: str
    base_fingerprint: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    layers: list[int]
    rank: int
    method: str
    method_config: dict[str, Any] = field(default_factory=dict)
    stage: str = "layerwise"
    training: dict[str, Any] = field(default_factory=dict)
    data_hash: str | None = None
    final_losses: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def describe_base(model, base_model: str, fingerprint_like: str | None = None) -> dict[str, Any]:
    """The AdapterConfig fields that pin an adapter to `model` (the fingerprint in the scheme of
    `fingerprint_like`, a stored fingerprint, when checking an adapter against the model)."""
    block = ffn_blocks(model)[0]
    return dict(
        base_model=str(base_model),
        base_fingerprint=fingerprint_of(model, like=fingerprint_like),
        architecture=adapter_for(model).architecture,
        hidden_size=block.hidden_size,
        intermediate_size=block.intermediate_size,
    )


def save_adapter(folder: str | os.PathLike, config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> Path:
    """Write weights then config, each atomically; a folder is complete once its config exists."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, folder / WEIGHTS)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_json(folder / CONFIG, asdict(config))
    return folder


def load_adapter(folder: str | os.PathLike, model=None) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """Read an adapter; with `model`, refuse it unless it was made for this very base model."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise CapreseError(f"adapter folder {str(folder)!r} lacks {CONFIG} or {WEIGHTS}")
    raw = read_json(folder / CONFIG)
    if raw.get("format_version") != FORMAT_VERSION:
        raise CapreseError(f"adapter format_version {raw.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    config = AdapterConfig(**raw)
    tensors = load_file(str(folder / WEIGHTS))
    if model is not None:
        check_adapter_fits(config, tensors, model)
    return config, tensors


def check_adapter_fits(config: AdapterConfig, tensors: dict[str, torch.Tensor], model) -> None:
    base = describe_base(model, config.base_model, config.base_fingerprint)
    for key in ("architecture", "hidden_size", "intermediate_size"):
        if base[key] != getattr(config, key):
            raise CapreseError(
                f"adapter was made for {key}={getattr(config, key)!r} but the model has {base[key]!r}"
            )
    n_layers = len(ffn_blocks(model))
    bad_layers = [i for i in config.layers if not 0 <= i < n_layers]
    if bad_layers:
        raise CapreseError(f"adapter layers {bad_layers} do not exist in a {n_layers}-layer model")
    if base["base_fingerprint"] != config.base_fingerprint:
        raise CapreseError(
            f"adapter was made for base model {config.base_model!r} (fingerprint {config.base_fingerprint[:20]}), "
            f"not this one (fingerprint {base['base_fingerprint'][:20]})"
        )
