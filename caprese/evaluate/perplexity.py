"""Teacher-forced perplexity and KL(dense ‖ method) of a model in memory, per text and overall.

Each item is a context and a continuation. The context runs as the prompt (full FFN), the
continuation as if the model had generated it (the method's efficient FFN, plus any Caprese path
of an applied adapter): one forward inside `session.teacher_forced(prompt_lengths)`, which equals
prefill + token-by-token decode. A token is scored when it is predicted from a generated position,
so the first continuation token (predicted by the prompt's last position, which runs densely, as
in generation) is not; with every position counted as prompt the same session gives the dense
model's predictions, so KL needs no second copy of the model.

Items are plain strings (their first `prefix_tokens` tokens are the context) or rows
{"prompt", "response"} (a chat prompt and a worked solution, tokenized apart as generation does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import CapreseError
from ..methods.forcing import teacher_forced_batch
from ..stats.intervals import ratio_bootstrap_interval as ratio_interval

PREFIX_TOKENS = 16
"""Tokens of each plain text (with <bos>) run densely as its prompt; the rest is scored."""


@dataclass
class TextScores:
    """Sums over one text's scored tokens (nats)."""

    id: str
    tokens: int
    nll: float
    dense_nll: float
    kl: float


@dataclass
class PerplexityResult:
    texts: list[TextScores] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.texts)

    def _mean(self, name: str) -> float:
        return sum(getattr(t, name) for t in self.texts) / self.tokens

    @property
    def perplexity(self) -> float:
        """exp(mean NLL per scored token) under the method."""
        return math.exp(self._mean("nll"))

    @property
    def dense_perplexity(self) -> float:
        return math.exp(self._mean("dense_nll"))

    @property
    def kl(self) -> float:
        """Mean per-token KL(dense ‖ method) in nats over scored tokens."""
        return self._mean("kl")

    def intervals(self, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, list[float]]:
        """Percentile bootstrap intervals over texts (texts drawn with replacement; each statistic
        stays token-weighted) for perplexity, dense perplexity and KL."""
        tokens = [t.tokens for t in self.texts]
        options = {"confidence": confidence, "resamples": resamples, "seed": seed}
        return {
            "perplexity": list(ratio_interval([t.nll for t in self.texts], tokens, transform=np.exp, **options)),
            "dense_perplexity": list(
                ratio_interval([t.dense_nll for t in self.texts], tokens, transform=np.exp, **options)
            ),
            "kl_dense_to_method": list(ratio_interval([t.kl for t in self.texts], tokens, **options)),
        }

    def as_dict(self, per_text: bool = False) -> dict:
        out = {
            "perplexity": self.perplexity,
            "dense_perplexity": self.dense_perplexity,
            "kl_dense_to_method": self.kl,
            "scored_tokens": self.tokens,
            "texts": len(self.texts),
            "ci95": self.intervals(),
        }
        if per_text:
            out["per_text"] = {
                "id": [t.id for t in self.texts],
                "tokens": [t.tokens for t in self.texts],
                "nll": [t.nll for t in self.texts],
                "dense_nll": [t.dense_nll for t in self.texts],
                "kl": [t.kl for t in self.texts],
            }
        return out


