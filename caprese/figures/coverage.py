"""Figure 3 (pass@k coverage vs relative compute) and figures 4/7 (mean response length by
difficulty level), for the dense model, the method alone and the method with Caprese.

Figure 3's compute units are k × the active-parameter fraction measured on the sampled responses
(sparsity on generated tokens without post-EOS pads, plus GRIFFIN's reselections); the requested
fraction is kept beside it in the data (`relative_compute_requested`).

Both prefer the coverage sweep (ablations/coverage.yaml: dense / GRIFFIN / GRIFFIN + Caprese);
figures 4/7 fall back to the rank or sparsity sweeps, adding the dense model from any sweep
evaluated alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.ticker import FuncFormatter

from ..evaluate.passk import pass_at_k
from ..stats.intervals import bootstrap_interval
from .common import Context, Made, MissingData, errorbars, full_first, interval_caption, sweep_hint
from .results import Configuration, Run, common_description, labels
from .style import (
    BASELINE_LINE,
    CAPRESE_LINE,
    DENSE_LINE,
    LORA_LINE,
    LORA_MARKER,
    method_colour,
    method_name,
    new_figure,
    note,
    rank_colour,
    save_figure,
    stage_marker,
)
from .tables import configuration_columns, group_runs, summarise, write_data

FIG3 = "fig3_coverage"
FIG47 = "fig4_7_response_length"


def _line_style(config: Configuration, ranks: Sequence[int]) -> dict:
    if config.is_dense:
        return {"color": method_colour("dense"), "linestyle": DENSE_LINE, "marker": "o"}
    if config.is_caprese and config.kind == "lora":
        return {"color": rank_colour(config.method, config.rank, ranks), "marker": LORA_MARKER, "linestyle": LORA_LINE}
    return {
        "color": rank_colour(config.method, config.rank, ranks),
        "marker": stage_marker(config.stage),
        "linestyle": CAPRESE_LINE if config.is_caprese else BASELINE_LINE,
    }


def _by_configuration(runs: Sequence[Run]) -> list[tuple[Configuration, list[Run]]]:
    groups = group_runs(runs, lambda run: run.configuration)
    return sorted(groups.items(), key=lambda item: item[0].sort_key())


def _has_coverage(run: Run) -> bool:
    return isinstance(run.get("coverage.pass_at_k"), dict) and bool(run.get("coverage.pass_at_k"))


def _measured(run: Run) -> bool:
    """Whether the run's compute units come from measured sparsity (runs before that recorded requested)."""
    return run.number("coverage.active_fraction_measured") is not None


def _mean(runs: Sequence[Run], dotted: str) -> float | None:
    return summarise([run.number(dotted) for run in runs], count=None)["mean"]


def _pass_at_k_interval(runs, k: int) -> dict:
    """95% bootstrap interval of pass@k over prompts (pooled over seeds), from each prompt's number of
    correct samples; empty when the runs did not record them."""
    per_prompt = []
    for run in runs:
        n, correct = run.number("coverage.n"), run.get("coverage.correct_per_prompt")
        if not n or not isinstance(correct, list):
            return {"pass_at_k_ci_low": None, "pass_at_k_ci_high": None}
        per_prompt += [pass_at_k(int(n), int(c), k) for c in correct]
    low, high = bootstrap_interval(per_prompt) if per_prompt else (None, None)
    return {"pass_at_k_ci_low": low, "pass_at_k_ci_high": high, "prompts": len(per_prompt)}


