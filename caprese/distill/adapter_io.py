"""Caprese adapters on disk: `adapter.safetensors` (per-layer factors) + `caprese_adapter.json`.

The config has its own name and a `format` field ("caprese-adapter"), so a caprese folder is never
taken for a PEFT one (PEFT looks for adapter_config.json and finds none); `caprese export-peft`
writes the PEFT form. Folders written before the rename (config in adapter_config.json, no
`format`) still load, and so does a folder `export_peft` wrote.

The config records what the factors are only valid for — the base model (id or path and a
fingerprint of its FFN weights), the efficient method and its settings, the layers and rank —
and how they were made (training settings, data hash, final losses). Loading refuses, in one
line, a different base model or a shape mismatch.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..arch import adapter_for, ffn_blocks
from ..config import LORA_SCOPES
from ..errors import CapreseError, one_line
from ..io import apply_umask, read_json, write_json
from ..registry import check_choice
from .fingerprint import fingerprint_of, signature_of, signatures_match

WEIGHTS = "adapter.safetensors"
CONFIG = "caprese_adapter.json"
LEGACY_CONFIG = "adapter_config.json"  # caprese's config name before PEFT export existed
FORMAT = "caprese-adapter"
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
    base_signature: list[float] = field(default_factory=list)
    """Per base-model weight, mean |w| and RMS: accepts the same base model in another precision
    (fp16 rounds differently from bf16), which the exact fingerprint cannot."""
    format: str = FORMAT
    """Names the file as caprese's own (not PEFT's)."""
    lora_scope: str = "kept"
    """kind 'lora' only: 'kept' (LoRA on the kept neurons) or 'full' (eq 11 on the full matrices)."""


def describe_base(model, base_model: str, fingerprint_like: str | None = None) -> dict[str, Any]:
    """The AdapterConfig fields that pin an adapter to `model` (the fingerprint in the scheme of
    `fingerprint_like`, a stored fingerprint, when checking an adapter against the model)."""
    block = ffn_blocks(model)[0]
    return dict(
        base_model=str(base_model),
        base_fingerprint=fingerprint_of(model, like=fingerprint_like),
        base_signature=signature_of(model, like=fingerprint_like),
        architecture=adapter_for(model).architecture,
        hidden_size=block.hidden_size,
        intermediate_size=block.intermediate_size,
    )


def save_adapter(folder: str | os.PathLike, config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> Path:
    """Write weights then config, each atomically; a folder is complete once its config exists."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        apply_umask(tmp)  # mkstemp's 0600 (safetensors keeps it) -> what open() would have made
        os.replace(tmp, folder / WEIGHTS)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_json(folder / CONFIG, asdict(config))
    return folder


def load_adapter(folder: str | os.PathLike, model=None) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    """Read an adapter; with `model`, refuse it unless it was made for this very base model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CapreseError(f"adapter folder {str(folder)!r} does not exist")
    config, tensors = _read_folder(folder, load_file)
    if model is not None:
        check_adapter_fits(config, tensors, model)
    return config, tensors


def _read_folder(folder: Path, load_file) -> tuple[AdapterConfig, dict[str, torch.Tensor]]:
    from .peft_export import import_peft, is_peft_export  # cycle: peft_export builds adapters

    if is_peft_export(folder):
        return import_peft(folder)
    config_file = folder / CONFIG
    if not config_file.exists() and (folder / LEGACY_CONFIG).exists():
        legacy = read_json(folder / LEGACY_CONFIG)
        if isinstance(legacy, dict) and "peft_type" in legacy:
            raise CapreseError(
                f"{str(folder)!r} is a PEFT adapter without caprese's metadata ({CONFIG} or "
                "caprese_export.json); load it with peft, or export one with `caprese export-peft`"
            )
        config_file = folder / LEGACY_CONFIG
    if not config_file.exists() or not (folder / WEIGHTS).exists():
        raise CapreseError(f"adapter folder {str(folder)!r} lacks {CONFIG} or {WEIGHTS}")
    config = adapter_config_from_dict(read_json(config_file), config_file)
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except Exception as err:  # SafetensorError (truncated, bad header) has no common base to catch by name
        raise CapreseError(f"adapter weights {str(folder / WEIGHTS)!r} are damaged: {one_line(err)}") from None
    return config, tensors


_FIELD_TYPES = {
    "kind": str,
    "base_model": str,
    "base_fingerprint": str,
    "architecture": str,
    "hidden_size": int,
    "intermediate_size": int,
    "rank": int,
    "method": str,
    "method_config": dict,
    "stage": str,
    "training": dict,
    "final_losses": dict,
    "layers": list,
    "format": str,
    "lora_scope": str,
}


def adapter_config_from_dict(raw: Any, where: str | os.PathLike = CONFIG) -> AdapterConfig:
    """An AdapterConfig from caprese_adapter.json's content; one line for anything that does not fit."""
    where = str(where)
    if not isinstance(raw, dict):
        raise CapreseError(f"{where!r} holds {type(raw).__name__}, not a JSON object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CapreseError(
            f"adapter format_version {raw.get('format_version')!r} in {where!r} is not supported (expected {FORMAT_VERSION})"
        )
    raw = {**raw, "format": raw.get("format", FORMAT)}
    if raw["format"] != FORMAT:
        raise CapreseError(f"{where!r} has format {raw['format']!r}, not {FORMAT!r}")
    known = [f.name for f in fields(AdapterConfig)]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CapreseError(f"{where!r}: unknown key {key!r}{hint} (allowed: {', '.join(known)})")
    missing = [
        f.name
        for f in fields(AdapterConfig)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in raw
    ]
    if missing:
        raise CapreseError(f"{where!r} lacks {', '.join(map(repr, missing))}")
    for key, kind in _FIELD_TYPES.items():
        value = raw.get(key)
        if key in raw and value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise CapreseError(f"{where!r}: {key} {value!r} is not {'an' if kind is int else 'a'} {kind.__name__}")
    if raw["rank"] < 1 or raw["hidden_size"] < 1 or raw["intermediate_size"] < 1:
        raise CapreseError(f"{where!r}: rank, hidden_size and intermediate_size must be >= 1")
    check_choice(f"{where!r}: lora_scope", raw.get("lora_scope", "kept"), LORA_SCOPES)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in raw["layers"]):
        raise CapreseError(f"{where!r}: layers {raw['layers']!r} must be a list of integers")
    return AdapterConfig(**raw)


def check_adapter_fits(config: AdapterConfig, tensors: dict[str, torch.Tensor], model) -> None:
    base = describe_base(model, config.base_model, config.base_fingerprint)
    for key in ("architecture", "hidden_size", "intermediate_size"):
        if base[key] != getattr(config, key):
            raise CapreseError(f"adapter was made for {key}={getattr(config, key)!r} but the model has {base[key]!r}")
    n_layers = len(ffn_blocks(model))
    bad_layers = [i for i in config.layers if not 0 <= i < n_layers]
    if bad_layers:
        raise CapreseError(f"adapter layers {bad_layers} do not exist in a {n_layers}-layer model")
    if base["base_fingerprint"] != config.base_fingerprint and not signatures_match(
        base["base_signature"], config.base_signature
    ):
        raise CapreseError(
            f"adapter was made for base model {config.base_model!r} (fingerprint {config.base_fingerprint[:20]}), "
            f"not this one (fingerprint {base['base_fingerprint'][:20]})"
        )
