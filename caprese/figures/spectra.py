"""Figure 8: normalised singular values of each learned L·R, one line per layer, one panel per
method (the paper: CATS's corrections are very low rank, GRIFFIN's higher).

Only a matched set is drawn: runs of different methods with the same rank, sparsity, layers,
distillation samples and stage (ablations/spectra.yaml makes one for CATS and GRIFFIN). Among matched sets the
one with the most methods, then the largest rank (the longest spectrum), then sparsity closest to
50%, then the most samples, then the later stage (E2E over layer-wise) is chosen; per method, the
later run name where several match. Runs of several methods with no matched set are refused (a
spectrum at r = 16 and 70% next to one at r = 32 and 50% compares nothing); one method alone is drawn
and says so.
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


def match_key(run: Run) -> tuple:
    """What two methods' spectra must share to be compared: (rank, sparsity, samples, stage, ρ, layers)
    (GRIFFIN on the first half next to CATS on every layer would compare other layers' errors)."""
    c = run.configuration
    return (c.rank, c.sparsity, c.samples, c.stage, c.reselect_every, c.layers)


def _preference(key: tuple, methods: int) -> tuple:
    rank, sparsity, samples, stage, rho, _ = key
    order = STAGE_ORDER.index(stage) if stage in STAGE_ORDER else 0
    return (methods, not rho, rank, -abs((sparsity or 0.0) - 0.5), samples or 0, order)


def _settings(key: tuple) -> str:
    rank, sparsity, samples, stage, rho, layers = key
    return (
        f"r = {rank}, sparsity {sparsity:.0%}, layers {layers}, {samples} distillation samples, {stage_name(stage)}"
        + (f", ρ = {rho}" if rho else "")
    )


def describe_match(key: tuple) -> str:
    return f"matched: {_settings(key)}"


def chosen_runs(runs: list[Run]) -> tuple[dict[str, Run], tuple | None]:
    """One run per method from the best matched set, and its key (None: a single method, unmatched)."""
    by_key: dict[tuple, dict[str, Run]] = {}
    for run in sorted(runs, key=lambda r: r.name):
        by_key.setdefault(match_key(run), {})[run.configuration.method] = run
    methods = {run.configuration.method for run in runs}
    matched = {key: found for key, found in by_key.items() if len(found) > 1}
    if not matched:
        if len(methods) > 1:
            seen = "; ".join(
                f"{m}: " + " | ".join(sorted({_settings(match_key(r)) for r in runs if r.configuration.method == m}))
                for m in sorted(methods)
            )
            raise MissingData(
                f"fig8: no matched pair (same rank, sparsity, layers, samples and stage) across methods ({seen}); "
                f"{sweep_hint('spectra')}"
            )
        best = max(by_key, key=lambda key: _preference(key, 1))
        return dict(by_key[best]), None
    best = max(matched, key=lambda key: _preference(key, len(matched[key])))
    return dict(sorted(matched[best].items())), best


def fig8_singular_values(ctx: Context) -> Made:
    runs = ctx.results.where(_has_spectra)
    if not runs:
        raise MissingData(f"fig8: no runs with a trained Caprese adapter; {sweep_hint('sparsity')}")
    chosen, key = chosen_runs(runs)
    rows = []
    for method, run in chosen.items():
        c = run.configuration
        for layer, spectrum in sorted(run.get("caprese.singular_values").items(), key=lambda item: int(item[0])):
            values = spectrum.get("singular_values", [])
            normalised = spectrum.get("normalised") or [v / values[0] if values and values[0] else v for v in values]
            for index, (value, norm) in enumerate(zip(values, normalised), start=1):
                rows.append(
                    {
                        "method": method,
                        "run": run.name,
                        "rank": c.rank,
                        "stage": c.stage,
                        "sparsity": c.sparsity,
                        "samples": c.samples,
                        "layers": c.layers,
                        "matched": key is not None,
                        "layer": int(layer),
                        "index": index,
                        "singular_value": value,
                        "normalised": norm,
                    }
                )
    frame = pd.DataFrame(rows)
    fig, axes = new_figure(len(chosen))
    colormap = matplotlib.colormaps["viridis"]
    for ax, (method, run) in zip(axes, chosen.items()):
        part = frame[frame["method"] == method]
        layers = sorted(set(part["layer"]))
        for i, layer in enumerate(layers):
            line = part[part["layer"] == layer]
            ax.plot(
                line["index"],
                line["normalised"].clip(lower=1e-6),
                color=colormap(i / max(1, len(layers) - 1)),
                marker=".",
                markersize=3,
                linewidth=1.1,
                label=f"layer {layer}",
            )
        c = run.configuration
        ax.set_yscale("log")
        ax.set_xlabel("singular value index")
        ax.set_ylabel("σ_i / σ_1 of L·R")
        ax.set_title(f"{method_name(method)} + Caprese r{c.rank} {stage_name(c.stage)}, sparsity {c.sparsity:.0%}")
        ax.legend(ncols=2 if len(layers) > 8 else 1)
    match = describe_match(key) if key else "one method only: nothing matched to compare with"
    layers = ", ".join(f"{method_name(m)} layers {run.configuration.layers}" for m, run in chosen.items())
    note(fig, f"{match} · {layers} · " + " · ".join(f"{method_name(m)}: {run.name}" for m, run in chosen.items()))
    source = ", ".join(f"{ctx.results.runs_dir / run.name}" for run in chosen.values())
    paths = save_figure(fig, ctx.out_dir, FIG8) + [write_data(frame, ctx.out_dir, FIG8)]
    return Made(paths, source, frame)
