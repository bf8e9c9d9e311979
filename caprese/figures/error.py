"""Figure 2: relative FFN output error vs density, one line per correction rank (0 = the method
alone). The paper's claim: a small rank cuts the error more than raising the density does.

Drawn from a `caprese diagnose` folder (its figure2.csv: oracle top-k + the best rank-r fit) when
one is given, else from the fig2 sweep (each run's per-layer `ffn_error`, averaged over layers).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import CapreseError
from .common import Context, Made, MissingData, errorbars, full_first, sweep_hint
from .results import Results, Run
from .style import (
    BASELINE_LINE,
    CAPRESE_LINE,
    method_name,
    new_figure,
    note,
    rank_colour,
    save_figure,
    stage_marker,
    stage_name,
)
from .tables import summarise, write_data

NAME = "fig2_error_vs_density"


def rows_from_runs(runs: list[Run]) -> pd.DataFrame:
    """Mean relative error per (method, rank, stage, density); rank 0 is the method without a path."""
    alone: dict[tuple, list[float]] = {}  # from runs without a path (stage none)
    alongside: dict[tuple, list[float]] = {}  # the same error, measured again in each Caprese run
    corrected: dict[tuple, list[float]] = {}
    for run in runs:
        c = run.configuration
        if c.is_dense:
            continue
        error = run.mean_ffn_error("method")
        if error is not None:
            (alongside if c.is_caprese else alone).setdefault((c.method, 0, "none", c.density), []).append(error)
        if c.is_caprese and (error := run.mean_ffn_error("caprese")) is not None:
            corrected.setdefault((c.method, c.rank, c.stage, c.density), []).append(error)
    groups = {**{k: v for k, v in alongside.items() if k not in alone}, **alone, **corrected}
    rows = [
        {"method": method, "rank": rank, "stage": stage, "density": density, **summarise(values, "relative_l2")}
        for (method, rank, stage, density), values in groups.items()
    ]
    return pd.DataFrame(rows)


def rows_from_diagnostics(folder: Path) -> pd.DataFrame:
    path = folder / "figure2.csv"
    if not path.is_file():
        raise CapreseError(
            f"diagnostics folder {str(folder)!r} has no figure2.csv (write one with caprese diagnose --out {folder})"
        )
    table = pd.read_csv(path)
    missing = {"density", "rank", "relative_l2"} - set(table.columns)
    if missing:
        raise CapreseError(f"{path} lacks column {sorted(missing)[0]!r} (expected density, rank, relative_l2)")
    rows = [
        {
            "method": "topk",
            "rank": int(rank),
            "stage": "none" if int(rank) == 0 else "closed_form",
            "density": float(density),
            **summarise(list(group["relative_l2"]), "relative_l2"),
        }
        for (density, rank), group in table.groupby(["density", "rank"])
    ]
    return pd.DataFrame(rows)


def _diagnostics_folder(ctx: Context, results: Results) -> Path | None:
    if ctx.diagnostics is not None:
        return ctx.diagnostics
    # `make figures` writes caprese diagnose's output under figures/diagnostics
    for folder in (ctx.out_dir / "diagnostics", results.runs_dir / "diagnostics"):
        if (folder / "figure2.csv").is_file():
            return folder
    return None


def select(ctx: Context) -> tuple[pd.DataFrame, str]:
    results = ctx.results
    if ctx.diagnostics is None:
        found = results.first_sweep(full_first("fig2"), lambda run: run.get("ffn_error"))
        if found is not None:
            frame = rows_from_runs(found[1])
            if not frame.empty:
                return frame, results.source(*found)
    folder = _diagnostics_folder(ctx, results)
    if folder is not None:
        return rows_from_diagnostics(
            folder
        ), f"{folder / 'figure2.csv'} (caprese diagnose: oracle top-k, best rank-r fit)"
    raise MissingData(
        f"fig2: no runs with FFN errors in {results.runs_dir / 'fig2'} and no diagnostics folder; "
        f"{sweep_hint('fig2')} (or caprese diagnose --model toy-math --data toy-math --out figures/diagnostics)"
    )


def fig2_error_vs_density(ctx: Context) -> Made:
    frame, source = select(ctx)
    frame = frame.sort_values(["method", "rank", "stage", "density"]).reset_index(drop=True)
    methods = list(dict.fromkeys(frame["method"]))
    fig, axes = new_figure(len(methods))
    for ax, method in zip(axes, methods):
        part = frame[frame["method"] == method]
        ranks = sorted(set(part["rank"]))
        for (rank, stage), line in part.groupby(["rank", "stage"], sort=True):
            alone = rank == 0
            ax.errorbar(
                line["density"],
                line["relative_l2"],
                yerr=errorbars(line, "relative_l2"),
                color=rank_colour(method, rank, ranks),
                marker=stage_marker(stage),
                linestyle=BASELINE_LINE if alone else CAPRESE_LINE,
                label=f"{method_name(method)} alone" if alone else f"+ rank {rank} ({stage_name(stage)})",
            )
        ax.set_xlabel("density (1 − sparsity)")
        ax.set_ylabel("relative FFN error ‖FF − FF̂‖ / ‖FF‖")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{method_name(method)}: error vs density and rank")
        ax.legend()
    note(fig, f"mean over corrected layers, generated tokens · {source}")
    paths = save_figure(fig, ctx.out_dir, NAME) + [write_data(frame, ctx.out_dir, NAME)]
    return Made(paths, source, frame)
