"""What an adapter costs and what it learned: extra parameters (figure 6) and the singular
values of each learned L·R (figure 8)."""

from __future__ import annotations

from ..arch import ffn_blocks
from ..arch.ffn import base_model_parameters
from .adapter import CapreseAdapter


def parameter_share(model, extra: int) -> dict:
    """Extra parameters as a share of the whole model and of its FFNs (shared weights counted once;
    an attached correction is not part of the model)."""
    total = sum(p.numel() for p in base_model_parameters(model))
    ffn = sum(block.ffn_parameter_count() for block in ffn_blocks(model))
    return {
        "extra_parameters": extra,
        "model_parameters": total,
        "ffn_parameters": ffn,
        "extra_percent_of_model": 100.0 * extra / total,
        "extra_percent_of_ffn": 100.0 * extra / ffn,
    }


def adapter_report(model, adapter: CapreseAdapter) -> dict:
    if adapter.kind != "caprese":
        return {**parameter_share(model, adapter.parameter_count()), "singular_values": {}}
    singular = {
        str(layer): {
            "singular_values": (s := c.singular_values()).tolist(),
            "normalised": (s / s[0]).tolist() if float(s[0]) > 0 else s.tolist(),
        }
        for layer, c in adapter.corrections.items()
    }
    return {**parameter_share(model, adapter.parameter_count()), "singular_values": singular}
