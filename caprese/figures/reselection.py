"""Table 3 of the paper: GRIFFIN reselecting its kept neurons every ρ generated tokens (ρ = ∞: never),
alone and with Caprese, as a table and a figure of accuracy against the compute it costs.

Compute units are the active-parameter fraction per generated token *measured* on the greedy
responses (GRIFFIN's kept neurons plus each reselection's full FF1, post-EOS pads not counted;
`params_measured` in metrics.json), next to the requested one. Accuracies carry 95% Wilson
intervals on the pooled problems (and the spread over seeds where that is wider).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .common import Context, Made, MissingData, errorbars, full_first, interval_caption, reference_line, sweep_hint
from .results import Configuration, Run, common_description, labels
from .style import BASELINE_LINE, CAPRESE_LINE, method_colour, new_figure, note, rank_colour, save_figure, stage_marker
from .tables import accuracy_summary, configuration_columns, group_runs, summarise, write_data, write_table

TABLE3 = "table3_reselection"
FIG_TABLE3 = "fig_table3_reselection"


def _is_reselection_run(run: Run) -> bool:
    return run.configuration.method == "griffin" and run.accuracy is not None and "reselect_every" in run.config


def _rho(value: int) -> str:
    return "∞" if not value else str(value)


def _mean(runs: Sequence[Run], dotted: str) -> float | None:
    return summarise([run.number(dotted) for run in runs], count=None)["mean"]


def reselection_frame(ctx: Context) -> tuple[pd.DataFrame, str, list[Run]]:
    """One row per (ρ, with or without Caprese) of the reselect sweep, seeds pooled."""
    found = ctx.results.first_sweep(full_first("reselect"), _is_reselection_run)
    if found is None:
        raise MissingData(f"table3: no GRIFFIN runs with reselect_every; {sweep_hint('reselect')}")
    sweep, runs = found
    groups = group_runs(runs, lambda run: (run.configuration, run.evaluation))
    ordered = sorted(groups.items(), key=lambda item: (item[0][0].is_caprese, item[0][0].sort_key()))
    names = labels([config for (config, _), _ in ordered])
    rows = []
    for (config, _), members in ordered:
        rows.append(
            {
                "series": names[config],
                **configuration_columns(config),
                "rho": _rho(config.reselect_every),
                **accuracy_summary(members),
                "compute_measured": _mean(members, "params_measured.model_active_fraction_with_extra"),
                "compute_requested": _mean(members, "params.model_active_fraction_with_extra"),
                "measured_sparsity": _mean(members, "measured_sparsity.overall"),
                "reselection_params_per_token": _mean(members, "params_measured.reselection_params_per_token"),
            }
        )
    return pd.DataFrame(rows), ctx.results.source(sweep, runs), runs


def table3_reselection(ctx: Context) -> Made:
    frame, source, _ = reselection_frame(ctx)
    columns = [
        "rho",
        "stage",
        "rank",
        "accuracy",
        "accuracy_ci_low",
        "accuracy_ci_high",
        "accuracy_n",
        "runs",
        "compute_measured",
        "compute_requested",
        "measured_sparsity",
        "reselection_params_per_token",
        "method",
        "sparsity",
        "layers",
        "samples",
        "model",
        "task",
    ]
    title = (
        "GRIFFIN reselection every ρ tokens (table 3 analog): accuracy with 95% Wilson intervals; compute = "
        "measured active-parameter fraction per generated token"
    )
    table = frame[columns]
    return Made(write_table(table, ctx.out_dir, TABLE3, title), source, table)


def _line(config: Configuration) -> dict:
    if config.is_caprese:
        return {
            "color": rank_colour(config.method, config.rank, [config.rank]),
            "linestyle": CAPRESE_LINE,
            "marker": stage_marker(config.stage),
        }
    return {"color": method_colour(config.method), "linestyle": BASELINE_LINE, "marker": "o"}


def fig_table3_reselection(ctx: Context) -> Made:
    frame, source, runs = reselection_frame(ctx)
    fig, (ax,) = new_figure(1, panel=(5.4, 3.8))
    for caprese, part in frame.groupby(frame["stage"] != "none", sort=True):
        part = part.sort_values("compute_measured")
        config = Configuration(
            part["model"].iloc[0],
            part["task"].iloc[0],
            "griffin",
            None,
            None,
            str(part["stage"].iloc[0]),
            int(part["rank"].iloc[0]),
            None,
        )
        label = f"GRIFFIN + Caprese r{config.rank}" if caprese else "GRIFFIN alone"
        ax.errorbar(
            part["compute_measured"],
            part["accuracy"],
            yerr=errorbars(part, "accuracy"),
            label=label,
            capsize=2,
            **_line(config),
        )
        for _, row in part.iterrows():
            ax.annotate(
                f"ρ={row['rho']}",
                (row["compute_measured"], row["accuracy"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    dense = ctx.results.dense_reference(runs[0])
    if dense:
        reference_line(ax, accuracy_summary(dense)["accuracy"], "dense")
    ax.set_xlabel("measured active-parameter fraction per generated token")
    ax.set_ylabel("math accuracy")
    ax.set_title("GRIFFIN reselection every ρ tokens")
    ax.legend()
    configs = [run.configuration for run in runs]
    note(
        fig,
        f"{common_description(configs)} · {interval_caption(frame)} · compute measured on the greedy "
        f"responses (reselection = full FF1 per reselection) · {source}",
    )
    paths = save_figure(fig, ctx.out_dir, FIG_TABLE3) + [write_data(frame, ctx.out_dir, FIG_TABLE3)]
    return Made(paths, source, frame)
