"""Built-in models: names that resolve to a local Hugging Face folder without any hub download.

A built-in model registers a `BuiltinModel` whose `locate()` returns the folder to load and
extra `from_pretrained` keyword arguments. Loading goes through the same code path as a hub
id or a user's folder (`caprese.models.loading.load_model`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    locate: Callable[[], tuple[Path, dict[str, Any]]] = field(repr=False)
    """Return (folder, extra from_pretrained kwargs); raise CapreseError with install advice if absent."""
    recipe: Path | None = None
    """Its distillation recipe (caprese.models.recipes), or None: the paper's settings apply."""


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("built-in model")


def register_builtin(model: BuiltinModel) -> BuiltinModel:
    return BUILTIN_MODELS.register(model.name, model)


def builtin_models() -> Registry[BuiltinModel]:
    """The registry, after the built-in models have registered themselves."""
    # the registrations live in their own module so that this one stays free of model code
    if importlib.util.find_spec(f"{__package__}.builtins_registered") is not None:
        importlib.import_module(f"{__package__}.builtins_registered")
    return BUILTIN_MODELS
