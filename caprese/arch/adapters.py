"""Deprecated module: per-architecture layouts live in `caprese.arch.layouts`."""

from .layouts import (  # noqa: F401
    ADAPTERS,
    LAYOUTS,
    ArchitectureAdapter,
    ArchitectureLayout,
    adapter_for,
    architecture_of,
    layout_for,
    register_adapter,
    register_layout,
)
