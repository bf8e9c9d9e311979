"""A Caprese adapter as a PEFT LoRA folder, and back (`pip install peft`; it is in caprese[eval]).

    caprese export-peft runs/x/adapter runs/x/peft
    export_peft("runs/x/adapter", "runs/x/peft")                 # or a CapreseAdapter object
    peft_model = load_peft_model(model, "runs/x/peft")           # PeftModel.from_pretrained, mapping registered
    adapter = CapreseAdapter.load("runs/x/peft", model)          # back into caprese, bit for bit

The x L R path beside layer l's FFN is a LoRA over the whole FFN module (x -> FFN(x) + B A x)
with A = Lᵀ (r × D), B = Rᵀ (D × r) and lora_alpha = r, so the scaling α/r is 1. PEFT has no
LoRA layer for an MLP module, so the folder needs PEFT's custom-module mapping
{the model's FFN class: `CapreseFFNLora`} registered before loading; `load_peft_model` does that.

PEFT adds the path on every token over the full FFN: what the folder holds is the correction
alone. The efficient method it was trained for (method, sparsity, layers, options) and the base
model's FFN fingerprint cannot be said in PEFT's config, so they are kept beside it in
`caprese_export.json` (the complete caprese adapter config); caprese reads them back from there.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn
from transformers import AutoModelForCausalLM

from ..arch import ffn_blocks
from ..errors import CapreseError
from ..io import atomic_write_bytes, read_json, write_json
from ..models.loading import load_config
from .adapter import CapreseAdapter
from .adapter_io import AdapterConfig

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
CAPRESE_METADATA = "caprese_export.json"
EXPORT_FORMAT = "caprese-peft-export"


def _peft():
    try:
        import peft
    except ImportError:
        raise CapreseError("PEFT export needs peft: pip install 'caprese[eval]'") from None
    return peft


def _linear_children(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _ffn_features(module: nn.Module) -> tuple[int, int]:
    """(D, D) of an FFN module: its first projection reads D, its last writes D."""
    linears = _linear_children(module)
    if not linears or linears[0].in_features != linears[-1].out_features:
        raise CapreseError(f"{type(module).__name__} does not look like an FFN (first projection in = last out = D)")
    return linears[0].in_features, linears[-1].out_features


def lora_layer_class():
    """`CapreseFFNLora`: PEFT's LoRA layer around a whole FFN module, FFN(x) + B(A(dropout(x))) · α/r.
    Built on first use, so importing this module does not need peft."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    _peft()  # the one-line install hint when peft is missing
    from peft.tuners.lora.layer import LoraLayer  # optional and slow (~2 s): only once an export is used

    class CapreseFFNLora(nn.Module, LoraLayer):
        def __init__(self, base_layer, adapter_name: str, config, r: int = 0, lora_alpha: int = 1, **kwargs):
            super().__init__()
            LoraLayer.__init__(self, base_layer, **kwargs)
            self._active_adapter = adapter_name
            self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

        def _get_in_out_features(self, module):
            return _ffn_features(module)

        def _get_base_layer_device_and_dtype(self, base_layer):
            param = next(base_layer.parameters())
            return param.device, param.dtype

        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            result = self.base_layer(x, *args, **kwargs)
            if self.disable_adapters or self.merged:
                return result
            for name in self.active_adapters:
                if name not in self.lora_A:
                    continue
                lora_a, lora_b = self.lora_A[name], self.lora_B[name]
                path = lora_b(lora_a(self.lora_dropout[name](x.to(lora_a.weight.dtype))))
                result = result + (path * self.scaling[name]).to(result.dtype)
            return result

        def merge(self, *args, **kwargs):
            raise CapreseError("a Caprese path over a whole FFN cannot be merged into its weights (use it unmerged)")

        def __repr__(self) -> str:
            return "caprese." + super().__repr__()

    _CLASS = CapreseFFNLora
    return _CLASS


_CLASS = None


def ffn_module_names(model, layers: list[int]) -> dict[int, str]:
    """Qualified module name of each layer's FFN in `model` (what PEFT's target_modules match)."""
    blocks = ffn_blocks(model)
    names = {id(module): name for name, module in model.named_modules()}
    out = {}
    for layer in layers:
        name = names.get(id(blocks[layer].module))
        if name is None:
            raise CapreseError(
                f"layer {layer}: its FFN module is not reachable from the model (leave apply_method first)"
            )
        out[layer] = name
    return out


