"""`MethodChoice`: which efficient FFN to run — a registered method, its sparsity, layers, options
and calibration set — validated once, applied many times (evaluation, distillation, diagnostics).

    choice = MethodChoice("griffin", 0.5, "first_half", {"reselect_every": 8})
    with choice.apply(model, tokenizer) as session:      # apply_method with this choice
        model.generate(...)

The CLI builds one from its flags (`caprese.methods.cli_options.method_from_args`), the experiment
notebook from its parameters; calibration statistics are computed on the first `apply` and reused.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.prompts import plain_prompt, plain_response
from ..data.toy_language import generate_texts
from ..data.toy_math import generate_rows
from ..errors import CapreseError
from ..io import read_jsonl
from .session import apply_method

CALIBRATION_SOURCES = ("toy-language", "toy-math")


@dataclass
class MethodChoice:
    """A registered method, its sparsity, layers and options, and where its calibration set comes from."""

    name: str
    sparsity: float
    layers: Any = "all"
    options: dict = field(default_factory=dict)
    calibration: Any = None
    """Calibration texts/rows or precomputed CalibrationStats (None: read `calibration_source` when needed)."""
    calibration_source: str | None = None
    """toy-language | toy-math | a .txt/.jsonl file, read on the first `apply` (for methods that need one)."""
    calibration_samples: int = 128

    @classmethod
    def from_spec(cls, spec: MethodChoice) -> MethodChoice:
        """A copy (kept for callers of the former CLI-side `MethodSpec`)."""
        return cls(
            spec.name,
            spec.sparsity,
            spec.layers,
            dict(spec.options),
            spec.calibration_texts(),
            spec.calibration_source,
            spec.calibration_samples,
        )

    def calibration_texts(self) -> Any:
        """The calibration set (texts and/or prompt/response rows, or statistics), read on first use."""
        if self.calibration is None and self.calibration_source is not None:
            self.calibration = load_calibration_texts(self.calibration_source, self.calibration_samples)
        return self.calibration

    @contextlib.contextmanager
    def apply(self, model, tokenizer=None, *, progress: bool = False, **kwargs):
        """`apply_method` with this choice; calibration statistics are computed once and reused."""
        with apply_method(
            model,
            self.name,
            self.sparsity,
            self.layers,
            calibration=self.calibration_texts(),
            tokenizer=tokenizer,
            progress=progress,
            **self.options,
            **kwargs,
        ) as session:
            if session.calibration is not None:
                self.calibration = session.calibration
            yield session

    def describe(self) -> dict:
        """JSON-able: what results files record as "method"."""
        return {
            "method": self.name,
            "sparsity": self.sparsity,
            "layers": self.layers,
            **self.options,
            "calibration": self.calibration_source,
            "calibration_samples": self.calibration_samples if self.calibration_source else None,
        }


def _row_item(row: dict):
    """A calibration item from a jsonl row: a text, or a prompt/response pair (only the response counts)."""
    if "text" in row:
        return str(row["text"])
    if "prompt" in row and "response" in row:
        return {"prompt": str(row["prompt"]), "response": str(row["response"])}
    if "question" in row and "answer" in row:
        return {"prompt": plain_prompt(row["question"]), "response": plain_response(row["answer"])}
    raise CapreseError(f"calibration row has none of text / prompt+response / question+answer (keys: {sorted(row)})")


def load_calibration_texts(source: str, samples: int) -> list:
    """Calibration items from a built-in generator (train split) or a file (.txt: one text per line;
    .jsonl: rows with text, or prompt+response / question+answer, of which only the response counts).
    Texts count every token; pairs count the response tokens, the ones efficient methods act on."""
    if source == "toy-language":
        items = [row["text"] for row in generate_texts(samples, split="train")]
    elif source == "toy-math":
        items = [_row_item(row) for row in generate_rows(samples, split="train")]
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CapreseError(f"calibration {source!r} is neither a file nor one of: {', '.join(CALIBRATION_SOURCES)}")
        if path.suffix == ".jsonl":
            rows = read_jsonl(path)
            items = [_row_item(row) for row in rows]
        else:
            items = [line for line in path.read_text().splitlines() if line.strip()]
        items = items[:samples]
    if not items:
        raise CapreseError(f"calibration set {source!r} is empty")
    return items
