"""What every figure function gets and returns, and drawing helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .results import Results
from .style import DENSE_LINE, method_colour


class MissingData(Exception):
    """A figure or table has nothing to draw from; the message is one line saying what to run."""


@dataclass
class Context:
    results: Results
    out_dir: Path
    diagnostics: Path | None = None  # a `caprese diagnose` output folder (its figure2.csv), if any
    latency: Path | None = None  # the latency benchmark's JSON (table 5), if any


@dataclass
class Made:
    """What a figure or table function wrote, and which data it was drawn from."""

    paths: list[Path]
    source: str
    data: pd.DataFrame | None = field(default=None, repr=False)


def full_first(name: str) -> list[str]:
    """A sweep's folder names, the paper-sized grid (`--full`) first."""
    return [f"{name}-full", name]


def sweep_hint(name: str) -> str:
    return f"run caprese sweep ablations/{name}.yaml"


def errorbars(values: pd.DataFrame, column: str) -> list[list[float]] | None:
    """matplotlib's yerr (min to max over seeds) for `column`; None when no point has more than one run."""
    if "runs" not in values or values.empty or int(values["runs"].max()) <= 1:
        return None
    return [(values[column] - values[f"{column}_min"]).tolist(), (values[f"{column}_max"] - values[column]).tolist()]


def reference_line(ax, value: float | None, label: str, *, colour: str | None = None, line: str = DENSE_LINE) -> None:
    """A horizontal reference (dense model, the method alone) across the panel."""
    if value is None or value != value:  # absent, or NaN read back from a table
        return
    ax.axhline(value, color=colour or method_colour("dense"), linestyle=line, linewidth=1.1, label=label)


def log2_axis(ax, values: Sequence[float]) -> None:
    """Ranks and sample counts double from point to point: a log2 axis ticked at the measured values."""
    values = sorted({float(v) for v in values if v and v > 0})
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()
