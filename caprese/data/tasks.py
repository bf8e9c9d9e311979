"""Evaluation tasks by name: each turns (samples, seed, levels) into GSM8K-style rows.

A row is {"id", "question", "final_answer", ...}; toy-math rows also carry "level".
A task argument that is an existing file path loads that file instead (GSM8K format, or MATH-style
when its rows have `problem`); `math:SOURCE` loads a MATH-style file or hub dataset.
Each task names the answer scoring it takes (`task_scoring`; see caprese.data.math_scoring).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CapreseError
from ..registry import Registry
from . import arithmetic, gsm, math_tasks, toy_language, toy_math


@dataclass(frozen=True)
class TaskRequest:
    samples: int
    seed: int = 0
    levels: tuple[int, ...] | None = None  # only tasks with difficulty levels accept this


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    load: Callable[[TaskRequest], list[dict]]
    has_levels: bool = False
    scoring: str = "gsm"
    check_levels: Callable[[tuple], tuple[int, ...]] | None = None  # tasks with levels: validates them


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task, aliases: tuple[str, ...] = ()) -> Task:
    return TASKS.register(task.name, task, aliases=aliases)


def first(rows: list[dict], n: int) -> list[dict]:
    """The first `n` rows of a fixed set (all of them when it has fewer)."""
    return rows[:n]


def load_toy_math(request: TaskRequest) -> list[dict]:
    levels = request.levels or toy_math.LEVELS
    return toy_math.generate_rows(request.samples, split="test", seed=request.seed, levels=levels)


def load_arithmetic(request: TaskRequest) -> list[dict]:
    return arithmetic.generate_rows(
        request.samples, split="test", seed=request.seed, levels=request.levels or arithmetic.LEVELS
    )


def load_toy_language(request: TaskRequest) -> list[dict]:
    return toy_language.generate_rows(request.samples, split="test", seed=request.seed)


register_task(
    Task(
        "toy-math",
        "held-out toy arithmetic word problems, levels 1-5 mixed evenly",
        load_toy_math,
        has_levels=True,
        check_levels=toy_math.check_levels,
    )
)
register_task(
    Task(
        "arithmetic",
        "few-shot chat arithmetic, levels 1-5 (1: a + b one digit ... 5: a + b - c + d two digits)",
        load_arithmetic,
        has_levels=True,
        check_levels=arithmetic.check_levels,
    )
)
register_task(Task("toy-language", "held-out toy story questions (short answers, no arithmetic)", load_toy_language))
register_task(
    Task(
        "gsm8k-100",
        "the 100 original GSM8K test problems behind GSM-Symbolic (offline)",
        lambda r: first(gsm.load_gsm8k_100(), r.samples),
    ),
    aliases=("gsm8k100",),
)
register_task(
    Task(
        "gsm-symbolic",
        "reasoning-gym's seeded gsm_symbolic generator",
        lambda r: gsm.gsm_symbolic_rows(r.samples, r.seed),
    ),
    aliases=("gsm_symbolic",),
)


def looks_like_file(task: str) -> bool:
    return Path(task).suffix in gsm.LOCAL_SUFFIXES or Path(task).expanduser().is_file()


def load_task_rows(task: str, samples: int, seed: int = 0, levels=None) -> list[dict]:
    """Rows for a registered task name or a local GSM8K-format file."""
    if samples <= 0:
        raise CapreseError(f"--samples {samples!r} must be > 0")
    if task.startswith(math_tasks.PREFIX) or math_tasks.is_math_file(task):
        if levels:
            raise CapreseError(f"--levels applies to toy-math only, not to MATH-style task {task!r}")
        return first(math_tasks.load_math(task), samples)
    if looks_like_file(task):
        if levels:
            raise CapreseError(f"--levels applies to toy-math only, not to file {task!r}")
        return first(gsm.load_gsm_file(task), samples)
    spec = TASKS.get(task)
    if levels and not spec.has_levels:
        with_levels = ", ".join(name for name in TASKS.names() if TASKS.get(name).has_levels)
        raise CapreseError(f"--levels applies to {with_levels} only, not to task {spec.name!r}")
    if levels:
        levels = spec.check_levels(levels)
    return spec.load(TaskRequest(samples=samples, seed=seed, levels=levels))


def check_task_levels(task: str, levels: tuple[int, ...]) -> tuple[int, ...]:
    """`levels` checked for `task`, without loading any rows (config validation)."""
    if task.startswith(math_tasks.PREFIX) or looks_like_file(task) or not TASKS.get(task).has_levels:
        with_levels = ", ".join(name for name in TASKS.names() if TASKS.get(name).has_levels)
        raise CapreseError(f"levels {list(levels)} apply to {with_levels} only, not to task {task!r}")
    return TASKS.get(task).check_levels(levels)


def task_scoring(task: str) -> str:
    """The answer scoring a task takes: "math-verify" for MATH-style tasks, else the registered one."""
    if task.startswith(math_tasks.PREFIX) or math_tasks.is_math_file(task):
        return math_tasks.SCORING
    if looks_like_file(task):
        return "gsm"
    return TASKS.get(task).scoring


def task_names() -> list[str]:
    return TASKS.names()
