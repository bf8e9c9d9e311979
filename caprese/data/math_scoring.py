"""Answer scoring by name: caprese's fast numeric GSM path, or math-verify for MATH-style answers.

    score_with("gsm", response, "18")                   # `####` / `\\boxed{}` / last number, by value
    score_with("math-verify", response, "\\frac{1}{2}")  # LaTeX, fractions, intervals, sets, equations

"gsm" is `caprese.data.scoring.score_response` (GSM8K-style `#### n` answers). "math-verify"
extracts the last `\\boxed{...}` (else the text after the last `####`, else whatever math-verify
finds in the response) and compares it with the reference through math-verify's `parse` and
`verify` (sympy equivalence: `\\frac{1}{2}` = `0.5`, `\\boxed{x=3}` = `3`, `[1,2)` ≠ `(1,2)`,
`\\{1,2\\}` = `\\{2,1\\}`). Every result file records which scorer ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry
from .scoring import extract_boxed, extract_hashes, score_response


@dataclass(frozen=True)
class Scoring:
    name: str
    description: str
    score: Callable[[str, object], dict]
    answer_hint: str
    """What chat models are told about where to put the answer (plain prompts carry no hint)."""


SCORINGS: Registry[Scoring] = Registry("scoring")


def _as_math(text: str) -> str:
    """Text for math-verify's parser: LaTeX that is not already delimited gets `$...$`."""
    text = text.strip()
    if text.startswith("$") or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _timeouts() -> dict:
    # math-verify's timeouts use SIGALRM, which exists only in the main thread
    if threading.current_thread() is threading.main_thread():
        return {}
    return {"parsing_timeout": None}


def math_answers_match(predicted: str | None, reference) -> bool:
    """True when math-verify finds the two answers equivalent."""
    from math_verify import parse, verify  # heavy (sympy): only MATH-style tasks need it

    if predicted is None or not str(predicted).strip():
        return False
    timeouts = _timeouts()
    gold = parse(_as_math(str(reference)), **timeouts)
    guess = parse(_as_math(str(predicted)), **timeouts)
    if not gold or not guess:
        return False
    return bool(verify(gold, guess, **({} if not timeouts else {"timeout_seconds": None})))


def extract_math_answer(response: str) -> str | None:
    """The last `\\boxed{...}`, else the text after the last `####`, else None (math-verify then
    searches the whole response)."""
    return extract_boxed(response) or extract_hashes(response)


def score_math_response(response: str, reference) -> dict:
    """{"predicted", "correct"} with math-verify; a response without `\\boxed{}`/`####` is parsed whole."""
    predicted = extract_math_answer(response)
    if predicted is not None:
        return {"predicted": predicted, "correct": math_answers_match(predicted, reference)}
    from math_verify import parse, verify

    timeouts = _timeouts()
    found = parse(response, **timeouts)
    gold = parse(_as_math(str(reference)), **timeouts)
    correct = bool(found and gold and verify(gold, found, **({} if not timeouts else {"timeout_seconds": None})))
    return {"predicted": found[-1] if found else None, "correct": correct}


SCORINGS.register(
    "gsm",
    Scoring(
        "gsm",
        "GSM8K-style: `####`, `\\boxed{}` or last number, compared by value",
        score_response,
        "Put your final answer after ####.",
    ),
    aliases=("numeric",),
)
SCORINGS.register(
    "math-verify",
    Scoring(
        "math-verify",
        "MATH-style: last `\\boxed{}` compared with math-verify",
        score_math_response,
        "Put your final answer within \\boxed{}.",
    ),
    aliases=("math", "math_verify"),
)


def score_with(scoring: str, response: str, reference) -> dict:
    """Score one response with the named scorer (one-line error naming the allowed ones)."""
    return SCORINGS.get(scoring).score(response, reference)


def scoring_names() -> list[str]:
    return SCORINGS.names()
