"""caprese: low-rank distillation that recovers the reasoning lost to sparse FFN inference.

Start with `load_model(...)` (a Hugging Face id, a local folder or a built-in name) and
`ffn_blocks(model)` (each layer's FFN seen through its architecture layout).

Names are imported lazily, so `import caprese.io` (sweep workers, notebooks) does not pay for torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "LAYOUTS": "caprese.arch",
    "ArchitectureLayout": "caprese.arch",
    "FFNBlock": "caprese.arch",
    "layout_for": "caprese.arch",
    "ADAPTERS": "caprese.arch",  # deprecated: LAYOUTS
    "ArchitectureAdapter": "caprese.arch",  # deprecated: ArchitectureLayout
    "adapter_for": "caprese.arch",  # deprecated: layout_for
    "ffn_blocks": "caprese.arch",
    "CapreseError": "caprese.errors",
    "load_model": "caprese.models.loading",
    "Phase": "caprese.phase",
    "PhaseTracker": "caprese.phase",
    "apply_method": "caprese.methods",
    "METHODS": "caprese.methods",
    "CapreseAdapter": "caprese.distill",
    "MethodChoice": "caprese.distill",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'caprese' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
