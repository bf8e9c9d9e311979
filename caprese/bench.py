"""Time to next token of the FFN variants the paper's table 5 compares: full, GRIFFIN (truly
pruned), GRIFFIN + LoRA (eq 11, sequential) and Caprese merged (eqs 9-10, width k + r).

A decode step at batch size 1 is memory bound, so each variant is also compared with its
bytes-moved limit relative to the full FFN: (d·3·D·D_FF + 2·D·r) / (3·D·D_FF) for Caprese
(d = density), d for GRIFFIN, (d·3·D·D_FF + r'·(3·D + 3·D_FF... )) for LoRA (its factors' size).
Timings are medians over repeated runs of a stack of layers (so the weights do not sit in cache),
on CPU or CUDA with the same code.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .arch import ffn_blocks
from .distill.adapter import CapreseAdapter
from .distill.lora import LoraGriffin, LoraPath, lora_rank_for
from .distill.merged import MergedFFN
from .distill.path import LowRankPath
from .distill.teacher import MethodChoice
from .methods import apply_method, resolve_layers
from .methods.base import kept_count
from .methods.griffin import Griffin, GriffinConfig, PrunedFFN

VARIANTS = ("full", "griffin", "griffin_lora", "caprese_merged")

# public shapes (reference configs): (D, D_FF)
SHAPES = {"Llama-3.1-8B": (4096, 14336), "Qwen2.5-14B": (5120, 13824)}


def random_ffn_stack(hidden: int, intermediate: int, layers: int, dtype: torch.dtype, device="cpu"):
    """A Llama model with `layers` decoder layers of these FFN sizes and random weights (no download),
    resolved through the adapter; only its FFNs are timed."""
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 128),
        num_key_value_heads=max(1, hidden // 1024),
        vocab_size=16,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for block in ffn_blocks(model):
            for linear in (block.gate, block.up, block.down):
                linear.weight.normal_(0, 0.02)
    return model


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_ms(steps: dict[str, Callable[[], object]], repeats: int, device="cpu", warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per step; variants take turns in every repeat, so drift in the
    machine's load (other processes, clocks) hits them alike instead of biasing one."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


@dataclass
class FFNLatency:
    shape: str
    hidden: int
    intermediate: int
    layers: int
    dtype: str
    device: str
    sparsity: float
    rank: int
    lora_rank: int
    ms: dict[str, float]
    bytes_limit: dict[str, float]

    def ratios(self) -> dict[str, float]:
        return {name: self.ms[name] / self.ms["full"] for name in self.ms}

    def as_dict(self) -> dict:
        return {
            **self.__dict__,
            "ratio_to_full": self.ratios(),
            "ratio_to_limit": {n: self.ratios()[n] / self.bytes_limit[n] for n in self.ms},
            "caprese_vs_griffin": self.ms["caprese_merged"] / self.ms["griffin"],
            "lora_vs_griffin": self.ms["griffin_lora"] / self.ms["griffin"],
        }


def bytes_limits(hidden: int, intermediate: int, k: int, rank: int, lora_path: LoraPath) -> dict[str, float]:
    full = 3 * hidden * intermediate
    return {
        "full": 1.0,
        "griffin": 3 * hidden * k / full,
        "griffin_lora": (3 * hidden * k + lora_path.parameter_count()) / full,
        "caprese_merged": (3 * hidden * k + 2 * hidden * rank) / full,
    }


def ffn_decode_latency(
    shape: str,
    hidden: int,
    intermediate: int,
    *,
    layers: int = 4,
    dtype=torch.float32,
    device="cpu",
    sparsity: float = 0.5,
    rank: int = 256,
    repeats: int = 20,
    seed: int = 0,
) -> FFNLatency:
    """Median time of one decode step (batch 1, one token) through `layers` FFNs, per variant."""
    torch.manual_seed(seed)
    model = random_ffn_stack(hidden, intermediate, layers, dtype, device)
    blocks = ffn_blocks(model)
    k = kept_count(sparsity, intermediate)
    x = torch.randn(1, 1, hidden, dtype=dtype, device=device) * 0.5
    kept = [torch.randperm(intermediate, device=device)[:k].sort().values[None] for _ in blocks]
    pruned = [PrunedFFN.slice(b, e) for b, e in zip(blocks, kept)]
    paths = [LowRankPath(hidden, rank, dtype=dtype, device=device, seed=b.index) for b in blocks]
    for path in paths:
        torch.nn.init.normal_(path.R, std=0.02)
    merged = [MergedFFN.slice(b, e, p) for b, e, p in zip(blocks, kept, paths)]
    lora_rank = lora_rank_for(hidden, intermediate, rank)
    loras = []
    for block, e, p in zip(blocks, kept, pruned):
        path = LoraPath(hidden, intermediate, lora_rank, device=device, dtype=dtype)
        method = LoraGriffin(Griffin(block, sparsity, GriffinConfig(prune=True)), path)
        loras.append((method, SimpleNamespace(pruned=p, kept=e, keep=None)))

    def chain(apply):
        def step():
            h = x
            for i in range(len(blocks)):
                h = apply(i, h)
            return h

        return step

    steps = {
        "full": chain(lambda i, h: blocks[i].module(h)),
        "griffin": chain(lambda i, h: pruned[i](blocks[i], h)),
        "griffin_lora": chain(lambda i, h: loras[i][0].efficient(h, loras[i][1])),
        "caprese_merged": chain(lambda i, h: merged[i](blocks[i], h)),
    }
    with torch.inference_mode():
        ms = median_ms(steps, repeats, device)
    return FFNLatency(
        shape,
        hidden,
        intermediate,
        layers,
        str(dtype).replace("torch.", ""),
        str(device),
        sparsity,
        rank,
        lora_rank,
        ms,
        bytes_limits(hidden, intermediate, k, rank, loras[0][0].path),
    )


def untrained_adapter(model, kind: str, sparsity: float, layers, rank: int):
    """An adapter of `kind` with random (non-zero) factors: timing needs the shapes, not training."""
    blocks = ffn_blocks(model)
    chosen = resolve_layers(layers, len(blocks))
    size = (
        rank
        if kind == "caprese"
        else lora_rank_for(blocks[0].hidden_size, blocks[0].intermediate_size, rank, blocks[0].gated)
    )
    adapter = CapreseAdapter.new(
        model, "benchmark", MethodChoice("griffin", sparsity, chosen, {"prune": True}), chosen, size, kind=kind
    )
    with torch.no_grad():
        for module in adapter.corrections.values():
            for p in module.parameters():
                p.normal_(0, 0.01)
    return adapter


def generation_latency(
    model,
    tokenizer,
    *,
    sparsity: float = 0.5,
    layers="first_half",
    rank: int = 16,
    new_tokens: int = 32,
    repeats: int = 5,
    prompt: str = "Question: Ann has 12 apples. "
    "She buys 7 more apples. How many apples does Ann have now?\nPlease reason step by step.\nAnswer:",
) -> dict:
    """Time to next token of whole-model greedy decoding, per variant: (T(N) − T(1)) / (N − 1)."""
    device = next(model.parameters()).device
    enc = tokenizer([prompt], return_tensors="pt").to(device)
    caprese = untrained_adapter(model, "caprese", sparsity, layers, rank)
    lora = untrained_adapter(model, "lora", sparsity, layers, rank)
    contexts = {
        "full": lambda: contextlib.nullcontext(),
        "griffin": lambda: apply_method(model, "griffin", sparsity, layers, prune=True, progress=False),
        "griffin_lora": lambda: lora.apply(model, tokenizer),
        "caprese_merged": lambda: caprese.apply(model, tokenizer, merged=True),
    }

    def run(name: str, n: int):
        def step():
            with contexts[name](), torch.inference_mode():
                model.generate(
                    **enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )

        return step

    totals = median_ms(
        {f"{name}@{n}": run(name, n) for name in contexts for n in (1, new_tokens)}, repeats, device, warmup=1
    )
    ms = {name: (totals[f"{name}@{new_tokens}"] - totals[f"{name}@1"]) / (new_tokens - 1) for name in contexts}
    return {
        "sparsity": sparsity,
        "layers": layers,
        "rank": rank,
        "lora_rank": lora.config.rank,
        "new_tokens": new_tokens,
        "device": str(device),
        "ms_per_token": ms,
        "ratio_to_full": {name: ms[name] / ms["full"] for name in ms},
    }
