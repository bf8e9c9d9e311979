"""caprese: low-rank distillation that recovers the reasoning lost to sparse FFN inference.

Start with `load_model(...)` (a Hugging Face id, a local folder or a built-in name) and
`ffn_blocks(model)` (each layer's FFN seen through its architecture adapter).
"""

from .arch import ADAPTERS, ArchitectureAdapter, FFNBlock, adapter_for, ffn_blocks
from .errors import CapreseError
from .models.loading import load_model
from .phase import Phase, PhaseTracker

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "ArchitectureAdapter",
    "CapreseError",
    "FFNBlock",
    "Phase",
    "PhaseTracker",
    "adapter_for",
    "ffn_blocks",
    "load_model",
]
