"""Functions the YAML tasks in caprese/harness/tasks/ name with `!function`: datasets built from
caprese's own task registry (offline, no hub), caprese's prompt, and caprese's answer scoring,
so an lm-eval run of `caprese_toy_math` scores exactly what `caprese eval --task toy-math` does.
"""

from __future__ import annotations

from typing import Any

from ..data.math_scoring import score_with
from ..data.prompts import plain_prompt
from ..data.tasks import load_task_rows
from ..data.toy_math import generate_rows

MC_CHOICES = 4


def _dataset(rows: list[dict]):
    import datasets  # lm-eval's own dependency (the eval extra); lm-eval loads these functions

    clean = [{**row, "final_answer": str(row["final_answer"]), "level": row.get("level")} for row in rows]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(clean)})


def rows_dataset(task: str = "toy-math", samples: int = 200, seed: int = 0, **_metadata: Any):
    """{"test": rows} of a caprese task (`caprese eval --task TASK --samples N --data-seed SEED`)."""
    return _dataset(load_task_rows(task, int(samples), seed=int(seed)))


def doc_to_text(doc: dict) -> str:
    """The plain prompt caprese uses for models without a chat template (toy-math is trained on it)."""
    return plain_prompt(doc["question"])


def _score(doc: dict, response: str, scoring: str) -> dict:
    scored = score_with(scoring, response, doc["final_answer"])
    return {"acc": float(scored["correct"])}


def process_results(doc: dict, results: list[str]) -> dict:
    """caprese's GSM scoring (`####`, `\\boxed{}`, last number; numbers compared by value)."""
    return _score(doc, results[0], "gsm")


def process_results_math(doc: dict, results: list[str]) -> dict:
    """math-verify scoring (LaTeX, fractions, intervals, sets)."""
    return _score(doc, results[0], "math-verify")


def _distractors(value: int) -> list[int]:
    wrong = []
    for candidate in (value + 1, value - 1, value + 10, 2 * value + 3, value + 2, value + 20):
        if candidate >= 0 and candidate != value and candidate not in wrong:
            wrong.append(candidate)
    return wrong[: MC_CHOICES - 1]


def mc_dataset(samples: int = 100, seed: int = 0, **_metadata: Any):
    """toy-math as multiple choice: the worked solution ending in the right `#### n`, or in one of
    three wrong ones. Every choice is many tokens long, so a method changes its loglikelihood."""
    import datasets

    rows = []
    for index, row in enumerate(generate_rows(int(samples), split="test", seed=int(seed))):
        worked, _ = row["answer"].rsplit("\n", 1)
        wrong = _distractors(int(row["final_answer"]))
        label = index % (len(wrong) + 1)  # the right answer's position cycles through the choices
        finals = wrong[:label] + [row["final_answer"]] + wrong[label:]
        choices = [f"{worked}\n#### {final}" for final in finals]
        rows.append(
            {"id": row["id"], "question": row["question"], "level": row["level"], "choices": choices, "label": label}
        )
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
