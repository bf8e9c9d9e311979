"""A resolved FFN block and the FFN equations (docs/method.md eqs 1-2), computed from layout parts only.

`ffn_blocks(model)` resolves every layout path and checks every shape when a model is loaded, so
a mapping gap fails loudly instead of hooking the wrong width. Efficient methods and the Caprese
low-rank path compute through `FFNBlock.intermediate` / `FFNBlock.output`, optionally restricted to
a subset of neurons, so each equation lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CapreseError
from .layouts import ArchitectureLayout, layout_for


class FFNWrapper(nn.Module):
    """Base class of modules that caprese puts in place of an FFN; the original stays as `base_layer`."""

    base_layer: nn.Module

    def get_base_layer(self) -> nn.Module:
        module = self.base_layer
        while isinstance(module, FFNWrapper):
            module = module.base_layer
        return module


def base_model_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The original model's parameters, each once (tied weights shared): inside an FFN wrapper
    only its `base_layer` counts, so an attached correction or LoRA path is never taken for
    part of the base model."""
    seen: dict[int, nn.Parameter] = {}

    def visit(module: nn.Module) -> None:
        if isinstance(module, FFNWrapper):
            module = module.get_base_layer()
        for param in module.parameters(recurse=False):
            seen.setdefault(id(param), param)
        for child in module.children():
            visit(child)

    visit(model)
    return list(seen.values())


def get_path(root: nn.Module, path: str, *, what: str, arch: str):
    obj = root
    for part in path.split("."):
        if not hasattr(obj, part):
            raise CapreseError(f"architecture {arch}: {what} path {path!r} does not resolve (no attribute {part!r})")
        obj = getattr(obj, part)
    return obj


