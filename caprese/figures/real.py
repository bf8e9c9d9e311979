"""The real-model reproduction (ablations/real.yaml): math text vs prose, teacher-forced, and task
accuracy by level, with 95% intervals.

    real_teacher_forced        KL(dense ‖ method) and % perplexity increase over dense per configuration,
                               one bar per text set (math reasoning text, prose), bootstrap 95% intervals
    real_teacher_forced_table  the same numbers, plus each Caprese/LoRA run's change against its method
                               alone on the same texts (paired bootstrap)
    real_task_levels           task accuracy by difficulty level per configuration, Wilson 95% intervals
    real_task_table            the same numbers
    real_task_summary          accuracy over all levels per configuration (Wilson 95%), and each
                               Caprese/LoRA run's share of its method's loss recovered (bootstrap 95%)

Drawn from the `real-full` sweep, else `real`, else the sweep with the most runs that scored text sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..stats.intervals import paired_difference_interval, recovered_interval, wilson_interval
from .common import Context, Made, MissingData, full_first
from .results import Results, Run, labels
from .style import method_colour, new_figure, note, save_figure, shade
from .tables import configuration_columns, write_data, write_table

SWEEP = "real"
FIG_TF, TABLE_TF = "real_teacher_forced", "real_teacher_forced_table"
FIG_TASK, TABLE_TASK, TABLE_SUMMARY = "real_task_levels", "real_task_table", "real_task_summary"
SET_SHADES = (1.0, 0.45, 0.7, 0.25)  # first text set in the method's colour, the next ones lighter


def _teacher_forced(run: Run) -> dict | None:
    scores = run.get("teacher_forced")
    return scores if isinstance(scores, dict) and scores else None


def _find(results: Results, keep, key: str) -> tuple[str, list[Run]]:
    found = results.first_sweep(full_first(SWEEP), keep) or results.largest_sweep(keep)
    if found is None:
        raise MissingData(f"{key}: {results.unfinished(SWEEP)}; run caprese sweep ablations/real.yaml")
    return found


def _ordered(runs: Sequence[Run]) -> list[Run]:
    return sorted(runs, key=lambda run: (run.configuration.sort_key(), str(run.config.get("seed", 0))))


def _per_text(scores: dict) -> dict[str, np.ndarray] | None:
    per = scores.get("per_text")
    if not isinstance(per, dict):
        return None
    return {key: np.asarray(per[key], dtype=float) for key in ("tokens", "nll", "dense_nll", "kl") if key in per}


def _paired(run: Run, partner: Run | None, name: str) -> dict[str, Any]:
    """This run's KL and NLL/token minus its partner's on the same texts, with paired intervals."""
    if partner is None:
        return {}
    mine, theirs = _per_text(_teacher_forced(run)[name]), _per_text((_teacher_forced(partner) or {}).get(name, {}))
    ids_mine = (_teacher_forced(run)[name].get("per_text") or {}).get("id")
    ids_theirs = ((_teacher_forced(partner) or {}).get(name, {}).get("per_text") or {}).get("id")
    if not mine or not theirs or ids_mine != ids_theirs or not np.array_equal(mine["tokens"], theirs["tokens"]):
        return {}
    tokens = mine["tokens"]
    out = {"vs": partner.configuration.describe()}
    for key, column in (("kl", "delta_kl"), ("nll", "delta_nll_per_token")):
        out[column] = float((mine[key].sum() - theirs[key].sum()) / tokens.sum())
        out[f"{column}_lo"], out[f"{column}_hi"] = paired_difference_interval(mine[key], theirs[key], tokens)
    alone = float(theirs["kl"].sum() / tokens.sum())
    out["kl_recovered"] = 1 - float(mine["kl"].sum() / tokens.sum()) / alone if alone > 0 else math.nan
    return out


def teacher_forced_frame(results: Results) -> tuple[str, list[Run], pd.DataFrame]:
    """One row per (run, text set): KL, perplexity and perplexity / dense with 95% intervals."""
    sweep, runs = _find(results, lambda run: _teacher_forced(run) is not None, "real_tf")
    runs = _ordered(runs)
    by_config = {run.configuration: run for run in runs}
    names = labels([run.configuration for run in runs])
    rows = []
    for run in runs:
        config = run.configuration
        partner = by_config.get(config.without_caprese()) if config.is_caprese else None
        for name, scores in _teacher_forced(run).items():
            ci = scores.get("ci95", {})
            row = {
                "label": names[config],
                **configuration_columns(config),
                "seed": run.config.get("seed"),
                "text_set": name,
                "texts": scores.get("texts"),
                "scored_tokens": scores.get("scored_tokens"),
                "kl": scores["kl_dense_to_method"],
                "kl_lo": ci.get("kl_dense_to_method", [None, None])[0],
                "kl_hi": ci.get("kl_dense_to_method", [None, None])[1],
                "perplexity": scores["perplexity"],
                "perplexity_lo": ci.get("perplexity", [None, None])[0],
                "perplexity_hi": ci.get("perplexity", [None, None])[1],
                "dense_perplexity": scores["dense_perplexity"],
            }
            per = _per_text(scores)
            row["perplexity_ratio"] = scores["perplexity"] / scores["dense_perplexity"]
            if per:  # perplexity / dense on the same texts: exp of the paired NLL difference per token
                low, high = paired_difference_interval(per["nll"], per["dense_nll"], per["tokens"])
                row["perplexity_ratio_lo"], row["perplexity_ratio_hi"] = math.exp(low), math.exp(high)
            for suffix in ("", "_lo", "_hi"):
                if f"perplexity_ratio{suffix}" in row:
                    row[f"perplexity_increase_pct{suffix}"] = 100 * (row[f"perplexity_ratio{suffix}"] - 1)
            rows.append({**row, **_paired(run, partner, name)})
    return sweep, runs, pd.DataFrame(rows)


def _bars(ax, frame: pd.DataFrame, column: str, sets: list[str], configs: list[str]) -> None:
    width = 0.8 / max(1, len(sets))
    for j, name in enumerate(sets):
        part = frame[frame["text_set"] == name].set_index("label").reindex(configs)
        x = np.arange(len(configs)) + (j - (len(sets) - 1) / 2) * width
        values = part[column].astype(float).to_numpy()
        low = part.get(f"{column}_lo", pd.Series(index=part.index, dtype=float)).astype(float).to_numpy()
        high = part.get(f"{column}_hi", pd.Series(index=part.index, dtype=float)).astype(float).to_numpy()
        errors = np.clip(np.vstack([np.nan_to_num(values - low), np.nan_to_num(high - values)]), 0, None)
        colours = [shade(method_colour(m), SET_SHADES[j % len(SET_SHADES)]) for m in part["method"].fillna("dense")]
        hatch = "//" if j else None
        ax.bar(
            x,
            values,
            width,
            color=colours,
            edgecolor="0.2",
            linewidth=0.5,
            hatch=hatch,
            label=name,
            yerr=errors,
            error_kw={"elinewidth": 0.8, "ecolor": "0.15"},
        )
    ax.set_xticks(np.arange(len(configs)), configs, rotation=35, ha="right", fontsize=7)


def real_teacher_forced(ctx: Context) -> Made:
    sweep, runs, frame = teacher_forced_frame(ctx.results)
    sets = list(dict.fromkeys(frame["text_set"]))
    configs = list(dict.fromkeys(frame["label"]))
    fig, (kl, ppl) = new_figure(2, panel=(max(4.2, 0.55 * len(configs) + 1.5), 3.6))
    methods = frame[frame["method"] != "dense"]
    if methods.empty:  # only the dense run has finished: its KL is 0 by construction
        kl.text(0.5, 0.5, "no efficient-method run finished yet", ha="center", va="center", transform=kl.transAxes)
    else:
        _bars(kl, methods, "kl", sets, [c for c in configs if c in set(methods["label"])])
    kl.set_ylabel("KL(dense ‖ method), nats / token")
    kl.set_title("teacher-forced KL to the dense model")
    kl.legend(title="text set")
    _bars(ppl, frame, "perplexity_increase_pct", sets, configs)
    ppl.axhline(0.0, color="black", linewidth=0.8)
    ppl.set_ylabel("perplexity increase over dense, %")
    ppl.set_title("perplexity of the continuation (same texts)")
    texts = ", ".join(f"{name}: {int(frame[frame['text_set'] == name]['texts'].iloc[0])} texts" for name in sets)
    source = ctx.results.source(sweep, runs)
    note(
        fig,
        f"{runs[0].configuration.model} · teacher-forced (context dense, continuation as generated) · {texts} · "
        f"95% bootstrap intervals over texts · {source}",
    )
    paths = save_figure(fig, ctx.out_dir, FIG_TF) + [write_data(frame, ctx.out_dir, FIG_TF)]
    return Made(paths, source, frame)


def real_teacher_forced_table(ctx: Context) -> Made:
    sweep, runs, frame = teacher_forced_frame(ctx.results)
    columns = [
        "label",
        "text_set",
        "texts",
        "kl",
        "kl_lo",
        "kl_hi",
        "perplexity",
        "perplexity_lo",
        "perplexity_hi",
        "dense_perplexity",
        "perplexity_ratio",
        "perplexity_ratio_lo",
        "perplexity_ratio_hi",
        "vs",
        "delta_kl",
        "delta_kl_lo",
        "delta_kl_hi",
        "kl_recovered",
        "delta_nll_per_token",
        "delta_nll_per_token_lo",
        "delta_nll_per_token_hi",
    ]
    table = frame[[c for c in columns if c in frame]]
    paths = write_table(
        table,
        ctx.out_dir,
        TABLE_TF,
        "Teacher-forced KL(dense ‖ method) and perplexity, math text vs prose (95% intervals)",
    )
    return Made(paths, ctx.results.source(sweep, runs), table)


def task_frame(results: Results) -> tuple[str, list[Run], pd.DataFrame]:
    """One row per (run, level): accuracy with its Wilson 95% interval."""

    def has_levels(run: Run) -> bool:
        levels = run.get("math.per_level")
        return isinstance(levels, dict) and bool(levels)

    sweep, runs = _find(results, has_levels, "real_task")
    runs = _ordered(runs)
    names = labels([run.configuration for run in runs])
    rows = []
    for run in runs:
        for level, scores in sorted(run.get("math.per_level").items(), key=lambda item: int(item[0])):
            count, correct = int(scores["count"]), int(scores["correct"])
            low, high = wilson_interval(correct, count)
            rows.append(
                {
                    "label": names[run.configuration],
                    **configuration_columns(run.configuration),
                    "level": int(level),
                    "count": count,
                    "correct": correct,
                    "accuracy": correct / count,
                    "accuracy_lo": low,
                    "accuracy_hi": high,
                    "mean_response_tokens": scores.get("mean_response_tokens"),
                }
            )
    return sweep, runs, pd.DataFrame(rows)


def real_task_levels(ctx: Context) -> Made:
    sweep, runs, frame = task_frame(ctx.results)
    fig, (ax,) = new_figure(1, panel=(5.0, 3.4))
    configs = list(dict.fromkeys(frame["label"]))
    for i, label in enumerate(configs):
        part = frame[frame["label"] == label]
        offset = (i - (len(configs) - 1) / 2) * 0.08
        errors = np.clip([part["accuracy"] - part["accuracy_lo"], part["accuracy_hi"] - part["accuracy"]], 0, None)
        ax.errorbar(
            part["level"] + offset,
            part["accuracy"],
            yerr=errors,
            marker="o",
            capsize=2,
            color=method_colour(part["method"].iloc[0]),
            label=label,
            linestyle="-" if part["stage"].iloc[0] != "none" or part["method"].iloc[0] == "dense" else "--",
        )
    ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xticks(sorted(frame["level"].unique()))
    ax.set_xlabel("difficulty level")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{runs[0].configuration.task}: accuracy by level")
    ax.legend()
    source = ctx.results.source(sweep, runs)
    note(
        fig,
        f"{runs[0].configuration.model} · {int(frame['count'].iloc[0])} problems per level · "
        f"Wilson 95% intervals · {source}",
    )
    paths = save_figure(fig, ctx.out_dir, FIG_TASK) + [write_data(frame, ctx.out_dir, FIG_TASK)]
    return Made(paths, source, frame)


def real_task_table(ctx: Context) -> Made:
    sweep, runs, frame = task_frame(ctx.results)
    table = frame[
        ["label", "task", "level", "count", "correct", "accuracy", "accuracy_lo", "accuracy_hi", "mean_response_tokens"]
    ]
    paths = write_table(table, ctx.out_dir, TABLE_TASK, "Task accuracy by level (Wilson 95% intervals)")
    return Made(paths, ctx.results.source(sweep, runs), table)


def _pooled(run: Run) -> tuple[int, int]:
    """(correct, count) over every level a run scored."""
    levels = run.get("math.per_level").values()
    return sum(int(scores["correct"]) for scores in levels), sum(int(scores["count"]) for scores in levels)


def task_summary_frame(results: Results) -> tuple[str, list[Run], pd.DataFrame]:
    """One row per run: accuracy over all levels; Caprese/LoRA runs also get the share of their
    method's loss (dense - method alone) they recover, with a parametric-bootstrap interval."""
    sweep, runs, _ = task_frame(results)
    by_config = {run.configuration: run for run in runs}
    dense = next((run for run in runs if run.configuration.method == "dense"), None)
    names = labels([run.configuration for run in runs])
    rows = []
    for run in runs:
        correct, count = _pooled(run)
        low, high = wilson_interval(correct, count)
        row = {
            "label": names[run.configuration],
            **configuration_columns(run.configuration),
            "count": count,
            "correct": correct,
            "accuracy": correct / count,
            "accuracy_lo": low,
            "accuracy_hi": high,
        }
        alone = by_config.get(run.configuration.without_caprese()) if run.configuration.is_caprese else None
        if alone is not None and dense is not None:
            mine, theirs, full = _pooled(run), _pooled(alone), _pooled(dense)
            lost = full[0] / full[1] - theirs[0] / theirs[1]
            row["vs"] = names[alone.configuration]
            row["recovered"] = (mine[0] / mine[1] - theirs[0] / theirs[1]) / lost if lost > 0 else math.nan
            row["recovered_lo"], row["recovered_hi"] = recovered_interval(mine, theirs, full)
        rows.append(row)
    return sweep, runs, pd.DataFrame(rows)


def real_task_summary(ctx: Context) -> Made:
    sweep, runs, frame = task_summary_frame(ctx.results)
    columns = [
        "label",
        "task",
        "count",
        "correct",
        "accuracy",
        "accuracy_lo",
        "accuracy_hi",
        "vs",
        "recovered",
        "recovered_lo",
        "recovered_hi",
    ]
    table = frame[[c for c in columns if c in frame]]
    paths = write_table(
        table,
        ctx.out_dir,
        TABLE_SUMMARY,
        "Task accuracy over all levels (Wilson 95%) and loss recovered against the method alone "
        "(parametric bootstrap 95%)",
    )
    return Made(paths, ctx.results.source(sweep, runs), table)
