"""MATH-style tasks: rows with `problem`, `solution` and (optionally) `answer`, scored by math-verify.

    load_math("data/math500.jsonl")              # local .jsonl / .json / .parquet
    load_math("HuggingFaceH4/MATH-500")          # a hub dataset (network on first use)
    caprese eval --task math:HuggingFaceH4/MATH-500 ...   # or --task FILE with `problem` rows

Rows become caprese's {"id", "question", "answer", "final_answer", "level", "subject"}: the
question is the problem, the worked answer the solution, and the final answer the `answer` field
or else the last `\\boxed{...}` of the solution. MATH's "Level 3" becomes level 3.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CapreseError
from .gsm import LOCAL_SUFFIXES, read_local_rows
from .scoring import extract_boxed

PREFIX = "math:"
SCORING = "math-verify"


def _level(value) -> int | None:
    if value is None:
        return None
    match = re.search(r"\d+", str(value))
    return int(match.group(0)) if match else None


def normalise_math_row(row: dict, index: int, source: str) -> dict:
    """Check a MATH-style row and map it to caprese's fields."""
    if "problem" not in row:
        raise CapreseError(
            f"{source}: row {index} lacks field 'problem' (MATH-style rows need 'problem' and 'solution' or 'answer')"
        )
    solution = str(row.get("solution") or "")
    final = row.get("answer")
    if final is None or not str(final).strip():
        final = extract_boxed(solution)
    if final is None:
        raise CapreseError(
            f"{source}: row {index} has no 'answer' and its solution no \\boxed{{...}}: {solution[-60:]!r}"
        )
    row_id = row.get("id", row.get("unique_id"))
    return {
        "id": str(row_id) if row_id is not None else f"{Path(source).stem}-{index}",
        "question": str(row["problem"]),
        "answer": solution,
        "final_answer": str(final).strip(),
        "level": _level(row.get("level")),
        "subject": row.get("subject", row.get("type")),
    }


def is_math_file(path: str | Path) -> bool:
    """Whether a local data file holds MATH-style rows (its first row has `problem`)."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix not in LOCAL_SUFFIXES:
        return False
    rows = read_local_rows(path)
    return bool(rows) and isinstance(rows[0], dict) and "problem" in rows[0]


def load_math(source: str | Path, split: str = "test", name: str | None = None) -> list[dict]:
    """MATH-style rows from a local file or a hub dataset id."""
    text = str(source)
    text = text.removeprefix(PREFIX)
    path = Path(text).expanduser()
    if path.suffix in LOCAL_SUFFIXES or path.exists():
        if not path.is_file():
            raise CapreseError(f"data file {text!r} does not exist")
        rows = read_local_rows(path)
    else:
        import datasets  # heavy: only a hub source needs it

        rows = [dict(row) for row in datasets.load_dataset(text, name, split=split)]
    if not rows:
        raise CapreseError(f"MATH-style source {text!r} has no rows")
    return [normalise_math_row(row, i, text) for i, row in enumerate(rows)]
