"""Active-parameter accounting: FFN weights a method multiplies per generated token.

Per layer with D, D_FF, n_in input projections (2 gated, 1 not) and k = round((1-p)·D_FF):
  dense    n_in·D·D_FF + D·D_FF
  topk     n_in·D·D_FF + D·k            (an oracle: the whole Z is computed to choose)
  griffin  (n_in + 1)·D·k              (+ n_in·D·D_FF/ρ amortised, with reselection every ρ)
  cats     D·D_FF + n_in·D·(1-p)·D_FF   (the thresholded projection is dense; the others skip zeros)
  teal     (1-p)·(n_in + 1)·D·D_FF      (p is the parameter-weighted input sparsity)
Layers the method does not touch count as dense. Weights only (biases and norms are negligible).
`active_ffn_parameters_from_config` needs dimensions only (no weights are read: the model is
built on the meta device to count the rest), for the paper's figure 6 at any scale.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..arch.adapters import adapter_for
from .base import METHODS, check_sparsity, kept_count, resolve_layers


def layer_active_parameters(method: str, sparsity: float, hidden: int, intermediate: int, gated: bool,
                            reselect_every: int | None = None) -> dict[str, float]:
    """Active FFN weights per generated token in one layer: {"active", "dense", "reselection"}."""
    name = METHODS.canonical(method)
    p = check_sparsity(sparsity)
    n_in = 2 if gated else 1
    dense = (n_in + 1) * hidden * intermediate
    k = kept_count(p, intermediate)
    reselection = 0.0
    if name == "dense":
        active = dense
    elif name == "topk":
        active = n_in * hidden * intermediate + hidden * k
    elif name == "griffin":
        active = (n_in + 1) * hidden * k
        if reselect_every:
            reselection = n_in * hidden * intermediate / reselect_every
    elif name == "cats":
        # the thresholded activation's projection runs dense; the other n_in projections skip zeros
        active = hidden * intermediate + n_in * hidden * (1 - p) * intermediate
    elif name == "teal":
        active = (1 - p) * dense
    else:  # a method registered later must add its formula here
        raise NotImplementedError(f"no active-parameter formula for method {name!r}")
    return {"active": float(active), "dense": float(dense), "reselection": float(reselection)}


def _unique_parameter_count(model: nn.Module) -> int:
    from ..arch.ffn import base_model_parameters

    return sum(param.numel() for param in base_model_parameters(model))


def _summary(method, sparsity, layers, per_layer, n_layers, model_params, reselect_every) -> dict[str, Any]:
    dense_ffn = sum(entry["dense"] for entry in per_layer)
    active_ffn = sum(entry["active"] for entry in per_layer)
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


def active_ffn_parameters(model: nn.Module, method: str, sparsity: float, layers: Any = "all",
                          reselect_every: int | None = None) -> dict[str, Any]:
    """Per-generated-token FFN parameters of `method` on a loaded model, and the fraction of the model."""
    from ..arch.ffn import ffn_blocks

    blocks = ffn_blocks(model)
    chosen = set(resolve_layers(layers, len(blocks)))
    per_layer = [
        layer_active_parameters(method if b.index in chosen else "dense", sparsity if b.index in chosen else 0.0,
                                b.hidden_size, b.intermediate_size, b.gated, reselect_every)
        for b in blocks
    ]
    return _summary(method, sparsity, sorted(chosen), per_layer, len(blocks), _unique_parameter_count(model), reselect_every)


def active_ffn_parameters_from_config(config, method: str, sparsity: float, layers: Any = "all",
                                      reselect_every: int | None = None) -> dict[str, Any]:
    """The same from a config alone (e.g. `AutoConfig.from_pretrained(id)` of a 70B model)."""
    from transformers import AutoModelForCausalLM

    adapter = adapter_for(config)
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = int(getattr(text, adapter.hidden_size))
    intermediate = int(getattr(text, adapter.intermediate_size))
    n_layers = int(getattr(text, adapter.num_layers))
    chosen = set(resolve_layers(layers, n_layers))
    per_layer = [
        layer_active_parameters(method if i in chosen else "dense", sparsity if i in chosen else 0.0,
                                hidden, intermediate, adapter.gated, reselect_every)
        for i in range(n_layers)
    ]
    with torch.device("meta"):
        shell = AutoModelForCausalLM.from_config(config)
    return _summary(method, sparsity, sorted(chosen), per_layer, n_layers, _unique_parameter_count(shell), reselect_every)
