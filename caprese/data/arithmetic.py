"""Few-shot arithmetic by difficulty level: a task small real models answer well at its easiest level.

A small instruct model (SmolLM2-135M) scores 0% on GSM8K and rambles on a bare "what is a + b";
shown a few solved examples of the same kind as earlier chat turns, it answers in their format and
stops. Each row carries its `few_shot` examples (question, answer) for the prompt builder, and the
answer format is the examples' own: the equation restated, e.g. "3 + 4 = 7" (scored by its last
number).

    level 1   a + b, one digit each              level 4   a + b - c, two digits each
    level 2   a + b, two digits each             level 5   a + b - c + d, two digits each
    level 3   a + b + c, one digit each

Problems and examples come from seeded generators apart from each other (examples never repeat a
test problem); the `split` seeds keep test and distill problems apart too.
"""

from __future__ import annotations

import random

from ..errors import CapreseError

LEVELS = (1, 2, 3, 4, 5)
SHOTS = 4
# per level: (operators between the terms, digits per term)
_SHAPES = {1: ("+", 1), 2: ("+", 2), 3: ("++", 1), 4: ("+-", 2), 5: ("+-+", 2)}
_SPLITS = {"test": 0, "distill": 1, "shots": 2}


def check_levels(levels) -> tuple[int, ...]:
    levels = tuple(int(level) for level in levels)
    bad = [level for level in levels if level not in LEVELS]
    if bad or not levels:
        raise CapreseError(f"arithmetic level(s) {bad or list(levels)} not allowed (choose from {list(LEVELS)})")
    return levels


def make_problem(rng: random.Random, level: int) -> tuple[str, int, str]:
    """(question, answer, worked answer) of one problem at `level`; never a negative result."""
    signs, digits = _SHAPES[level]
    low, high = (1, 9) if digits == 1 else (10, 99)
    while True:
        values = [rng.randint(low, high) for _ in range(len(signs) + 1)]
        total, expression = values[0], str(values[0])
        for sign, value in zip(signs, values[1:]):
            total = total + value if sign == "+" else total - value
            expression += f" {sign} {value}"
        if total >= 0:
            return f"What is {expression}?", total, f"{expression} = {total}"


def generate_rows(n: int, split: str = "test", seed: int = 0, levels=LEVELS, shots: int = SHOTS) -> list[dict]:
    """`n` problems, levels mixed evenly in turn, each with `shots` solved examples of its level."""
    if n < 1:
        raise CapreseError(f"number of arithmetic problems {n!r} must be >= 1")
    if split not in _SPLITS or split == "shots":
        raise CapreseError(f"arithmetic split {split!r} not allowed (choose from test, distill)")
    levels = check_levels(levels)
    rng = random.Random(f"arithmetic-{split}-{seed}")
    examples = few_shot_examples(seed, shots)
    rows = []
    for i in range(n):
        level = levels[i % len(levels)]
        question, answer, worked = make_problem(rng, level)
        rows.append(
            {
                "id": f"arithmetic-{split}-{seed}-{i}",
                "level": level,
                "question": question,
                "answer": f"{worked}\n#### {answer}",
                "final_answer": str(answer),
                "few_shot": examples[level],
            }
        )
    return rows


def few_shot_examples(seed: int = 0, shots: int = SHOTS) -> dict[int, list[list[str]]]:
    """Per level, `shots` solved (question, answer) pairs from their own generator."""
    if shots < 0:
        raise CapreseError(f"shots {shots!r} must be >= 0")
    rng = random.Random(f"arithmetic-shots-{seed}")
    out = {}
    for level in LEVELS:
        out[level] = [[q, worked] for q, _, worked in (make_problem(rng, level) for _ in range(shots))]
    return out
