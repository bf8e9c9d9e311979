"""Seeded multi-step arithmetic word problems in GSM8K format, with difficulty levels 1-5.

The level is the number of chained operations: every step applies one operation to the
previous step's result, so a level-5 problem needs five correct equations in a row. Numbers
stay small on purpose so a tiny model can learn the arithmetic itself rather than a table of
facts: every intermediate result is in [0, 99]; amounts added or taken away are a single digit
or whole tens that change one digit without carrying or borrowing (47 + 2, 47 - 30);
multiplication is by 2-5 of values up to 19; halving applies to even values. The difficulty
comes from the length of the chain. (Measured on 1.6M-parameter models trained ~23 min on 2 CPU
cores: with two-digit operands and results up to 999, addition and subtraction reached 5-10%
accuracy; with carries on single digits, ~60%; whole tens, which never carry, 100%.)

    question: "Ann has 12 shells. First, she finds 7 more shells. Second, she has 3 times as many
               shells. Third, she gives 30 shells to Ben. How many shells does Ann have now?"
    answer:   "First: 12 + 7 = 19.\nSecond: 19 * 3 = 57.\nThird: 57 - 30 = 27.\n#### 27"
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import CapreseError

LEVELS = (1, 2, 3, 4, 5)
MAX_VALUE = 99  # every intermediate result stays in [0, MAX_VALUE]
MAX_START = 99  # starting counts have 1-2 digits
MAX_DIGIT = 9  # added / subtracted amounts are 1..9 or whole tens 10..90
MAX_MULTIPLICAND = 19  # multiply only values up to 19 (by 2-5), so products stay below 100
FACTORS = (2, 3, 4, 5)
STEP_LINE = re.compile(r"^([A-Z][a-z]+): (\d+) ([-+*/]) (\d+) = (\d+)\.$")  # "Second: 34 / 2 = 17."

# (name, subject pronoun, object pronoun, possessive)
PEOPLE = (
    ("Ann", "she", "her", "her"),
    ("Ben", "he", "him", "his"),
    ("Cara", "she", "her", "her"),
    ("Dan", "he", "him", "his"),
    ("Eva", "she", "her", "her"),
    ("Finn", "he", "him", "his"),
    ("Gina", "she", "her", "her"),
    ("Hugo", "he", "him", "his"),
    ("Iris", "she", "her", "her"),
    ("Jack", "he", "him", "his"),
    ("Kim", "she", "her", "her"),
    ("Leo", "he", "him", "his"),
    ("Mia", "she", "her", "her"),
    ("Noah", "he", "him", "his"),
    ("Olga", "she", "her", "her"),
    ("Paul", "he", "him", "his"),
    ("Rosa", "she", "her", "her"),
    ("Sam", "he", "him", "his"),
    ("Tina", "she", "her", "her"),
    ("Omar", "he", "him", "his"),
)
ITEMS = (
    "apples",
    "marbles",
    "stickers",
    "coins",
    "cards",
    "books",
    "pencils",
    "shells",
    "stamps",
    "beads",
    "cookies",
    "eggs",
    "toys",
    "buttons",
    "flowers",
    "candies",
)

# Each operation has sentence templates; {P}/{p} subject pronoun, {o} object, {s} possessive,
# {F} a friend's name, {n} the operand, {i} the item word.
TEMPLATES = {
    "+": (
        "{p} buys {n} more {i}.",
        "{p} finds {n} more {i}.",
        "{F} gives {o} {n} {i}.",
        "{p} gets {n} more {i} from {F}.",
    ),
    "-": (
        "{p} gives {n} {i} to {F}.",
        "{p} loses {n} {i}.",
        "{p} sells {n} {i}.",
        "{p} uses {n} of {s} {i}.",
    ),
    "*": ("{p} has {n} times as many {i}.", "the number of {s} {i} grows {n} times."),
    "/": ("{p} gives half of {s} {i} to {F}.", "{p} loses half of {s} {i}."),
}
# Each event sentence opens with its ordinal, and each worked step names the ordinal of the
# sentence it uses: finding "the second event" is then a lookup by a unique word, which a tiny
# model learns quickly, instead of counting sentences (measured: it had not learned to count
# within the CPU budget, so multi-step problems failed even when each step was easy).
ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth")


@dataclass(frozen=True)
class Step:
    op: str  # one of + - * /
    left: int
    right: int
    result: int

    def equation(self) -> str:
        return f"{self.left} {self.op} {self.right} = {self.result}."


@dataclass(frozen=True)
class MathProblem:
    question: str
    answer: str  # GSM8K style: worked equations, then "#### n"
    final_answer: int
    level: int
    start: int
    steps: tuple[Step, ...]

    def to_row(self, index: int) -> dict:
        return {
            "id": f"toy-math-{index}",
            "question": self.question,
            "answer": self.answer,
            "final_answer": self.final_answer,
            "level": self.level,
        }


def apply(op: str, left: int, right: int) -> int:
    """The arithmetic each operation stands for (halving is written `x / 2`)."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        if left % right:
            raise ValueError(f"{left} / {right} is not a whole number")
        return left // right
    raise ValueError(f"unknown operation {op!r}")