def fig3_coverage(ctx: Context) -> Made:
    results = ctx.results
    found = results.first_sweep(full_first("coverage"), _has_coverage) or results.largest_sweep(_has_coverage)
    if found is None:
        raise MissingData(f"fig3: no runs with coverage; {sweep_hint('coverage')}")
    sweep, runs = found
    groups = _by_configuration(runs)
    names = labels([config for config, _ in groups])
    rows = []
    for config, members in groups:
        ks = sorted({int(k) for run in members for k in run.get("coverage.pass_at_k")})
        for k in ks:
            rows.append(
                {
                    "series": names[config],
                    **configuration_columns(config),
                    "k": k,
                    "relative_compute": _mean(members, f"coverage.relative_compute.{k}"),
                    "relative_compute_requested": _mean(members, f"coverage.relative_compute_requested.{k}"),
                    "compute": "measured" if all(_measured(run) for run in members) else "requested",
                    **summarise([run.number(f"coverage.pass_at_k.{k}") for run in members], "pass_at_k"),
                    **_pass_at_k_interval(members, k),
                }
            )
    frame = pd.DataFrame(rows)
    ranks = [config.rank for config, _ in groups]
    fig, (ax,) = new_figure(1, panel=(5.4, 3.8))
    for config, _ in groups:
        line = frame[frame["series"] == names[config]]
        ax.errorbar(
            line["relative_compute"],
            line["pass_at_k"],
            yerr=errorbars(line, "pass_at_k"),
            label=names[config],
            **_line_style(config, ranks),
        )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    measured = bool((frame["compute"] == "measured").all())
    ax.set_xlabel(f"relative compute units (k × {'measured' if measured else 'requested'} active-parameter fraction)")
    ax.set_ylabel("coverage pass@k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("coverage vs compute")
    ax.legend()
    first = runs[0]
    settings = f"{first.get('coverage.prompts')} prompts, temperature {first.get('coverage.temperature')}"
    source = results.source(sweep, runs)
    caption = interval_caption(frame, "pass_at_k", what="prompts", kind="bootstrap")
    compute = (
        "compute from the sparsity and reselections measured on the sampled tokens"
        if measured
        else "compute at the requested sparsity (some runs predate measured compute: rerun them)"
    )
    note(fig, f"{common_description([c for c, _ in groups])} · {settings} · {compute} · {caption} · {source}")
    paths = save_figure(fig, ctx.out_dir, FIG3) + [write_data(frame, ctx.out_dir, FIG3)]
    return Made(paths, source, frame)


def _has_levels(run: Run) -> bool:
    levels = run.get("math.per_level")
    return isinstance(levels, dict) and bool(levels)


def _level_order(level: str) -> tuple:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)


def fig4_7_response_length(ctx: Context) -> Made:
    results = ctx.results
    names_tried = full_first("coverage") + full_first("rank") + full_first("sparsity")
    found = results.first_sweep(names_tried, _has_levels) or results.largest_sweep(_has_levels)
    if found is None:
        raise MissingData(f"fig4_7: no runs with per-level results; {sweep_hint('coverage')}")
    sweep, runs = found
    source = results.source(sweep, runs)
    if not any(run.configuration.is_dense for run in runs):
        dense = [run for run in results.dense_reference(runs[0]) if _has_levels(run)]
        if dense:
            runs = runs + dense
            source += f" + dense from {', '.join(sorted({run.sweep for run in dense}))}"
    groups = _by_configuration(runs)
    names = labels([config for config, _ in groups])
    rows = []
    for config, members in groups:
        levels = sorted({str(level) for run in members for level in run.get("math.per_level")}, key=_level_order)
        for level in levels:
            rows.append(
                {
                    "series": names[config],
                    **configuration_columns(config),
                    "level": level,
                    **summarise(
                        [run.number(f"math.per_level.{level}.mean_response_tokens") for run in members],
                        "mean_response_tokens",
                    ),
                    "accuracy": summarise(
                        [run.number(f"math.per_level.{level}.accuracy") for run in members], count=None
                    )["mean"],
                    "questions": sum(int(run.number(f"math.per_level.{level}.count") or 0) for run in members),
                }
            )
    frame = pd.DataFrame(rows)
    levels = sorted(set(frame["level"]), key=_level_order)
    position = {level: i for i, level in enumerate(levels)}
    methods = list(dict.fromkeys(c.method for c, _ in groups if not c.is_dense)) or ["dense"]
    fig, axes = new_figure(len(methods))
    for ax, method in zip(axes, methods):
        shown = [(c, m) for c, m in groups if c.is_dense or c.method == method]
        ranks = [c.rank for c, _ in shown]
        for config, _ in shown:
            line = frame[frame["series"] == names[config]]
            ax.errorbar(
                [position[level] for level in line["level"]],
                line["mean_response_tokens"],
                yerr=errorbars(line, "mean_response_tokens"),
                label=names[config],
                **_line_style(config, ranks),
            )
        ax.set_xticks(range(len(levels)), levels)
        ax.set_xlabel("difficulty level")
        ax.set_ylabel("mean response length (tokens)")
        ax.set_ylim(bottom=0)
        ax.set_title(
            f"response length: dense vs {method_name(method)} vs Caprese" if method != "dense" else "response length"
        )
        ax.legend()
    note(fig, f"{common_description([c for c, _ in groups])} · greedy decoding · {source}")
    paths = save_figure(fig, ctx.out_dir, FIG47) + [write_data(frame, ctx.out_dir, FIG47)]
    return Made(paths, source, frame)
