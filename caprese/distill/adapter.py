"""Trained low-rank modules for one base model and one efficient method, on disk and in use.

Two kinds: "caprese" (the x L R path beside the efficient FFN, eq 7/8) and "lora" (the eq-11
baseline inside GRIFFIN's pruned block).

    adapter = distill(model, tokenizer, rows, MethodChoice("griffin", 0.5, "first_half"), rank=32)
    adapter.save("runs/x/adapter")
    adapter = CapreseAdapter.load("runs/x/adapter", model)       # refuses another base model
    with adapter.apply(model, tokenizer) as session:             # the method + its low-rank modules
        model.generate(...)
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..arch import ffn_blocks
from ..config import KINDS
from ..errors import CapreseError
from ..methods.choice import MethodChoice
from ..registry import check_choice
from .adapter_io import AdapterConfig, describe_base, load_adapter, save_adapter
from .lora import LoraPath, attach_lora
from .merged import merge_into
from .path import LowRankPath

__all__ = ["CapreseAdapter", "KINDS", "attach", "build_module"]


def build_module(config: AdapterConfig, layer: int, *, gated: bool = True, device=None) -> nn.Module:
    """A fresh module of the adapter's kind for one layer (R or B at zero: starts as the method)."""
    if config.kind == "caprese":
        return LowRankPath(config.hidden_size, config.rank, device=device, seed=layer)
    return LoraPath(
        config.hidden_size,
        config.intermediate_size,
        config.rank,
        gated,
        seed=layer,
        device=device,
        scope=config.lora_scope,
    )


def attach(kind: str, session, modules: dict[int, nn.Module], *, merged: bool = False) -> None:
    """Put each layer's module into an applied method."""
    if kind == "lora":
        attach_lora(session, modules)
    elif merged:
        merge_into(session, modules)
    else:
        for layer, module in modules.items():
            session.set_correction(layer, module)


@dataclass
class CapreseAdapter:
    config: AdapterConfig
    corrections: dict[int, nn.Module]
    """Per layer: a LowRankPath (kind "caprese") or a LoraPath (kind "lora")."""

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def choice(self) -> MethodChoice:
        return MethodChoice(
            self.config.method,
            self.config.method_config["sparsity"],
            self.config.layers,
            dict(self.config.method_config.get("options", {})),
        )

    def parameter_count(self) -> int:
        return sum(p.numel() for module in self.corrections.values() for p in module.parameters())

    @contextlib.contextmanager
    def apply(
        self, model, tokenizer=None, *, calibration=None, merged: bool = False, accumulate_fp32: bool = False, **kwargs
    ):
        """The efficient method with these modules attached, for the `with` block.

        merged=True (Caprese only) concatenates each path into the pruned GRIFFIN weights (eqs 9-10):
        the same outputs from one matmul chain of width k + r (per-token methods add x L R either way).
        The model runs copies of the modules in its own dtype, on each layer's device; the adapter's
        float32 factors are never changed (`save()` after `apply` writes what was trained).
        accumulate_fp32=True keeps the copies in float32 and computes x L R in float32 (Caprese only,
        unmerged: merged weights live in the model's dtype)."""
        if merged and self.kind != "caprese":
            raise CapreseError(f"merged inference is Caprese's (eqs 9-10), not adapter kind {self.kind!r}")
        if accumulate_fp32 and (merged or self.kind != "caprese"):
            raise CapreseError(
                "accumulate_fp32 is for the unmerged Caprese path (merged weights and LoRA factors "
                "run in the model's dtype)"
            )
        choice = self.choice
        choice.calibration = calibration
        choice.calibration_source = None
        modules = self.modules_for(model, accumulate_fp32=accumulate_fp32)
        with choice.apply(model, tokenizer, **kwargs) as session:
            attach(self.kind, session, modules, merged=merged)
            yield session

    def modules_for(self, model, *, accumulate_fp32: bool = False) -> dict[int, nn.Module]:
        """Per layer, a copy of its module on that layer's FFN device, in the model's dtype (or float32
        with accumulate_fp32); the adapter's own modules are left as they are."""
        blocks = ffn_blocks(model)
        out = {}
        for layer, module in self.corrections.items():
            weight = blocks[layer].down.weight
            dtype = torch.float32 if accumulate_fp32 else weight.dtype
            copy_ = copy.deepcopy(module).to(device=weight.device, dtype=dtype)
            if accumulate_fp32:
                copy_.accumulate_fp32 = True
            for p in copy_.parameters():
                p.requires_grad_(False)
            out[layer] = copy_
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"layers.{layer}.{name}": tensor.detach().float()
            for layer, module in self.corrections.items()
            for name, tensor in module.state_dict().items()
        }

    def save(self, folder) -> Path:
        return save_adapter(folder, self.config, self.tensors())

    @classmethod
    def load(cls, folder, model=None) -> CapreseAdapter:
        config, tensors = load_adapter(folder, model)
        check_choice("adapter kind", config.kind, KINDS)
        gated = config.method_config.get("gated", True)
        corrections = {}
        for layer in config.layers:
            prefix = f"layers.{layer}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            module = build_module(config, layer, gated=gated)
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise CapreseError(f"adapter {str(folder)!r} layer {layer} does not fit: {first}") from None
            corrections[layer] = module
        return cls(config, corrections)

    @classmethod
    def new(
        cls,
        model,
        base_model: str,
        choice: MethodChoice,
        layers: list[int],
        rank: int,
        *,
        kind: str = "caprese",
        **fields,
    ) -> CapreseAdapter:
        check_choice("adapter kind", kind, KINDS)
        gated = ffn_blocks(model)[0].gated
        config = AdapterConfig(
            kind=kind,
            rank=rank,
            layers=list(layers),
            method=choice.name,
            method_config={"sparsity": choice.sparsity, "options": dict(choice.options), "gated": gated},
            **describe_base(model, base_model),
            **fields,
        )
        device = next(model.parameters()).device
        return cls(config, {layer: build_module(config, layer, gated=gated, device=device) for layer in layers})

    def with_config(self, **fields) -> CapreseAdapter:
        return CapreseAdapter(replace(self.config, **fields), self.corrections)
