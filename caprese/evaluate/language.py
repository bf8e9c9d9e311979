"""Language "no harm" metrics of an efficient model, teacher-forced: each text's first
`prefix_tokens` tokens are the prompt (full FFN), the rest is scored as if generated (efficient FFN).

Both the original and the efficient predictions come from the same session: with every position
counted as prompt the model is exactly the original one, so perplexity and per-token
KL(original ‖ efficient) need no second copy of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import CapreseError

PREFIX_TOKENS = 16
"""Tokens of each text (with <bos>) run densely as its prompt; the rest is scored."""


@dataclass
class LanguageScores:
    perplexity: float
    dense_perplexity: float
    kl: float
    """Mean per-token KL(original ‖ efficient) in nats over scored tokens."""
    tokens: int
    per_text: dict = field(default_factory=dict)
    """Per text, in order: summed NLL (`nll`, `dense_nll`), summed KL (`kl`) and scored `tokens`,
    so intervals can resample texts (caprese.stats.intervals)."""

    def as_dict(self) -> dict:
        return {"perplexity": self.perplexity, "dense_perplexity": self.dense_perplexity,
                "kl_dense_to_method": self.kl, "scored_tokens": self.tokens, "per_text": self.per_text}


def token_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p) per position, from logits (…, V)."""
    ref = F.log_softmax(reference_logits.float(), dim=-1)
    cur = F.log_softmax(logits.float(), dim=-1)
    return (ref.exp() * (ref - cur)).sum(-1)


def _teacher_forced_logits(model, session, input_ids, attention_mask, prompt_lengths):
    if session is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    with session.teacher_forced(prompt_lengths):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def language_scores(model, tokenizer, texts: list[str], session=None, *, prefix_tokens: int = PREFIX_TOKENS,
                    batch_size: int = 16) -> LanguageScores:
    """Perplexity of the continuation after `prefix_tokens` (efficient and original) and KL between them.

    `session` is what `apply_method` (or an adapter's `apply`) yields; None scores the model as is.
    """
    if prefix_tokens < 1:
        raise CapreseError(f"prefix_tokens {prefix_tokens!r} must be >= 1")
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # teacher-forced lengths count from the start of each row
    per_text: dict[str, list] = {"nll": [], "dense_nll": [], "kl": [], "tokens": []}
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
                ids, mask = batch["input_ids"], batch["attention_mask"]
                prompt = torch.full((ids.shape[0],), prefix_tokens, device=ids.device)
                every = torch.full_like(prompt, ids.shape[1])
                logits = _teacher_forced_logits(model, session, ids, mask, prompt)[:, :-1]
                dense = _teacher_forced_logits(model, session, ids, mask, every)[:, :-1] if session else logits
                targets = ids[:, 1:]
                # score the tokens predicted from a generated position: position t >= prefix predicts t+1
                positions = torch.arange(ids.shape[1] - 1, device=ids.device)
                scored = mask[:, 1:].bool() & (positions[None, :] >= prefix_tokens)
                weight = scored.to(torch.float64)
                for key, values in (
                    ("nll", F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")),
                    ("dense_nll", F.cross_entropy(dense.float().transpose(1, 2), targets, reduction="none")),
                    ("kl", token_kl(dense, logits)),
                ):
                    per_text[key].extend((values.double() * weight).sum(-1).tolist())
                per_text["tokens"].extend(scored.sum(-1).tolist())
    finally:
        tokenizer.padding_side = side
    count = sum(per_text["tokens"])
    if count == 0:
        raise CapreseError(f"no token after prefix_tokens={prefix_tokens} to score: use longer texts or a shorter prefix")
    nll, dense_nll, kl = (sum(per_text[key]) for key in ("nll", "dense_nll", "kl"))
    return LanguageScores(math.exp(nll / count), math.exp(dense_nll / count), kl / count, count, per_text)
