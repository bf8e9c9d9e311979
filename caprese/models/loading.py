"""One way to load a model: a Hugging Face id, a local folder, or a built-in name.

Built-in names resolve to a local folder first; from there every source takes the same
`from_pretrained` path. The architecture is checked from the config before any weight is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..arch import adapter_for, ffn_blocks
from ..errors import CapreseError
from .builtin import builtin_models

DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype) -> Any:
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in DTYPES:
        raise CapreseError(f"dtype {dtype!r} is not supported (choose from: {', '.join(DTYPES)})")
    return DTYPES[str(dtype).lower()]


def resolve_source(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """(what from_pretrained takes, extra kwargs) for a built-in name, a folder or a hub id."""
    name_or_path = str(name_or_path)
    builtins = builtin_models()
    if name_or_path in builtins:
        folder, extra = builtins.get(name_or_path).locate()
        return str(folder), dict(extra)
    path = Path(name_or_path).expanduser()
    if path.exists() and not path.is_dir():
        raise CapreseError(f"model {name_or_path!r} is a file; give a model folder, a hub id or a built-in name")
    if path.is_dir():
        return str(path), {}
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise CapreseError(f"model folder {name_or_path!r} does not exist")
    return name_or_path, {}  # a hub id: from_pretrained handles download and cache


def load_config(name_or_path: str):
    from transformers import AutoConfig

    source, extra = resolve_source(name_or_path)
    return AutoConfig.from_pretrained(source, **extra)


def load_model(
    name_or_path: str,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    *,
    tokenizer: bool = True,
    **from_pretrained_kwargs: Any,
):
    """Load a causal LM with a supported architecture, in eval mode, and its tokenizer.

    Returns (model, tokenizer); the tokenizer pads on the left (decoder-only batching) and has a
    pad token. `device="auto"` spreads a large model over the available devices.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = parse_dtype(dtype)
    source, extra = resolve_source(name_or_path)
    config = AutoConfig.from_pretrained(source, **extra)
    adapter = adapter_for(config)  # unsupported architectures fail here, before any weights load
    kwargs = {**extra, **from_pretrained_kwargs, "dtype": torch_dtype}
    if device == "auto":
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if device != "auto":
        model = model.to(device)
    model.eval()
    ffn_blocks(model, adapter)  # resolve every path and check every shape now
    tok = load_tokenizer(source, **extra) if tokenizer else None
    return model, tok


def load_tokenizer(source: str, **extra: Any):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, **extra)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


_FINGERPRINT_CHUNK = 1 << 20


def weights_fingerprint(name_or_path: str) -> str | None:
    """A content fingerprint of a local model's files (a built-in name or a folder), to tell that
    a model was retrained or replaced since a result was made; None for a hub id (its revision
    pins it) or a model that cannot be found here.

    Each top-level file contributes its name, size and first and last MiB: cheap for 16 GB of
    weights, and any retraining changes those bytes.
    """
    import hashlib

    try:
        source, extra = resolve_source(name_or_path)
    except CapreseError:
        return None
    folder = Path(source)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256(json.dumps(sorted(extra.items()), default=str).encode())
    # model cards (.md) are prose: editing one does not change the model
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".md"):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(_FINGERPRINT_CHUNK))
            if size > 2 * _FINGERPRINT_CHUNK:
                handle.seek(size - _FINGERPRINT_CHUNK)
                digest.update(handle.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()[:16]