@dataclass
class FFNBlock:
    """One decoder layer's FFN, seen through its architecture layout."""

    index: int
    layout: ArchitectureLayout
    layer: nn.Module
    module: nn.Module
    """The original FFN module (never a caprese wrapper)."""
    down: nn.Linear
    act: nn.Module
    gate: nn.Linear | None
    up: nn.Linear | None
    gate_up: nn.Linear | None
    hidden_size: int
    intermediate_size: int

    @property
    def gated(self) -> bool:
        return self.layout.gated

    @property
    def adapter(self) -> ArchitectureLayout:
        """Deprecated name of `layout`."""
        return self.layout

    # -- the weights as (W_g, W_1) slices; neurons=None means all D_FF -----------------------
    def _input_linear(self, which: str) -> tuple[nn.Linear, int]:
        """The nn.Linear holding W_g or W_1 and the row offset of that matrix inside it."""
        if self.gate_up is not None:
            return self.gate_up, (0 if which == "gate" else self.intermediate_size)
        linear = self.gate if which == "gate" else self.up
        return linear, 0

    def input_weight(self, which: str, neurons: torch.Tensor | None = None):
        """(weight rows, bias) of W_g or W_1 (as nn.Linear stores them: D_FF × D) for `neurons`."""
        linear, offset = self._input_linear(which)
        rows = torch.arange(self.intermediate_size, device=linear.weight.device) if neurons is None else neurons
        rows = rows + offset
        bias = None if linear.bias is None else linear.bias[rows]
        return linear.weight[rows], bias

    def project(self, x: torch.Tensor, which: str, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """x W_g or x W_1, restricted to `neurons` (a 1-D index tensor) when given."""
        if which == "gate" and not self.gated:
            raise CapreseError(f"layer {self.index}: architecture {self.layout.architecture} has no gate projection")
        if neurons is None and self.gate_up is None:
            return (self.gate if which == "gate" else self.up)(x)
        weight, bias = self.input_weight(which, neurons)
        return F.linear(x, weight, bias)

    def pre_activations(self, x: torch.Tensor, neurons: torch.Tensor | None = None):
        """(x W_g, x W_1) in one pass (None for the gate of a non-gated FFN)."""
        if not self.gated:
            return None, self.project(x, "up", neurons)
        if self.gate_up is not None and neurons is None:
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return gate, up
        return self.project(x, "gate", neurons), self.project(x, "up", neurons)

    # -- docs/method.md eq 1: Z = σ(x W_g) ⊙ (x W_1), or σ(x W_1) without a gate ---------------------
    def gate_activation(self, x: torch.Tensor, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """σ(x W_g) for gated FFNs; σ(x W_1) (which is Z itself) for non-gated ones."""
        return self.act(self.project(x, "gate" if self.gated else "up", neurons))

    def combine(self, gate_pre: torch.Tensor | None, up: torch.Tensor) -> torch.Tensor:
        """Eq 1 from pre-activations: σ(x W_g) ⊙ (x W_1), or σ(x W_1) for a non-gated FFN."""
        return self.act(gate_pre) * up if self.gated else self.act(up)

    def intermediate(self, x: torch.Tensor, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """Z = FF1(x) (eq 1), the input of down_proj; over `neurons` only when given."""
        return self.combine(*self.pre_activations(x, neurons))

    # -- docs/method.md eq 2: FF(x) = Z W_2 ------------------------------------------------------------
    def output(self, z: torch.Tensor, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """FF2(Z) = Z W_2 (+ bias); with `neurons`, Z holds only those columns and W_2 is sliced to match."""
        if neurons is None:
            return self.down(z)
        return F.linear(z, self.down.weight[:, neurons], self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """FF(x) recomputed from the layout's parts (equals the module's own forward)."""
        return self.output(self.intermediate(x))

    def ffn_parameter_count(self) -> int:
        parts = [p for p in (self.gate, self.up, self.gate_up, self.down) if p is not None]
        return sum(p.weight.numel() + (0 if p.bias is None else p.bias.numel()) for p in parts)

    # -- swapping the FFN module (peft-style injection, never a patched forward) --------------
    def installed(self) -> nn.Module:
        """What currently sits at the FFN path (the original module or a caprese wrapper)."""
        return get_path(self.layer, self.layout.ffn, what="ffn", arch=self.layout.architecture)

    def install(self, module: nn.Module) -> nn.Module:
        """Put `module` at the FFN path; returns what was there."""
        parent_path, _, name = self.layout.ffn.rpartition(".")
        parent = (
            get_path(self.layer, parent_path, what="ffn", arch=self.layout.architecture) if parent_path else self.layer
        )
        previous = getattr(parent, name)
        setattr(parent, name, module)
        return previous


def _linear(module: nn.Module, path: str | None, *, arch: str, shape: tuple[int, int], what: str):
    if path is None:
        return None
    linear = get_path(module, path, what=what, arch=arch)
    weight = getattr(linear, "weight", None)
    if weight is None or tuple(weight.shape) != shape:
        got = None if weight is None else tuple(weight.shape)
        raise CapreseError(f"architecture {arch}: {what} {path!r} has weight shape {got}, expected {shape} (out, in)")
    return linear


def ffn_blocks(
    model: nn.Module, layout: ArchitectureLayout | None = None, *, adapter: ArchitectureLayout | None = None
) -> list[FFNBlock]:
    """Resolve and shape-check every layer's FFN; raises a one-line CapreseError on any gap.
    (`adapter=` is the deprecated name of `layout=`.)"""
    layout = layout or adapter or layout_for(model)
    arch = layout.architecture
    config = model.config
    cfg = getattr(config, "get_text_config", lambda: config)()
    try:
        d = int(getattr(cfg, layout.hidden_size))
        d_ff = int(getattr(cfg, layout.intermediate_size))
        n_layers = int(getattr(cfg, layout.num_layers))
    except (AttributeError, TypeError) as err:
        raise CapreseError(f"architecture {arch}: config lacks a dimension the layout names ({err})") from None
    layers = get_path(model, layout.layers, what="layers", arch=arch)
    if len(layers) != n_layers:
        raise CapreseError(f"architecture {arch}: {layout.layers} has {len(layers)} layers, config says {n_layers}")
    blocks = []
    for index, layer in enumerate(layers):
        module = get_path(layer, layout.ffn, what="ffn", arch=arch)
        if isinstance(module, FFNWrapper):
            module = module.get_base_layer()
        blocks.append(
            FFNBlock(
                index=index,
                layout=layout,
                layer=layer,
                module=module,
                gate=_linear(module, layout.gate, arch=arch, shape=(d_ff, d), what="gate"),
                up=_linear(module, layout.up, arch=arch, shape=(d_ff, d), what="up"),
                gate_up=_linear(module, layout.gate_up, arch=arch, shape=(2 * d_ff, d), what="gate_up"),
                down=_linear(module, layout.down, arch=arch, shape=(d, d_ff), what="down"),
                act=get_path(module, layout.act, what="act", arch=arch),
                hidden_size=d,
                intermediate_size=d_ff,
            )
        )
    return blocks
