"""Architecture layouts: one row of data per Hugging Face decoder architecture.

Paths are dotted attribute paths: `layers` from the model root, `ffn` from a decoder layer,
projections and activation from the FFN module. Nothing here knows how a family computes its
MLP; `caprese.arch.ffn` computes every FFN from these parts alone (docs/method.md eqs 1-2), and the
load-time check (`ffn_blocks`) proves the two agree in shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CapreseError
from ..registry import Registry


@dataclass(frozen=True)
class ArchitectureLayout:
    architecture: str
    """Hugging Face class name, as in `config.architectures`."""
    layers: str
    """Path from the model root to the ModuleList of decoder layers."""
    ffn: str
    """Path from a decoder layer to its FFN module (replaced, never patched, by caprese wrappers)."""
    down: str
    """Path from the FFN module to W_2 (nn.Linear D_FF -> D); its input is Z."""
    act: str
    """Path from the FFN module to the activation module σ."""
    gate: str | None = None
    """W_g (nn.Linear D -> D_FF) for gated FFNs with separate projections."""
    up: str | None = None
    """W_1 (nn.Linear D -> D_FF); for a non-gated FFN this is the only input projection."""
    gate_up: str | None = None
    """Fused [W_g | W_1] (nn.Linear D -> 2·D_FF, gate half first), as in Phi-3."""
    hidden_size: str = "hidden_size"
    intermediate_size: str = "intermediate_size"
    num_layers: str = "num_hidden_layers"
    """Config attribute names for D, D_FF and the layer count."""

    def __post_init__(self):
        fused = self.gate_up is not None
        separate = self.gate is not None
        if fused and (separate or self.up is not None):
            raise CapreseError(f"layout {self.architecture}: give gate_up or gate/up, not both")
        if not fused and self.up is None:
            raise CapreseError(f"layout {self.architecture}: needs an up (or gate_up) projection")

    @property
    def gated(self) -> bool:
        return self.gate is not None or self.gate_up is not None


LAYOUTS: Registry[ArchitectureLayout] = Registry("architecture")


def register_layout(layout: ArchitectureLayout) -> ArchitectureLayout:
    return LAYOUTS.register(layout.architecture, layout)


_LLAMA_LIKE = dict(layers="model.layers", ffn="mlp", gate="gate_proj", up="up_proj", down="down_proj", act="act_fn")

for _name in (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "GemmaForCausalLM",
    "Olmo2ForCausalLM",
    "GraniteForCausalLM",
):
    register_layout(ArchitectureLayout(architecture=_name, **_LLAMA_LIKE))

register_layout(
    ArchitectureLayout(
        architecture="Phi3ForCausalLM",
        layers="model.layers",
        ffn="mlp",
        gate_up="gate_up_proj",
        down="down_proj",
        act="activation_fn",
    )
)
register_layout(
    ArchitectureLayout(
        architecture="GPTNeoXForCausalLM",
        layers="gpt_neox.layers",
        ffn="mlp",
        up="dense_h_to_4h",
        down="dense_4h_to_h",
        act="act",
    )
)


def architecture_of(config) -> str:
    """The HF architecture class name a config loads as a causal LM."""
    names = getattr(config, "architectures", None) or []
    if names:
        return names[0]
    # transformers' model table is large: read only for a config that names no architecture
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(config, "model_type", ""), f"<{config.model_type}>")


def layout_for(config_or_model) -> ArchitectureLayout:
    """The layout of a model or config; a one-line error naming the architecture otherwise."""
    config = getattr(config_or_model, "config", config_or_model)
    arch = type(config_or_model).__name__ if hasattr(config_or_model, "config") else architecture_of(config)
    if arch not in LAYOUTS:
        raise CapreseError(f"architecture {arch!r} is not supported (supported: {', '.join(LAYOUTS.names())})")
    return LAYOUTS.get(arch)


# deprecated names (the layout was called an "adapter", which now means trained Caprese weights only)
ArchitectureAdapter = ArchitectureLayout
ADAPTERS = LAYOUTS
register_adapter = register_layout
adapter_for = layout_for
