"""Language "no harm" metrics of an efficient model, teacher-forced: each text's first
`prefix_tokens` tokens are the prompt (full FFN), the rest is scored as if generated (efficient FFN).

Both the original and the efficient predictions come from the same session: with every position
counted as prompt the model is exactly the original one, so perplexity and per-token
KL(original ‖ efficient) need no second copy of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CapreseError
from .perplexity import PREFIX_TOKENS, perplexity, token_kl, tokenize_items

__all__ = ["PREFIX_TOKENS", "LanguageScores", "language_scores", "token_kl"]


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
        return {
            "perplexity": self.perplexity,
            "dense_perplexity": self.dense_perplexity,
            "kl_dense_to_method": self.kl,
            "scored_tokens": self.tokens,
            "per_text": self.per_text,
        }


def language_scores(
    model, tokenizer, texts: list[str], session=None, *, prefix_tokens: int = PREFIX_TOKENS, batch_size: int = 16
) -> LanguageScores:
    """Perplexity of the continuation after `prefix_tokens` (efficient and original) and KL between them.

    `session` is what `apply_method` (or an adapter's `apply`) yields; None scores the model as is.
    """
    if prefix_tokens < 1:
        raise CapreseError(f"prefix_tokens {prefix_tokens!r} must be >= 1")
    items = tokenize_items(tokenizer, texts, prefix_tokens)
    if all(len(continuation) < 2 for _, _, continuation in items):
        raise CapreseError(
            f"no token after prefix_tokens={prefix_tokens} to score: use longer texts or a shorter prefix"
        )
    result = perplexity(model, tokenizer, texts, session, prefix_tokens=prefix_tokens, batch_size=batch_size)
    per_text = {key: [getattr(t, key) for t in result.texts] for key in ("nll", "dense_nll", "kl", "tokens")}
    return LanguageScores(result.perplexity, result.dense_perplexity, result.kl, result.tokens, per_text)
