"""Caprese: the low-rank path, its layer-wise (eq 7) and end-to-end (eq 8) distillation,
merged inference (eqs 9-10), the LoRA baseline (eq 11), and adapters on disk.

    from caprese.distill import distill, MethodChoice, CapreseAdapter
"""

from .adapter import CapreseAdapter
from .api import distill
from .e2e import E2EConfig
from .layerwise import LayerwiseConfig
from .teacher import MethodChoice

__all__ = ["CapreseAdapter", "E2EConfig", "LayerwiseConfig", "MethodChoice", "distill"]