def token_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p) per position, from logits (…, V), in float32."""
    ref = F.log_softmax(reference_logits.float(), dim=-1)
    cur = F.log_softmax(logits.float(), dim=-1)
    return (ref.exp() * (ref - cur)).sum(-1)


def tokenize_items(
    tokenizer, items: Sequence, prefix_tokens: int = PREFIX_TOKENS, max_continuation_tokens: int | None = None
) -> list[tuple[str, list[int], list[int]]]:
    """(id, context ids, continuation ids) per item; see the module docstring for the two forms."""
    if prefix_tokens < 1:
        raise CapreseError(f"prefix_tokens {prefix_tokens!r} must be >= 1")
    if max_continuation_tokens is not None and max_continuation_tokens < 2:
        raise CapreseError(
            f"max_continuation_tokens {max_continuation_tokens!r} must be >= 2 (the first is not scored)"
        )
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = tokenizer(item)["input_ids"]
            context, continuation, name = ids[:prefix_tokens], ids[prefix_tokens:], str(i)
        elif isinstance(item, dict) and "prompt" in item and "response" in item:
            # as generation tokenizes prompts: chat templates carry their own BOS
            add_special = not getattr(tokenizer, "chat_template", None)
            context = tokenizer(item["prompt"], add_special_tokens=add_special)["input_ids"]
            continuation = tokenizer(item["response"], add_special_tokens=False)["input_ids"]
            name = str(item.get("id", i))
        else:
            raise CapreseError(
                f"text {i} must be a string or a row with 'prompt' and 'response', got {type(item).__name__}"
                + (f" with fields {sorted(item)}" if isinstance(item, dict) else "")
            )
        if max_continuation_tokens is not None:
            continuation = continuation[:max_continuation_tokens]
        out.append((name, list(context), list(continuation)))
    return out


def perplexity(
    model,
    tokenizer,
    texts: Sequence,
    session=None,
    *,
    prefix_tokens: int = PREFIX_TOKENS,
    max_continuation_tokens: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "perplexity",
) -> PerplexityResult:
    """Teacher-forced scores of `texts` under `session` (what `apply_method` or an adapter's
    `apply` yields; None scores the model as it is, so method = dense and KL = 0).

    Returns per-text sums; `.perplexity`, `.dense_perplexity`, `.kl` (token-weighted over all
    texts) and `.intervals()` (bootstrap over texts) summarise them.
    """
    if batch_size < 1:
        raise CapreseError(f"batch_size {batch_size!r} must be >= 1")
    items = tokenize_items(tokenizer, texts, prefix_tokens, max_continuation_tokens)
    if not items:
        raise CapreseError("perplexity needs at least one text")
    if all(len(c) < 2 for _, _, c in items):
        raise CapreseError(
            f"no token to score: every continuation has < 2 tokens (prefix_tokens={prefix_tokens}); "
            "use longer texts or a shorter prefix"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    order = sorted(range(len(items)), key=lambda i: len(items[i][1]) + len(items[i][2]))  # less padding
    scores: dict[int, TextScores] = {}
    device = next(model.parameters()).device
    bar = None
    if progress:
        bar = tqdm(total=len(items), desc=desc, leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = teacher_forced_batch([items[i][1] for i in chunk], [items[i][2] for i in chunk], pad).to(device)
            # prompts are left-padded to one width, so only the last `keep` positions (the
            # continuations) are ever scored: the LM head runs on those alone
            width = int(batch.prompt_lengths.max())
            inputs = dict(batch.model_inputs(), logits_to_keep=batch.input_ids.shape[1] - width)
            if session is None:
                logits = model(**inputs).logits[:, :-1]
                dense = logits
            else:
                with session.teacher_forced(batch.prompt_lengths):
                    logits = model(**inputs).logits[:, :-1]
                with session.teacher_forced(torch.full_like(batch.prompt_lengths, batch.input_ids.shape[1])):
                    dense = model(**inputs).logits[:, :-1]
            targets = batch.input_ids[:, width + 1 :]
            # position t predicts t+1; it is scored when t is a generated token and t+1 a real one
            scored = batch.generated[:, width:-1] & batch.generated[:, width + 1 :]
            nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
            dense_nll = (
                nll if dense is logits else F.cross_entropy(dense.float().transpose(1, 2), targets, reduction="none")
            )
            kl = torch.zeros_like(nll) if dense is logits else token_kl(dense, logits)
            for row, index in enumerate(chunk):
                mask = scored[row]
                scores[index] = TextScores(
                    items[index][0],
                    int(mask.sum()),
                    float(nll[row][mask].sum()),
                    float(dense_nll[row][mask].sum()),
                    float(kl[row][mask].sum()),
                )
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return PerplexityResult([scores[i] for i in range(len(items))])
