"""Figure 8: normalised singular values of each learned L·R, one line per layer, one panel per
method (the paper: CATS's corrections are very low rank, GRIFFIN's higher).

Per method one run is shown: the largest rank (the longest spectrum), then sparsity closest to
50%, then the most distillation samples, then the later stage (E2E over layer-wise).
"""

from __future__ import annotations

import matplotlib
import pandas as pd

from .common import Context, Made, MissingData, sweep_hint
from .results import STAGE_ORDER, Run
from .style import method_name, new_figure, note, save_figure, stage_name
from .tables import write_data

FIG8 = "fig8_singular_values"


def _has_spectra(run: Run) -> bool:
    spectra = run.get("caprese.singular_values")
    return isinstance(spectra, dict) and bool(spectra)


def _preference(run: Run) -> tuple:
    c = run.configuration
    stage = STAGE_ORDER.index(c.stage) if c.stage in STAGE_ORDER else 0
    return (c.rank, -abs((c.sparsity or 0.0) - 0.5), c.samples or 0, stage, run.name)


def chosen_runs(runs: list[Run]) -> dict[str, Run]:
    by_method: dict[str, list[Run]] = {}
    for run in runs:
        by_method.setdefault(run.configuration.method, []).append(run)
    return {method: max(members, key=_preference) for method, members in sorted(by_method.items())}


def fig8_singular_values(ctx: Context) -> Made:
    runs = ctx.results.where(_has_spectra)
    if not runs:
        raise MissingData(f"fig8: no runs with a trained Caprese adapter; {sweep_hint('sparsity')}")
    chosen = chosen_runs(runs)
    rows = []
    for method, run in chosen.items():
        c = run.configuration
        for layer, spectrum in sorted(run.get("caprese.singular_values").items(), key=lambda item: int(item[0])):
            values = spectrum.get("singular_values", [])
            normalised = spectrum.get("normalised") or [v / values[0] if values and values[0] else v for v in values]
            for index, (value, norm) in enumerate(zip(values, normalised), start=1):
                rows.append({"method": method, "run": run.name, "rank": c.rank, "stage": c.stage, "sparsity": c.sparsity,
                             "layer": int(layer), "index": index, "singular_value": value, "normalised": norm})
    frame = pd.DataFrame(rows)
    fig, axes = new_figure(len(chosen))
    colormap = matplotlib.colormaps["viridis"]
    for ax, (method, run) in zip(axes, chosen.items()):
        part = frame[frame["method"] == method]
        layers = sorted(set(part["layer"]))
        for i, layer in enumerate(layers):
            line = part[part["layer"] == layer]
            ax.plot(line["index"], line["normalised"].clip(lower=1e-6), color=colormap(i / max(1, len(layers) - 1)),
                    marker=".", markersize=3, linewidth=1.1, label=f"layer {layer}")
        c = run.configuration
        ax.set_yscale("log")
        ax.set_xlabel("singular value index")
        ax.set_ylabel("σ_i / σ_1 of L·R")
        ax.set_title(f"{method_name(method)} + Caprese r{c.rank} {stage_name(c.stage)}, sparsity {c.sparsity:.0%}")
        ax.legend(ncols=2 if len(layers) > 8 else 1)
    note(fig, " · ".join(f"{method_name(m)}: {run.name}" for m, run in chosen.items()))
    source = ", ".join(f"{ctx.results.runs_dir / run.name}" for run in chosen.values())
    paths = save_figure(fig, ctx.out_dir, FIG8) + [write_data(frame, ctx.out_dir, FIG8)]
    return Made(paths, source, frame)
