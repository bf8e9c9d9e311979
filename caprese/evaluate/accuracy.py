"""Accuracy of a model object already in memory (lm-eval style): prompts, generation, scoring.

Later stages call `evaluate_accuracy` on a model altered in place (an efficient FFN, a Caprese
correction) inside their own context manager; nothing here saves or reloads the model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..data.math_scoring import SCORINGS
from ..data.prompts import build_prompt
from .generation import GenerationConfig, generate


@dataclass
class EvalResult:
    metrics: dict  # accuracy and response length, overall and per level, plus counts
    samples: list[dict]  # one per row: id, level, question, reference, response, predicted, correct, ...


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def group_summary(samples: list[dict]) -> dict:
    return {
        "count": len(samples),
        "correct": sum(s["correct"] for s in samples),
        "accuracy": mean([float(s["correct"]) for s in samples]),
        "mean_response_tokens": mean([float(s["response_tokens"]) for s in samples]),
        "unfinished": sum(not s["finished"] for s in samples),
    }


def summarise(samples: list[dict]) -> dict:
    """Overall numbers and, where rows have a level, the same numbers per level."""
    overall = group_summary(samples)
    by_level = defaultdict(list)
    for sample in samples:
        if sample.get("level") is not None:
            by_level[sample["level"]].append(sample)
    per_level = {str(level): group_summary(group) for level, group in sorted(by_level.items())}
    return {**overall, "per_level": per_level}


def evaluate_accuracy(
    model,
    tokenizer,
    rows: list[dict],
    settings: GenerationConfig = GenerationConfig(),
    progress: bool = True,
    desc: str = "evaluating",
    scoring: str = "gsm",
) -> EvalResult:
    """Generate a response per row (question, final_answer; optional few_shot pairs) and score it
    with `scoring` ("gsm": caprese's numeric path; "math-verify": MATH-style answers)."""
    scorer = SCORINGS.get(scoring)
    prompts = [
        build_prompt(tokenizer, row["question"], answer_hint=scorer.answer_hint, few_shot=row.get("few_shot"))
        for row in rows
    ]
    generations = generate(model, tokenizer, prompts, settings, progress=progress, desc=desc)
    samples = []
    for row, prompt, gen in zip(rows, prompts, generations):
        scored = scorer.score(gen.text, row["final_answer"])
        samples.append(
            {
                "id": row.get("id"),
                "level": row.get("level"),
                "question": row["question"],
                "reference": row["final_answer"],
                "prompt": prompt,
                "response": gen.text,
                "predicted": scored["predicted"],
                "correct": scored["correct"],
                "response_tokens": gen.n_tokens,
                "finished": gen.finished,
            }
        )
    return EvalResult(metrics={**summarise(samples), "scoring": scorer.name}, samples=samples)