def _skeleton(base_model: str):
    """The base model's module tree on the meta device (no weights read): names and FFN classes."""
    config = load_config(base_model)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def register_custom_module(config, model) -> None:
    """Tell a LoraConfig that the model's FFN modules take `CapreseFFNLora`."""
    cls = lora_layer_class()
    config._register_custom_module({type(block.module): cls for block in ffn_blocks(model)})


def export_peft(adapter, out: str | os.PathLike, model=None) -> Path:
    """Write `adapter` (a CapreseAdapter or its folder) as a PEFT LoRA folder at `out`.

    `model` (the base model, or None to build its module tree from the adapter's base_model
    without weights) only names the FFN modules; the factors are copied exactly."""
    peft = _peft()
    if not isinstance(adapter, CapreseAdapter):
        adapter = CapreseAdapter.load(adapter)
    if adapter.kind != "caprese":
        raise CapreseError(
            f"only Caprese paths export to PEFT, not adapter kind {adapter.kind!r} "
            "(the eq-11 LoRA lives inside GRIFFIN's pruned block)"
        )
    cfg = adapter.config
    if model is None:
        model = _skeleton(cfg.base_model)
    names = ffn_module_names(model, cfg.layers)
    lora = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.rank,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules="|".join(re.escape(names[layer]) for layer in cfg.layers),
        base_model_name_or_path=cfg.base_model,
        inference_mode=True,
    )
    tensors = {}
    for layer in cfg.layers:
        module = adapter.corrections[layer]
        prefix = f"base_model.model.{names[layer]}"
        tensors[f"{prefix}.lora_A.weight"] = module.L.detach().float().T.contiguous().cpu()  # A = Lᵀ
        tensors[f"{prefix}.lora_B.weight"] = module.R.detach().float().T.contiguous().cpu()  # B = Rᵀ
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / PEFT_WEIGHTS, save_bytes(tensors, metadata={"format": "pt"}))
    lora.save_pretrained(str(out))
    metadata = {
        "format": EXPORT_FORMAT,
        "modules": {str(layer): names[layer] for layer in cfg.layers},
        "adapter": asdict(cfg),
    }
    write_json(out / CAPRESE_METADATA, metadata)  # last: a folder is complete once this exists
    return out


def is_peft_export(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / CAPRESE_METADATA).is_file() and (folder / PEFT_CONFIG).is_file()


def import_peft(folder: str | os.PathLike):
    """(AdapterConfig, caprese tensors) of a folder `export_peft` wrote: the factors transposed back."""
    folder = Path(folder)
    metadata = read_json(folder / CAPRESE_METADATA)
    if metadata.get("format") != EXPORT_FORMAT:
        raise CapreseError(f"{folder / CAPRESE_METADATA} has format {metadata.get('format')!r}, not {EXPORT_FORMAT!r}")
    if not (folder / PEFT_WEIGHTS).is_file():
        raise CapreseError(f"PEFT export {str(folder)!r} lacks {PEFT_WEIGHTS}")
    config = AdapterConfig(**metadata["adapter"])
    weights = load_file(str(folder / PEFT_WEIGHTS))
    tensors = {}
    for layer in config.layers:
        prefix = f"base_model.model.{metadata['modules'][str(layer)]}"
        try:
            tensors[f"layers.{layer}.L"] = weights[f"{prefix}.lora_A.weight"].T.contiguous()
            tensors[f"layers.{layer}.R"] = weights[f"{prefix}.lora_B.weight"].T.contiguous()
        except KeyError as err:
            raise CapreseError(f"PEFT export {str(folder)!r} lacks tensor {err.args[0]!r}") from None
    return config, tensors


def load_peft_model(model, folder: str | os.PathLike, **kwargs):
    """`PeftModel.from_pretrained(model, folder)` with the FFN custom-module mapping registered."""
    peft = _peft()
    config = peft.LoraConfig.from_pretrained(str(folder))
    register_custom_module(config, model)
    return peft.PeftModel.from_pretrained(model, str(folder), config=config, **kwargs)