def allowed_ops(value: int) -> list[str]:
    """Operations that keep the next result a whole number in [0, MAX_VALUE], digit by digit."""
    ops = []
    if value % 10 < 9 or value // 10 < 9:  # some digit can still grow without carrying
        ops.append("+")
    if value >= 1:
        ops.append("-")
    if 1 <= value <= MAX_MULTIPLICAND:
        ops.append("*")
    if value >= 2 and value % 2 == 0:
        ops.append("/")
    return ops


def digit_or_tens(rng: random.Random, value: int, op: str) -> int | None:
    """An amount to add to / take from `value` that changes exactly one digit, without carrying
    or borrowing: a single digit (units) or whole tens. None when neither kind fits."""
    units, tens = value % 10, value // 10
    digit_room = 9 - units if op == "+" else units
    tens_room = 9 - tens if op == "+" else tens
    kinds = [k for k, room in (("digit", digit_room), ("tens", tens_room)) if room >= 1]
    if not kinds:
        return None
    if rng.choice(kinds) == "tens":
        return 10 * rng.randint(1, tens_room)
    return rng.randint(1, digit_room)


def draw_operand(rng: random.Random, op: str, value: int) -> int:
    if op in "+-":
        return digit_or_tens(rng, value, op)
    if op == "*":
        return rng.choice(FACTORS)
    return 2


def draw_steps(rng: random.Random, start: int, level: int) -> tuple[Step, ...]:
    steps, value = [], start
    for _ in range(level):
        op = rng.choice(allowed_ops(value))
        operand = draw_operand(rng, op, value)
        result = apply(op, value, operand)
        steps.append(Step(op, value, operand, result))
        value = result
    return tuple(steps)


def describe_step(rng: random.Random, step: Step, person: tuple, friend: str, item: str, used: set[str]) -> str:
    """One sentence for `step`, avoiding templates this problem already used where possible:
    repeated identical sentences would make "which sentence comes next" ambiguous."""
    _, subject, obj, poss = person
    fresh = [t for t in TEMPLATES[step.op] if t not in used] or list(TEMPLATES[step.op])
    template = rng.choice(fresh)
    used.add(template)
    return template.format(p=subject, o=obj, s=poss, F=friend, n=step.right, i=item)


def make_problem(rng: random.Random, level: int) -> MathProblem:
    person, friend = rng.sample(PEOPLE, 2)
    item = rng.choice(ITEMS)
    start = rng.randint(1, MAX_START)
    steps = draw_steps(rng, start, level)
    opening = f"{person[0]} has {start} {item}."
    used: set[str] = set()
    events = [
        f"{ordinal}, {describe_step(rng, step, person, friend[0], item, used)}"
        for ordinal, step in zip(ORDINALS, steps)
    ]
    question = " ".join([opening, *events, f"How many {item} does {person[0]} have now?"])
    final = steps[-1].result
    worked = "\n".join(f"{ordinal}: {step.equation()}" for ordinal, step in zip(ORDINALS, steps))
    return MathProblem(question, f"{worked}\n#### {final}", final, level, start, steps)


def check_levels(levels) -> tuple[int, ...]:
    levels = tuple(sorted(set(int(level) for level in levels)))
    bad = [level for level in levels if level not in LEVELS]
    if bad or not levels:
        raise CapreseError(f"toy-math levels {list(bad or levels)!r} are not allowed (choose from: 1, 2, 3, 4, 5)")
    return levels


def split_rng(split: str, seed: int) -> random.Random:
    # string seeds hash with SHA-512 in Python's random: identical on every run and platform
    return random.Random(f"toy-math/{split}/{seed}")


def iter_problems(split: str = "test", seed: int = 0, levels=LEVELS) -> Iterator[MathProblem]:
    """An endless stream cycling through `levels` in order, so any prefix mixes them evenly."""
    levels = check_levels(levels)
    rng = split_rng(split, seed)
    index = 0
    while True:
        yield make_problem(rng, levels[index % len(levels)])
        index += 1


def generate_problems(n: int, split: str = "test", seed: int = 0, levels=LEVELS) -> list[MathProblem]:
    if n < 0:
        raise CapreseError(f"number of problems {n!r} must be >= 0")
    stream = iter_problems(split, seed, levels)
    return [next(stream) for _ in range(n)]


def generate_rows(n: int, split: str = "test", seed: int = 0, levels=LEVELS) -> list[dict]:
    return [p.to_row(i) for i, p in enumerate(generate_problems(n, split, seed, levels))]


def verify_row(row: dict) -> bool:
    """Recompute a row's worked solution: the equations must use the question's numbers in order,
    each one must feed the next, the arithmetic must hold and the final answer must match."""
    *lines, final = row["answer"].split("\n")
    matches = [STEP_LINE.match(line) for line in lines]
    if not all(matches) or [m.group(1) for m in matches] != list(ORDINALS[: len(lines)]):
        return False
    parsed = [m.groups()[1:] for m in matches]
    stated = [int(n) for n in re.findall(r"\d+", row["question"])]
    used = [int(parsed[0][0])] + [int(right) for _, op, right, _ in parsed if op != "/"] if parsed else []
    if stated != used:
        return False
    value = None
    for left, op, right, result in parsed:
        left, right, result = int(left), int(right), int(result)
        if value is not None and left != value:
            return False
        if apply(op, left, right) != result or not 0 <= result <= MAX_VALUE:
            return False
        value = result
    return len(parsed) == row["level"] and final == f"#### {value}" and value == row["final_answer"]
