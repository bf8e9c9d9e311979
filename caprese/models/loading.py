"""One way to load a model: a Hugging Face id, a local folder, or a built-in name.

Built-in names resolve to a local folder first; from there every source takes the same
`from_pretrained` path. The architecture is checked from the config before any weight is read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..arch import adapter_for, ffn_blocks
from ..errors import CapreseError, one_line
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


DEVICE_CHOICES = "cpu, cuda, cuda:N, mps, auto"


def parse_device(device: str | torch.device, *, available: bool = True) -> str:
    """Check a device name before anything runs: it must parse and (`available=True`) be present in
    this torch build. `available=False` checks the name only: a sweep spec for GPUs is checked on
    a login node without one, and each point checks availability where it runs."""
    text = str(device)
    if text == "auto":
        return text
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise CapreseError(f"device {text!r} is not a device (choose from: {DEVICE_CHOICES})") from None
    if not available:
        return text
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise CapreseError(f"device {text!r} is not available: {why} (torch {torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise CapreseError(
                f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise CapreseError(f"device {text!r} is not available on this machine (choose from: {DEVICE_CHOICES})")
    elif parsed.type not in ("cpu", "meta"):
        module = getattr(torch, parsed.type, None)
        if module is None or not getattr(module, "is_available", lambda: False)():
            raise CapreseError(f"device {text!r} is not available on this machine (choose from: {DEVICE_CHOICES})")
    return text


def _did_you_mean(name: str) -> str:
    names = builtin_models().names()
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


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
    hint = _did_you_mean(name_or_path)
    if hint and "/" not in name_or_path:
        # hub ids without an owner are a handful of legacy names; one this close to a built-in is a typo
        raise CapreseError(
            f"model {name_or_path!r} is not a built-in name, a folder or a hub id{hint} "
            f"(built-in: {', '.join(builtins.names())})"
        )
    return name_or_path, {}  # a hub id: from_pretrained handles download and cache


def _load_failure(name_or_path: str, source: str, err: BaseException) -> CapreseError:
    """One line for a model that cannot be read: a damaged folder, or a hub id not found / offline."""
    if Path(source).is_dir():
        return CapreseError(f"model folder {name_or_path!r} cannot be loaded: {one_line(err)}")
    where = (
        "offline (HF_HUB_OFFLINE is set) and not in the local cache"
        if _offline()
        else "not found on the hub or not reachable"
    )
    return CapreseError(
        f"model {name_or_path!r} is not a built-in name or a folder, and as a hub id it is {where}{_did_you_mean(name_or_path)} "
        f"(built-in: {', '.join(builtin_models().names())}; {type(err).__name__}: {one_line(err, 160)})"
    )


def _safetensors_error() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError

        return (SafetensorError,)
    except ImportError:  # pragma: no cover
        return ()


LOAD_ERRORS = (OSError, ValueError, KeyError) + _safetensors_error()
"""What transformers raises for a missing, damaged or unreachable model (a bad config.json is an
OSError or ValueError, an unknown model_type a KeyError/ValueError, a truncated weight file a
SafetensorError)."""


def load_config(name_or_path: str):
    """The model's config, read (or fetched) without any weights: checks the source up front."""
    source, extra = resolve_source(name_or_path)
    try:
        return AutoConfig.from_pretrained(source, **extra)
    except CapreseError:
        raise
    except LOAD_ERRORS as err:
        raise _load_failure(str(name_or_path), source, err) from None


def check_model_options(name_or_path: str, dtype: Any = "float32", device: Any = "cpu"):
    """Every check of --model / --dtype / --device that needs no weights; returns the config.
    The CLI verbs, the experiment and sweep validation call this before any compute."""
    parse_dtype(dtype)
    parse_device(device)
    config = load_config(name_or_path)
    adapter_for(config)
    return config


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
    torch_dtype = parse_dtype(dtype)
    device = parse_device(device)
    source, extra = resolve_source(name_or_path)
    config = load_config(name_or_path)
    adapter = adapter_for(config)  # unsupported architectures fail here, before any weights load
    kwargs = {**extra, **from_pretrained_kwargs, "dtype": torch_dtype}
    if device == "auto":
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except CapreseError:
        raise
    except LOAD_ERRORS as err:
        raise _load_failure(str(name_or_path), source, err) from None
    if device != "auto":
        model = model.to(device)
    model.eval()
    ffn_blocks(model, adapter)  # resolve every path and check every shape now
    try:
        tok = load_tokenizer(source, **extra) if tokenizer else None
    except CapreseError:
        raise
    except LOAD_ERRORS as err:
        raise _load_failure(str(name_or_path), source, err) from None
    return model, tok


def load_tokenizer(source: str, **extra: Any):
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
