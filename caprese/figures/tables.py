"""Tables (CSV + markdown) and the data behind each figure (CSV), written atomically.

table1_math_accuracy   math accuracy per configuration (paper table 1)
table4_language        short-answer accuracy, perplexity and KL to dense per configuration (table 4)
table5_latency         time per token per configuration, from figures/latency.json (table 5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CapreseError
from ..io import atomic_write_text, read_json
from ..stats.intervals import ratio_bootstrap_interval, recovered_interval, wilson_interval
from .common import MissingData
from .results import Configuration, Results, Run


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub markdown; floats to 4 significant digits (the CSV keeps every digit)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(frame: pd.DataFrame, out_dir: str | Path, name: str, title: str = "") -> list[Path]:
    out_dir = Path(out_dir)
    heading = f"# {title}\n\n" if title else ""
    return [
        atomic_write_text(out_dir / f"{name}.csv", frame.to_csv(index=False)),
        atomic_write_text(out_dir / f"{name}.md", heading + markdown_table(frame)),
    ]


def write_data(frame: pd.DataFrame, out_dir: str | Path, name: str) -> Path:
    """The numbers a figure plots, next to it: figures/data/<name>.csv."""
    return atomic_write_text(Path(out_dir) / "data" / f"{name}.csv", frame.to_csv(index=False))


def summarise(
    values: Sequence[float | None], name: str = "mean", *, count: str | None = "runs"
) -> dict[str, float | int | None]:
    """{name: mean, name_min, name_max, runs} over the values that exist (the seeds of one configuration)."""
    present = [float(v) for v in values if v is not None]
    out: dict[str, float | int | None] = {name: None, f"{name}_min": None, f"{name}_max": None}
    if present:
        out = {name: sum(present) / len(present), f"{name}_min": min(present), f"{name}_max": max(present)}
    if count:
        out[count] = len(present)
    return out


def counts(runs: Sequence[Run], prefix: str = "math.") -> tuple[int, int] | None:
    """(correct, problems) pooled over runs (the seeds of one configuration); None when a run lacks them."""
    correct = [run.number(f"{prefix}correct") for run in runs]
    problems = [run.number(f"{prefix}count") for run in runs]
    if not runs or None in correct or None in problems:
        return None
    return int(sum(correct)), int(sum(problems))


def accuracy_summary(runs: Sequence[Run], name: str = "accuracy", prefix: str = "math.") -> dict[str, Any]:
    """`summarise` of the runs' accuracies (mean, min/max over seeds, runs) plus the 95% Wilson
    interval on the pooled problems ({name}_ci_low/_ci_high) and their number ({name}_n)."""
    out = summarise([run.number(f"{prefix}accuracy") for run in runs], name)
    pooled = counts(runs, prefix)
    low, high = wilson_interval(*pooled) if pooled else (None, None)
    out.update({f"{name}_ci_low": low, f"{name}_ci_high": high, f"{name}_n": pooled[1] if pooled else None})
    return out


def group_runs(runs: Sequence[Run], key: Callable[[Run], Any]) -> dict[Any, list[Run]]:
    groups: dict[Any, list[Run]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def configuration_columns(config: Configuration) -> dict[str, Any]:
    return {
        "model": config.model,
        "task": config.task,
        "method": config.method,
        "sparsity": config.sparsity,
        "layers": config.layers,
        "stage": config.stage,
        "kind": config.kind if config.is_caprese else "",
        "rank": config.rank,
        "samples": config.samples,
        "reselect_every": config.reselect_every,
        "lora_scope": config.lora_scope,
    }


def _by_configuration(runs: Sequence[Run]) -> list[tuple[Configuration, tuple, list[Run]]]:
    groups = group_runs(runs, lambda run: (run.configuration, run.evaluation))
    ordered = sorted(groups.items(), key=lambda item: (item[0][0].sort_key(), item[0][1]))
    return [(config, evaluation, members) for (config, evaluation), members in ordered]


def _mean(runs: Sequence[Run], dotted: str) -> float | None:
    return summarise([run.number(dotted) for run in runs], count=None)["mean"]


def recovered_fraction(accuracy: float | None, method_alone: float | None, dense: float | None) -> float | None:
    """Share of the method's accuracy loss that a correction wins back: (acc - method) / (dense - method).
    None when a reference is missing or the method lost nothing."""
    if None in (accuracy, method_alone, dense) or dense - method_alone <= 0:
        return None
    return (accuracy - method_alone) / (dense - method_alone)


def table1_math_accuracy(results: Results) -> pd.DataFrame:
    """One row per configuration (seeds averaged) over every finished run of every sweep, with the
    share of the method's loss each correction recovers (against dense and the method alone,
    evaluated the same way)."""
    runs = results.where(lambda run: run.accuracy is not None)
    if not runs:
        raise MissingData("table1: no finished runs with math accuracy; run caprese sweep ablations/rank.yaml")
    rows = []
    for config, _, members in _by_configuration(runs):
        accuracy = accuracy_summary(members)
        recovered, recovered_ci = None, (None, None)
        if config.is_caprese:
            alone = results.reference(members[0], config.without_caprese())
            dense = results.dense_reference(members[0])
            recovered = recovered_fraction(
                accuracy["accuracy"],
                _mean(alone, "math.accuracy") if alone else None,
                _mean(dense, "math.accuracy") if dense else None,
            )
            pooled = [counts(members), counts(alone) if alone else None, counts(dense) if dense else None]
            if recovered is not None and None not in pooled:
                recovered_ci = recovered_interval(*pooled)
        rows.append(
            {
                **configuration_columns(config),
                "eval_samples": members[0].config.get("eval_samples"),
                **accuracy,
                "recovered": recovered,
                "recovered_ci_low": recovered_ci[0],
                "recovered_ci_high": recovered_ci[1],
                "mean_response_tokens": _mean(members, "math.mean_response_tokens"),
                "extra_percent_of_model": _mean(members, "caprese.extra_percent_of_model"),
                "active_fraction": _mean(members, "params.model_active_fraction_with_extra"),
                "pass_at_n": _mean(members, f"coverage.pass_at_k.{members[0].number('coverage.n') or 0:.0f}"),
                "language_accuracy": _mean(members, "language.short_answer_accuracy"),
                "sweeps": " ".join(sorted({run.sweep for run in members})),
            }
        )
    return pd.DataFrame(rows)


def table4_language(results: Results) -> pd.DataFrame:
    """Language metrics next to math accuracy: sparsity barely moves the first, Caprese keeps it so."""
    runs = results.where(lambda run: run.number("language.perplexity") is not None)
    if not runs:
        raise MissingData(
            "table4: no runs with language metrics (language_samples > 0); run caprese sweep ablations/coverage.yaml"
        )
    rows = []
    for config, _, members in _by_configuration(runs):
        short = accuracy_summary(members, "short_answer_accuracy", prefix="language.short_answer_")
        rows.append(
            {
                **configuration_columns(config),
                "runs": len(members),
                "short_answer_accuracy": _mean(members, "language.short_answer_accuracy"),
                "short_answer_ci_low": short["short_answer_accuracy_ci_low"],
                "short_answer_ci_high": short["short_answer_accuracy_ci_high"],
                "perplexity": _mean(members, "language.perplexity"),
                "dense_perplexity": _mean(members, "language.dense_perplexity"),
                "kl_dense_to_method": _mean(members, "language.kl_dense_to_method"),
                **_text_interval(members, "nll", "perplexity"),
                **_text_interval(members, "kl", "kl_dense_to_method"),
                **{
                    k.replace("accuracy", "math_accuracy", 1): v
                    for k, v in accuracy_summary(members).items()
                    if k.startswith("accuracy_ci") or k == "accuracy"
                },
                "sweeps": " ".join(sorted({run.sweep for run in members})),
            }
        )
    return pd.DataFrame(rows)


def _text_interval(runs: Sequence[Run], key: str, name: str) -> dict[str, float | None]:
    """Bootstrap 95% interval over texts (pooled over seeds) from the runs' per-text sums
    (`language.per_text`); empty when the runs did not record them."""
    values = [v for run in runs for v in (run.get(f"language.per_text.{key}") or [])]
    tokens = [v for run in runs for v in (run.get("language.per_text.tokens") or [])]
    if not values or len(values) != len(tokens):
        return {f"{name}_ci_low": None, f"{name}_ci_high": None}
    low, high = ratio_bootstrap_interval(values, tokens, transform=np.exp if key == "nll" else None)
    return {f"{name}_ci_low": low, f"{name}_ci_high": high}


def _latency_rows(data: Any) -> list[dict[str, Any]]:
    """Rows from `caprese bench --out figures/latency.json`: one per (setting, variant) with its
    time per token, ratio to the full model, bytes-moved limit and ratio to that limit."""
    if not isinstance(data, dict) or not isinstance(data.get("ffn_stack"), list):
        raise CapreseError("latency.json is not `caprese bench` output (expected keys 'ffn_stack' and 'generation')")
    rows = []
    for record in data["ffn_stack"]:
        setting = f"{record['shape']} FFN x{record['layers']} {record['dtype']} {record['device']}"
        for variant, ms in record["ms"].items():
            rows.append(
                {
                    "setting": setting,
                    "variant": variant,
                    "ms_per_token": ms,
                    "ratio_to_full": record["ratio_to_full"][variant],
                    "bytes_limit": record["bytes_limit"][variant],
                    "ratio_to_limit": record["ratio_to_limit"][variant],
                }
            )
    generation = data.get("generation")
    if generation:
        setting = f"{generation['model']} generation {generation['device']}"
        for variant, ms in generation["ms_per_token"].items():
            rows.append(
                {
                    "setting": setting,
                    "variant": variant,
                    "ms_per_token": ms,
                    "ratio_to_full": generation["ratio_to_full"][variant],
                }
            )
    if not rows:
        raise CapreseError("latency.json holds no timings")
    return rows


def table5_latency(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MissingData(f"table5: no {path}; run caprese bench --out {path}")
    try:
        data = read_json(path)
    except ValueError as err:
        raise CapreseError(f"{path} is not JSON: {err}".splitlines()[0]) from None
    return pd.DataFrame(_latency_rows(data))
