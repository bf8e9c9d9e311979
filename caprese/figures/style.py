"""One look for every figure: fonts and sizes, a colour per method (shades of it per rank), a
marker per Caprese stage, and the atomic PNG + PDF writer.

Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas (no pyplot state), so
rendering works headless, in a notebook and in parallel tests alike. rcParams are read when an
artist is created, so every figure is built inside `style()`.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_write_bytes

RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "errorbar.capsize": 2,
    "figure.dpi": 100,
    "savefig.dpi": 160,
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays text (searchable, editable)
}

# Okabe–Ito-like, distinguishable for colour-blind readers; dense is always black
METHOD_COLOURS = {"dense": "#000000", "griffin": "#0072B2", "cats": "#D55E00", "teal": "#009E73", "topk": "#7B3294"}
_FALLBACK_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#8C564B")
METHOD_NAMES = {"dense": "dense", "griffin": "GRIFFIN", "cats": "CATS", "teal": "TEAL", "topk": "top-k"}

STAGE_MARKERS = {"none": "o", "closed_form": "D", "layerwise": "s", "e2e": "^"}
STAGE_NAMES = {"none": "method alone", "closed_form": "closed form", "layerwise": "layer-wise", "e2e": "E2E"}
# the uncorrected method is dashed everywhere: a reader tells "with Caprese" from "without" at a glance
BASELINE_LINE = "--"
CAPRESE_LINE = "-"
DENSE_LINE = ":"
LORA_LINE = "-."  # the LoRA baseline: a trained path too, but not Caprese's
LORA_MARKER = "x"


@contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(RC):
        yield


def method_name(method: str) -> str:
    return METHOD_NAMES.get(str(method), str(method))


def stage_name(stage: str) -> str:
    return STAGE_NAMES.get(str(stage), str(stage))


def method_colour(method: str) -> str:
    method = str(method)
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    # a method registered later still gets a stable colour of its own
    return _FALLBACK_COLOURS[sum(map(ord, method)) % len(_FALLBACK_COLOURS)]


def stage_marker(stage: str) -> str:
    return STAGE_MARKERS.get(str(stage), "v")


def shade(colour: str, position: float) -> tuple[float, float, float]:
    """`colour` mixed with white: position 1 is the colour itself, 0 is a light tint of it."""
    r, g, b = matplotlib.colors.to_rgb(colour)
    keep = 0.35 + 0.65 * min(max(position, 0.0), 1.0)
    return (1 - keep + keep * r, 1 - keep + keep * g, 1 - keep + keep * b)


def rank_colour(method: str, rank: int, ranks: Sequence[int]) -> tuple[float, float, float]:
    """Caprese at a larger rank is drawn darker in the method's colour."""
    ordered = sorted({int(r) for r in ranks if int(r) > 0})
    if int(rank) <= 0 or len(ordered) <= 1:
        return matplotlib.colors.to_rgb(method_colour(method))
    return shade(method_colour(method), 0.3 + 0.7 * ordered.index(int(rank)) / (len(ordered) - 1))


def new_figure(
    ncols: int = 1, nrows: int = 1, *, panel: tuple[float, float] = (4.2, 3.2), **subplots
) -> tuple[Figure, list]:
    """A figure of `nrows × ncols` panels of `panel` inches each; returns (figure, flat list of axes)."""
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, [ax for row in axes for ax in row]


def note(fig: Figure, text: str) -> None:
    """A caption under the panels: what the figure holds constant, where its data came from."""
    if text:
        # about 15 characters per inch at 7 pt: wrap so a one-panel figure keeps its caption whole
        width = max(40, int(fig.get_figwidth() * 15))
        fig.supxlabel(textwrap.fill(text, width, break_on_hyphens=False), fontsize=7, color="0.35")


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """`name`.png and `name`.pdf in `out_dir`, each written atomically (temp file, then rename)."""
    paths = []
    for fmt, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buffer = io.BytesIO()
        # no dates or versions in the files: re-rendering the same data gives the same bytes
        fig.savefig(buffer, format=fmt, metadata=metadata)
        paths.append(atomic_write_bytes(Path(out_dir) / f"{name}.{fmt}", buffer.getvalue()))
    return paths
