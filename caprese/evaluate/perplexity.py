"""Perplexity of a model in memory on plain texts (token-weighted, <bos> not predicted)."""

from __future__ import annotations

import math

import torch


def perplexity(model, tokenizer, texts: list[str], batch_size: int = 16) -> float:
    """exp(mean negative log-likelihood per predicted token) over all texts.

    Texts are right-padded here (padding never sits before a real token, so no position shift)
    and padded positions are left out of the loss.
    """
    total_nll, total_tokens = 0.0, 0
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
                logits = model(**batch).logits[:, :-1].float()
                targets = batch["input_ids"][:, 1:]
                mask = batch["attention_mask"][:, 1:].bool()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
                total_nll += nll[mask].sum().item()
                total_tokens += int(mask.sum())
    finally:
        tokenizer.padding_side = side
    return math.exp(total_nll / total_tokens)
