"""Held-out text sets for teacher-forced perplexity / KL: math reasoning text vs general prose.

Each set turns (samples, seed) into rows that `texts_as_items` makes into what
`caprese.evaluate.perplexity` scores: a math row becomes the chat prompt of its question plus its
worked solution as the continuation (what a model asked the question would generate); a prose
row is a plain passage whose first `prefix_tokens` tokens are the context.

    gsm8k-100-solutions     the 100 GSM8K test problems' reference solutions (offline)
    gsm-symbolic-solutions  reasoning-gym gsm_symbolic worked solutions, seeds far from the
                            distillation questions' (no overlap with Caprese's training data)
    math-text               both of the above: GSM8K-100 first, then gsm-symbolic
    kjv-prose               Genesis, King James Version (public domain; caprese/data/DATA_SOURCES.md),
                            cut into consecutive windows of PROSE_WORDS words, so that a prose
                            text holds a context as long as a math text's prompt plus its scored
                            continuation
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import CapreseError
from ..registry import Registry
from .gsm import gsm_symbolic_rows, load_gsm8k_100
from .prompts import build_prompt

KJV_FILE = Path(__file__).with_name("kjv_genesis.txt")
SYMBOLIC_SEED_OFFSET = 10_000
"""gsm-symbolic evaluation texts use seed + this (distillation draws its questions at `seed`)."""
PROSE_WORDS = 130
"""Words per prose text: 143-200 SmolLM2 tokens (median 163), room for a 96-token context (math
prompts' median is 109 tokens with SmolLM2's chat template) and 47-64 scored tokens; Genesis gives
209 texts."""
_CALCULATOR = re.compile(r"<<[^>]*>>")


@dataclass(frozen=True)
class TextSet:
    name: str
    description: str
    load: Callable[[int, int], list[dict]]  # (samples, seed) -> rows
    kind: str  # math | prose


TEXT_SETS: Registry[TextSet] = Registry("text set")


def _solution(answer: str) -> str:
    """A worked solution as a model would write it: GSM8K's <<a*b=c>> calculator notes removed."""
    return _CALCULATOR.sub("", answer).strip()


def _gsm8k_100(samples: int, seed: int) -> list[dict]:
    return [
        {"id": r["id"], "question": r["question"], "solution": _solution(r["answer"])}
        for r in load_gsm8k_100()[:samples]
    ]


def _gsm_symbolic(samples: int, seed: int) -> list[dict]:
    return [
        {"id": r["id"], "question": r["question"], "solution": _solution(r["answer"])}
        for r in gsm_symbolic_rows(samples, seed=seed + SYMBOLIC_SEED_OFFSET)
    ]


def _math_text(samples: int, seed: int) -> list[dict]:
    rows = _gsm8k_100(samples, seed)
    return rows + (_gsm_symbolic(samples - len(rows), seed) if samples > len(rows) else [])


@lru_cache(maxsize=1)
def kjv_passages() -> tuple[str, ...]:
    return tuple(line.strip() for line in KJV_FILE.read_text(encoding="utf-8").splitlines() if line.strip())


@lru_cache(maxsize=1)
def kjv_windows() -> tuple[str, ...]:
    """Genesis as consecutive, non-overlapping windows of PROSE_WORDS words (the last, short one dropped)."""
    words = " ".join(kjv_passages()).split()
    return tuple(" ".join(words[i : i + PROSE_WORDS]) for i in range(0, len(words) - PROSE_WORDS + 1, PROSE_WORDS))


def _kjv(samples: int, seed: int) -> list[dict]:
    windows = kjv_windows()
    if samples > len(windows):
        raise CapreseError(f"kjv-prose has {len(windows)} texts, {samples} were asked for (allowed: 1..{len(windows)})")
    return [{"id": f"kjv-genesis-{i}", "text": text} for i, text in enumerate(windows[:samples])]


TEXT_SETS.register(
    "gsm8k-100-solutions", TextSet("gsm8k-100-solutions", "GSM8K-100 reference solutions", _gsm8k_100, "math")
)
TEXT_SETS.register(
    "gsm-symbolic-solutions",
    TextSet("gsm-symbolic-solutions", "reasoning-gym gsm_symbolic worked solutions", _gsm_symbolic, "math"),
)
TEXT_SETS.register(
    "math-text", TextSet("math-text", "GSM8K-100 then gsm-symbolic worked solutions", _math_text, "math")
)
TEXT_SETS.register(
    "kjv-prose", TextSet("kjv-prose", "King James Version Genesis passages (public domain)", _kjv, "prose")
)


def load_text_rows(name: str, samples: int, seed: int = 0) -> list[dict]:
    if samples < 1:
        raise CapreseError(f"text samples {samples!r} must be >= 1")
    return TEXT_SETS.get(name).load(samples, seed)


def texts_as_items(tokenizer, rows: list[dict]) -> list:
    """Rows of a text set -> items for `caprese.evaluate.perplexity` (prompt/response pairs or plain texts)."""
    items = []
    for row in rows:
        if "text" in row:
            items.append(row["text"])
        else:
            chat = bool(getattr(tokenizer, "chat_template", None))
            items.append(
                {
                    "id": row["id"],
                    "prompt": build_prompt(tokenizer, row["question"]),
                    "response": row["solution"] if chat else f" {row['solution']}",
                }
            )
    return items
