"""caprese inside lm-evaluation-harness (`pip install 'caprese[eval]'`).

    from caprese.harness import CapreseLM, task_manager
    import lm_eval
    lm = CapreseLM(pretrained="toy-math", method="griffin", sparsity=0.5, layers="first_half")
    results = lm_eval.simple_evaluate(model=lm, tasks=["caprese_toy_math"], limit=50,
                                      task_manager=task_manager())

Importing `caprese.harness.model` registers the lm-eval model `caprese`; `task_manager()` is an
lm-eval TaskManager that also knows the offline tasks shipped in caprese/harness/tasks/
(caprese_toy_math, caprese_toy_language, caprese_gsm8k_100, caprese_toy_math_mc). Hub tasks
(gsm8k, minerva_math500, ...) work unchanged for users online.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def task_manager(include_path: str | list[str] | None = None, **kwargs):
    """lm-eval's TaskManager with caprese's offline tasks (and any `include_path` of yours) added."""
    from lm_eval.tasks import TaskManager  # lm-eval is an optional extra

    paths = [str(TASKS_DIR)] + ([include_path] if isinstance(include_path, str) else list(include_path or []))
    return TaskManager(include_path=paths, **kwargs)


def __getattr__(name: str):
    if name == "CapreseLM":  # lm-eval is an optional extra: import it only when asked for
        from .model import CapreseLM

        return CapreseLM
    raise AttributeError(name)


__all__ = ["TASKS_DIR", "CapreseLM", "task_manager"]
