"""Per-architecture knowledge as data: where the decoder layers and FFN projections live."""

from .adapters import ADAPTERS, ArchitectureAdapter, adapter_for
from .ffn import FFNBlock, ffn_blocks

__all__ = ["ADAPTERS", "ArchitectureAdapter", "adapter_for", "FFNBlock", "ffn_blocks"]
