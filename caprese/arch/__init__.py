"""Per-architecture knowledge as data: where the decoder layers and FFN projections live."""

from .ffn import FFNBlock, ffn_blocks
from .layouts import ADAPTERS, LAYOUTS, ArchitectureAdapter, ArchitectureLayout, adapter_for, layout_for

__all__ = [
    "LAYOUTS",
    "ArchitectureLayout",
    "layout_for",
    "FFNBlock",
    "ffn_blocks",
    "ADAPTERS",
    "ArchitectureAdapter",
    "adapter_for",
]  # the last three: deprecated names
