"""Active-parameter accounting: FFN weights a method multiplies per generated token.

Each method states its own count (`Method.active_parameters`, `Method.reselection_parameters`,
in its module; docs/method.md eq 15 lists them). Layers the method does not touch count as dense.
Totals include reselection. Requested counts use the asked sparsity and the amortised 1/ρ; measured
ones (`measured=`) the sparsity and the reselections counted on generated tokens, post-EOS pads excluded.
Weights only (biases and norms are negligible). `active_ffn_parameters_from_config` needs
dimensions only (no weights are read: the model is built on the meta device to count the rest),
for the paper's figure 6 at any scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from ..arch.adapters import layout_for
from ..arch.ffn import base_model_parameters, ffn_blocks
from .base import METHODS, LayerShape, MethodConfig, build_config, check_sparsity, resolve_layers


def layer_active_parameters(
    method: str,
    sparsity: float,
    hidden: int,
    intermediate: int,
    gated: bool,
    reselect_every: int | None = None,
    *,
    config: MethodConfig | None = None,
    reselections_per_token: float | None = None,
) -> dict[str, float]:
    """Active FFN weights per generated token in one layer: {"active", "dense", "reselection"}
    ("active" excludes "reselection"; the model totals add both). `config` is the method's options
    (default: its defaults, with `reselect_every` where it has one). With `reselections_per_token`
    (measured), reselection costs that many reselections' weights instead of the amortised 1/ρ."""
    cls = METHODS.get(method)
    p = check_sparsity(sparsity)
    if config is None:
        has_rho = "reselect_every" in cls.config_class.__dataclass_fields__
        config = build_config(cls, {"reselect_every": reselect_every} if has_rho and reselect_every else {})
    shape = LayerShape(hidden, intermediate, gated)
    if reselections_per_token is None:
        reselection = cls.reselection_parameters(shape, p, config)
    else:
        reselection = reselections_per_token * cls.reselection_cost(shape, config)
    return {
        "active": float(cls.active_parameters(shape, p, config)),
        "dense": float(shape.dense),
        "reselection": float(reselection),
    }


def _unique_parameter_count(model: nn.Module) -> int:
    return sum(param.numel() for param in base_model_parameters(model))


def _summary(method, sparsity, layers, per_layer, n_layers, model_params, reselect_every) -> dict[str, Any]:
    dense_ffn = sum(entry["dense"] for entry in per_layer)
    active_ffn = sum(entry["active"] + entry["reselection"] for entry in per_layer)  # reselection is work too
    cut = dense_ffn - active_ffn
    return {
        "method": METHODS.canonical(method),
        "sparsity": sparsity,
        "layers": layers,
        "num_layers": n_layers,
        "reselect_every": reselect_every,
        "ffn_params_dense": dense_ffn,
        "ffn_params_active": active_ffn,
        "ffn_params_cut": cut,
        "ffn_active_fraction": active_ffn / dense_ffn,
        "reselection_params_per_token": sum(entry["reselection"] for entry in per_layer),
        "model_params": model_params,
        "model_params_active": model_params - cut,
        "model_active_fraction": (model_params - cut) / model_params,
        "model_cut_fraction": cut / model_params,
    }


def active_ffn_parameters(
    model: nn.Module,
    method: str,
    sparsity: float,
    layers: Any = "all",
    reselect_every: int | None = None,
    *,
    config: MethodConfig | None = None,
    measured: dict[int, tuple[float, float | None]] | None = None,
) -> dict[str, Any]:
    """Per-generated-token FFN parameters of `method` (with options `config`) on a loaded model,
    and the fraction of the model. `measured` maps a layer to (sparsity, reselections per token)
    measured on generated tokens (`MethodSession.measured_active_parameters`); the rest of the
    chosen layers count at the requested sparsity."""
    blocks = ffn_blocks(model)
    chosen = set(resolve_layers(layers, len(blocks)))
    measured = measured or {}

    def layer(b):
        if b.index not in chosen:
            return layer_active_parameters("dense", 0.0, b.hidden_size, b.intermediate_size, b.gated)
        p, reselections = measured.get(b.index, (sparsity, None))
        return layer_active_parameters(
            method, p, b.hidden_size, b.intermediate_size, b.gated, reselect_every,
            config=config, reselections_per_token=reselections,
        )  # fmt: skip

    per_layer = [layer(b) for b in blocks]
    return _summary(
        method, sparsity, sorted(chosen), per_layer, len(blocks), _unique_parameter_count(model), reselect_every
    )


def active_ffn_parameters_from_config(
    config, method: str, sparsity: float, layers: Any = "all", reselect_every: int | None = None
) -> dict[str, Any]:
    """The same from a config alone (e.g. `AutoConfig.from_pretrained(id)` of a 70B model)."""
    adapter = layout_for(config)
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = int(getattr(text, adapter.hidden_size))
    intermediate = int(getattr(text, adapter.intermediate_size))
    n_layers = int(getattr(text, adapter.num_layers))
    chosen = set(resolve_layers(layers, n_layers))
    per_layer = [
        layer_active_parameters(
            method if i in chosen else "dense",
            sparsity if i in chosen else 0.0,
            hidden,
            intermediate,
            adapter.gated,
            reselect_every,
        )
        for i in range(n_layers)
    ]
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config)
    return _summary(
        method, sparsity, sorted(chosen), per_layer, n_layers, _unique_parameter_count(shell), reselect_every
    )
