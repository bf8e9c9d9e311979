"""What every figure function gets and returns, and drawing helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    """matplotlib's yerr for `column`: its 95% interval (`{column}_ci_low/_ci_high`, widened to the
    spread over seeds where that is larger), else min to max over seeds; None when there is neither."""
    if values.empty:
        return None
    low = values[f"{column}_ci_low"] if f"{column}_ci_low" in values else None
    high = values[f"{column}_ci_high"] if f"{column}_ci_high" in values else None
    if f"{column}_min" in values and "runs" in values and int(values["runs"].max()) > 1:
        low = values[f"{column}_min"] if low is None else pd.concat([low, values[f"{column}_min"]], axis=1).min(axis=1)
        high = (
            values[f"{column}_max"] if high is None else pd.concat([high, values[f"{column}_max"]], axis=1).max(axis=1)
        )
    if low is None or high is None or (low.isna().all() and high.isna().all()):
        return None
    below = (values[column] - low).clip(lower=0).fillna(0.0)
    above = (high - values[column]).clip(lower=0).fillna(0.0)
    return [below.tolist(), above.tolist()]


def interval_caption(
    frame: pd.DataFrame, column: str = "accuracy", *, what: str = "problems", kind: str = "Wilson"
) -> str:
    """What the error bars are and how much data each point has: 'bars: 95% Wilson intervals ·
    n = 50–200 problems per point · 1 seed' (the spread over seeds is drawn where it is wider)."""
    parts = []
    n_column = f"{column}_n" if f"{column}_n" in frame else ("prompts" if "prompts" in frame else None)
    if f"{column}_ci_low" in frame and frame[f"{column}_ci_low"].notna().any():
        parts.append(f"bars: 95% {kind} intervals")
    if n_column and frame[n_column].notna().any():
        low, high = int(frame[n_column].min()), int(frame[n_column].max())
        parts.append(f"n = {low}{'' if low == high else f'–{high}'} {what} per point")
    if "runs" in frame and frame["runs"].notna().any():
        low, high = int(frame["runs"].min()), int(frame["runs"].max())
        parts.append(f"{low}{'' if low == high else f'–{high}'} seed{'s' if high > 1 else ''}")
    return " · ".join(parts)


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
