"""Batched generation for decoder-only models: left padding, greedy or nucleus sampling.

Prompts are generated in batches of similar length (less padding) and returned in the
caller's order. The prompt is one prefill forward; every later token is a one-token decode
step, which is where efficient-FFN methods switch on.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..config import GenerationConfig
from ..phase import stop_tokens

GenerationSettings = GenerationConfig
"""The former name of `caprese.config.GenerationConfig` (branches written before the rename use it)."""


@dataclass(frozen=True)
class Generation:
    text: str  # the response only, special tokens removed
    n_tokens: int  # generated tokens up to and including the first end-of-sequence token
    finished: bool  # False when max_new_tokens cut the response off


def stop_token_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids from the generation config (chat models often have several) and tokenizer."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def response_length(tokens: list[int], stop_ids: set[int], pad_id: int | None) -> tuple[int, bool]:
    """(number of tokens that count as the response, whether it ended with a stop token)."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return position + 1, True
    while tokens and pad_id is not None and tokens[-1] == pad_id and pad_id not in stop_ids:
        tokens = tokens[:-1]
    return len(tokens), False


def generate_batch(
    model, tokenizer, prompts: list[str], settings: GenerationConfig, stop_ids: list[int]
) -> list[Generation]:
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    add_special = not getattr(tokenizer, "chat_template", None)  # chat templates carry their own BOS
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(model.device)
    kwargs = {
        "do_sample": settings.sampling,
        "max_new_tokens": settings.max_new_tokens,
        "eos_token_id": stop_ids,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if settings.sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with stop_tokens(stop_ids):  # a tracked method stops measuring a sequence at its stop token
        output = model.generate(**batch, **kwargs)
    new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
    results = []
    for tokens in new_tokens:
        n, finished = response_length(tokens, set(stop_ids), tokenizer.pad_token_id)
        text = tokenizer.decode(tokens[:n], skip_special_tokens=True)
        results.append(Generation(text=text, n_tokens=n, finished=finished))
    return results


def isolated_rng(device: torch.device):
    """Restore the global RNG state afterwards, so seeded sampling has no side effects."""
    accelerators = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=accelerators)


def generate(
    model,
    tokenizer,
    prompts: list[str],
    settings: GenerationConfig = GenerationConfig(),
    progress: bool = True,
    desc: str = "generating",
) -> list[Generation]:
    """One Generation per prompt, in the prompts' order. Sampling is seeded and leaves the
    global torch RNG as it found it."""
    stop_ids = stop_token_ids(model, tokenizer)
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    batches = length_sorted_batches(lengths, settings.batch_size)
    results: list[Generation | None] = [None] * len(prompts)
    rng_scope = isolated_rng(model.device) if settings.sampling else nullcontext()
    with rng_scope, torch.inference_mode():
        if settings.sampling:
            torch.manual_seed(settings.seed)
        with tqdm(total=len(prompts), desc=desc, disable=not progress, unit="sample") as bar:
            for indices in batches:
                for i, generation in zip(
                    indices, generate_batch(model, tokenizer, [prompts[i] for i in indices], settings, stop_ids)
                ):
                    results[i] = generation
                bar.update(len(indices))
    return results  # type: ignore[return-value]
