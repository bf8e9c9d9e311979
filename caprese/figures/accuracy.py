"""Accuracy curves: figure 5 (accuracy vs density, the method alone vs Caprese at each rank), and
the rank and sample-count ablations (accuracy and FFN error vs rank / distillation samples).

A "series" is one line: the runs' configuration with the swept field left out, seeds averaged
(error bars span min to max over seeds). The dense model and the method alone are drawn as
horizontal references, taken from any sweep whose runs were evaluated alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from .common import (
    Context,
    Made,
    MissingData,
    errorbars,
    full_first,
    interval_caption,
    log2_axis,
    reference_line,
    sweep_hint,
)
from .results import Configuration, Results, Run, common_description, labels
from .style import (
    BASELINE_LINE,
    CAPRESE_LINE,
    method_colour,
    method_name,
    new_figure,
    note,
    rank_colour,
    save_figure,
    stage_marker,
)
from .tables import accuracy_summary, configuration_columns, group_runs, summarise, write_data

FIG5 = "fig5_accuracy_vs_density"
RANK = "ablation_rank"
SAMPLES = "ablation_samples"


def _series(runs: Sequence[Run], x: str) -> list[tuple[Configuration, list[Run]]]:
    """Runs grouped by configuration without field `x` (and evaluation); each with a representative config."""
    groups = group_runs(runs, lambda run: (replace(run.configuration, **{x: None}), run.evaluation))
    return sorted(
        ((members[0].configuration, members) for members in groups.values()), key=lambda item: item[0].sort_key()
    )


def _x_value(config: Configuration, x: str) -> float:
    return config.density if x == "sparsity" else float(getattr(config, x))


def _curve_rows(
    runs: Sequence[Run], x: str, series_labels: dict[Configuration, str], series: list[tuple[Configuration, list[Run]]]
) -> list[dict]:
    rows = []
    for config, members in series:
        for value, at_x in sorted(group_runs(members, lambda run: _x_value(run.configuration, x)).items()):
            rows.append(
                {
                    "series": series_labels[config],
                    **configuration_columns(at_x[0].configuration),
                    "x": value,
                    **accuracy_summary(at_x),
                    **summarise(
                        [run.mean_ffn_error("caprese" if config.is_caprese else "method") for run in at_x],
                        "ffn_error",
                        count=None,
                    ),
                }
            )
    return rows


def _reference_rows(results: Results, series: list[tuple[Configuration, list[Run]]]) -> list[dict]:
    """The dense model and each series' method alone (stage none), evaluated like the series' runs."""
    rows, seen = [], set()
    for config, members in series:
        like = members[0]
        for role, reference in (
            ("dense", results.dense_reference(like)),
            ("method alone", results.reference(like, config.without_caprese())),
        ):
            if config.is_dense or not reference or (role, reference[0].configuration, like.evaluation) in seen:
                continue
            if role == "method alone" and not config.is_caprese:
                continue  # the series is itself the method alone
            seen.add((role, reference[0].configuration, like.evaluation))
            rows.append(
                {
                    "series": role,
                    **configuration_columns(reference[0].configuration),
                    "x": None,
                    **accuracy_summary(reference),
                    **summarise([run.mean_ffn_error("method") for run in reference], "ffn_error", count=None),
                }
            )
    return rows


def _draw_series(ax, frame: pd.DataFrame, column: str, ranks: Sequence[int]) -> None:
    for label, line in frame[frame["x"].notna()].groupby("series", sort=False):
        if line[column].isna().all():
            continue
        first = line.iloc[0]
        alone = first["stage"] == "none"
        if first["method"] == "dense" or line["rank"].nunique() > 1:
            colour = method_colour(first["method"])  # a line across ranks: its stage marker tells it apart
        else:
            colour = rank_colour(first["method"], first["rank"], ranks)
        ax.errorbar(
            line["x"],
            line[column],
            yerr=errorbars(line, column),
            color=colour,
            marker=stage_marker(first["stage"]),
            linestyle=BASELINE_LINE if alone else CAPRESE_LINE,
            label=label,
        )


def _draw_references(ax, frame: pd.DataFrame, column: str, methods: Sequence[str]) -> None:
    for _, row in frame[frame["x"].isna()].iterrows():
        if row["method"] != "dense" and row["method"] not in methods:
            continue
        if row["method"] == "dense":
            reference_line(ax, row[column], "dense")
        else:
            reference_line(
                ax,
                row[column],
                f"{method_name(row['method'])} alone",
                colour=method_colour(row["method"]),
                line=BASELINE_LINE,
            )


def _grid(series: list[tuple[Configuration, list[Run]]]) -> str:
    """What the panels cover, for the caption: 'GRIFFIN: 4 densities, ranks 8, 32 · CATS: ...'."""
    parts = []
    for method in dict.fromkeys(config.method for config, _ in series):
        runs = [run for config, members in series if config.method == method for run in members]
        densities = {run.configuration.density for run in runs}
        ranks = sorted({run.configuration.rank for run in runs if run.configuration.is_caprese})
        parts.append(f"{method_name(method)}: {len(densities)} densities, ranks {', '.join(map(str, ranks)) or 'none'}")
    return " · ".join(parts)


def fig5_accuracy_vs_density(ctx: Context) -> Made:
    """From the density sweep (GRIFFIN and CATS, >= 4 densities, 2 ranks), else the sparsity sweep."""
    results = ctx.results
    found = results.first_sweep(full_first("density") + full_first("sparsity"), lambda run: run.accuracy is not None)
    if found is None:
        raise MissingData(f"fig5: {results.unfinished('density')}; {sweep_hint('density')}")
    sweep, runs = found
    methods_runs = [run for run in runs if not run.configuration.is_dense]
    series = _series(methods_runs, "sparsity")
    series_labels = {}  # one panel per method: a label names only what differs within its panel
    for method in dict.fromkeys(config.method for config, _ in series):
        series_labels.update(labels([config for config, _ in series if config.method == method], omit={"sparsity"}))
    frame = pd.DataFrame(
        _curve_rows(methods_runs, "sparsity", series_labels, series)
        + [row for row in _reference_rows(results, series) if row["method"] == "dense"]
    )
    frame = frame.rename(columns={"x": "density"})
    methods = list(dict.fromkeys(config.method for config, _ in series))
    fig, axes = new_figure(len(methods))
    for ax, method in zip(axes, methods):
        part = frame[(frame["method"] == method) | (frame["method"] == "dense")].rename(columns={"density": "x"})
        ranks = sorted({int(r) for r in part["rank"]})
        _draw_series(ax, part, "accuracy", ranks)
        _draw_references(ax, part, "accuracy", [method])
        ax.set_xlabel("density (1 − sparsity)")
        ax.set_ylabel("math accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{method_name(method)} vs {method_name(method)} + Caprese")
        ax.legend()
    source = results.source(sweep, runs)
    note(
        fig,
        f"{common_description([run.configuration for run in methods_runs])} · {_grid(series)} · "
        f"{interval_caption(frame)} · {source}",
    )
    paths = save_figure(fig, ctx.out_dir, FIG5) + [write_data(frame, ctx.out_dir, FIG5)]
    return Made(paths, source, frame)


def _ablation(ctx: Context, *, sweep_name: str, x: str, name: str, xlabel: str, key: str) -> Made:
    """Accuracy and FFN error vs `x` (rank or samples): one line per series, references as lines."""
    results = ctx.results
    found = results.first_sweep(
        full_first(sweep_name), lambda run: run.accuracy is not None and not run.configuration.is_dense
    )
    if found is None:
        raise MissingData(f"{key}: {results.unfinished(sweep_name)}; {sweep_hint(sweep_name)}")
    sweep, runs = found
    caprese = [run for run in runs if run.configuration.is_caprese]
    if not caprese:
        raise MissingData(f"{key}: {results.runs_dir / sweep} has no run with a Caprese path; {sweep_hint(sweep_name)}")
    series = _series(caprese, x)
    series_labels = labels([config for config, _ in series], omit={x})
    # the method alone in this very sweep (rank sweeps list it as rank 0) counts as a reference
    frame = pd.DataFrame(_curve_rows(caprese, x, series_labels, series) + _reference_rows(results, series))
    methods = list(dict.fromkeys(config.method for config, _ in series))
    ranks = sorted({int(r) for r in frame["rank"]})
    fig, (acc, err) = new_figure(2)
    for ax, column, ylabel in (
        (acc, "accuracy", "math accuracy"),
        (err, "ffn_error", "relative FFN error (mean over layers)"),
    ):
        _draw_series(ax, frame, column, ranks)
        _draw_references(ax, frame, column, methods)
        if column == "ffn_error":
            # every Caprese run also measured its method alone: the error without the path
            for method in methods:
                alone = [run.mean_ffn_error("method") for run in caprese if run.configuration.method == method]
                if frame[(frame["x"].isna()) & (frame["method"] == method)].empty:
                    reference_line(
                        ax,
                        summarise(alone)["mean"],
                        f"{method_name(method)} alone",
                        colour=method_colour(method),
                        line=BASELINE_LINE,
                    )
        log2_axis(ax, frame["x"].dropna())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend()
    acc.set_ylim(-0.02, 1.02)
    acc.set_title(f"accuracy vs {xlabel}")
    err.set_title(f"FFN error vs {xlabel}")
    source = results.source(sweep, runs)
    note(fig, f"{common_description([run.configuration for run in caprese])} · {interval_caption(frame)} · {source}")
    frame = frame.drop(columns=["x"])  # the swept value is the configuration column `x` itself
    paths = save_figure(fig, ctx.out_dir, name) + [write_data(frame, ctx.out_dir, name)]
    return Made(paths, source, frame)


def ablation_rank(ctx: Context) -> Made:
    return _ablation(ctx, sweep_name="rank", x="rank", name=RANK, xlabel="rank r", key="rank")


def ablation_samples(ctx: Context) -> Made:
    return _ablation(ctx, sweep_name="samples", x="samples", name=SAMPLES, xlabel="distillation samples", key="samples")
