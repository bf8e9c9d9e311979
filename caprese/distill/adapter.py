"""`CapreseAdapter`: trained low-rank paths for one base model and one efficient method.

    adapter = distill(model, tokenizer, rows, MethodChoice("griffin", 0.5, "first_half"), rank=32)
    adapter.save("runs/x/adapter")
    adapter = CapreseAdapter.load("runs/x/adapter", model)       # refuses another base model
    with adapter.apply(model, tokenizer) as session:             # the method + x L R on generated tokens
        model.generate(...)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import CapreseError
from .adapter_io import AdapterConfig, describe_base, load_adapter, save_adapter
from .correction import LowRankCorrection
from .teacher import MethodChoice


@dataclass
class CapreseAdapter:
    config: AdapterConfig
    corrections: dict[int, LowRankCorrection]

    @property
    def choice(self) -> MethodChoice:
        return MethodChoice(self.config.method, self.config.method_config["sparsity"], self.config.layers,
                            dict(self.config.method_config.get("options", {})))

    def parameter_count(self) -> int:
        return sum(c.parameter_count() for c in self.corrections.values())

    @contextlib.contextmanager
    def apply(self, model, tokenizer=None, *, calibration=None, merged: bool = False, **kwargs):
        """The efficient method with these low-rank paths attached, for the `with` block.

        merged=True concatenates each path into the pruned GRIFFIN weights (eqs 9-10): the same
        outputs from one matmul chain of width k + r (per-token methods add x L R either way)."""
        from .merged import merge_into

        choice = self.choice
        choice.calibration = calibration
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        paths = {layer: c.to(device=device, dtype=dtype) for layer, c in self.corrections.items()}
        with choice.apply(model, tokenizer, **kwargs) as session:
            if merged:
                merge_into(session, paths)
            else:
                for layer, path in paths.items():
                    session.set_correction(layer, path)
            yield session

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for layer, c in self.corrections.items():
            out[f"layers.{layer}.L"] = c.L.detach().float()
            out[f"layers.{layer}.R"] = c.R.detach().float()
        return out

    def save(self, folder) -> Path:
        return save_adapter(folder, self.config, self.tensors())

    @classmethod
    def load(cls, folder, model=None) -> "CapreseAdapter":
        config, tensors = load_adapter(folder, model)
        if config.kind != "caprese":
            raise CapreseError(f"adapter kind {config.kind!r} is not a Caprese adapter (expected 'caprese')")
        corrections = {}
        for layer in config.layers:
            L, R = tensors.get(f"layers.{layer}.L"), tensors.get(f"layers.{layer}.R")
            if L is None or R is None:
                raise CapreseError(f"adapter {str(folder)!r} lacks the factors of layer {layer}")
            if L.shape != (config.hidden_size, config.rank) or R.shape != (config.rank, config.hidden_size):
                raise CapreseError(
                    f"adapter layer {layer} factors have shapes {tuple(L.shape)}/{tuple(R.shape)}, "
                    f"expected ({config.hidden_size}, {config.rank})/({config.rank}, {config.hidden_size})"
                )
            correction = LowRankCorrection(config.hidden_size, config.rank)
            correction.set_factors(L, R)
            corrections[layer] = correction
        return cls(config, corrections)

    @classmethod
    def new(cls, model, base_model: str, choice: MethodChoice, layers: list[int], rank: int, **fields) -> "CapreseAdapter":
        config = AdapterConfig(
            kind="caprese", rank=rank, layers=list(layers), method=choice.name,
            method_config={"sparsity": choice.sparsity, "options": dict(choice.options)},
            **describe_base(model, base_model), **fields,
        )
        device = next(model.parameters()).device
        corrections = {
            layer: LowRankCorrection(config.hidden_size, rank, device=device, seed=layer) for layer in layers
        }
        return cls(config, corrections)

    def with_config(self, **fields) -> "CapreseAdapter":
        return CapreseAdapter(replace(self.config, **fields), self.corrections)
