"""Dimension-only configs of the paper's model families, for parameter accounting without weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ..registry import Registry

FOLDER = Path(__file__).with_name("reference_configs")

REFERENCE_CONFIGS: Registry[Path] = Registry("reference config")
for _path in sorted(FOLDER.glob("*.json")):
    REFERENCE_CONFIGS.register(_path.stem, _path)


def reference_config(name: str):
    """A transformers config with the dimensions of a public model (e.g. 'Qwen2.5-14B')."""
    raw = json.loads(REFERENCE_CONFIGS.get(name).read_text())
    return AutoConfig.for_model(**raw)


def meta_model(name_or_config):
    """The model built on the meta device: exact parameter shapes, no memory, no weights."""
    config = reference_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
