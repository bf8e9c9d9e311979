"""Figures of the diagnostics: each function returns a matplotlib Figure (no pyplot state, so it
works headless and in notebooks alike); `write_figures` saves them as PNG and PDF."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write_bytes
from ..stats import PHASES, FFNStatistics

PHASE_STYLE = {"prompt": "--", "generated": "-"}


def _eps_label(eps: float) -> str:
    if eps == 0:
        return "0"
    exponent = math.log2(eps)
    return f"2^{int(exponent)}" if exponent == int(exponent) else f"{eps:.2g}"


def sparsity_heatmap(stats: FFNStatistics) -> Figure:
    """Fraction of |Z| ≤ ε, layers × ε, one panel per phase."""
    eps = stats.config.epsilons
    layers = list(stats.layers)
    fig = Figure(figsize=(4.2 * len(PHASES) + 1.2, 0.35 * len(layers) + 2.2), layout="constrained")
    axes = fig.subplots(1, len(PHASES), sharey=True, squeeze=False)[0]
    image = None
    for ax, phase in zip(axes, PHASES):
        grid = [stats.layer(layer).z.fractions(phase) for layer in layers]
        image = ax.imshow(grid, aspect="auto", origin="lower", vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(eps)), [_eps_label(e) for e in eps], rotation=60, fontsize=7)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=7)
        ax.set_xlabel("ε")
        ax.set_title(f"{phase} tokens")
    axes[0].set_ylabel("layer")
    fig.colorbar(image, ax=list(axes), label="fraction of |Z| ≤ ε")
    fig.suptitle("Activation sparsity of Z (input of down_proj)")
    return fig


def quantile_plot(stats: FFNStatistics) -> Figure:
    """Quantiles of |Z| per layer (solid: generated tokens, dashed: prompt tokens)."""
    layers = list(stats.layers)
    qs = stats.config.quantiles
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i}" for i in range(len(qs))]
    for phase in PHASES:
        for q, color in zip(qs, colors):
            values = [stats.layer(layer).z.quantile(q, phase) for layer in layers]
            ax.plot(layers, values, PHASE_STYLE[phase], color=color, marker="o", markersize=3,
                    label=f"q={q:g}" if phase == "generated" else None)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("|Z| quantile")
    ax.set_title("|Z| quantiles per layer (solid: generated, dashed: prompt)")
    ax.legend(fontsize=7, ncols=2)
    return fig


def error_vs_density(rows: list[dict[str, Any]], *, layer: int | None = None, title: str | None = None) -> Figure:
    """Figure 2: relative L2 error of FF̂ vs density, one line per correction rank (0 = top-k alone).

    `rows` are `ResidualStudy.rows()` (averaged over layers unless `layer` is given) or
    `DiagnosticsResult.figure2_rows()`.
    """
    if layer is not None:
        rows = [r for r in rows if r.get("layer") == layer]
    by_rank: dict[int, dict[float, list[float]]] = {}
    for r in rows:
        by_rank.setdefault(r["rank"], {}).setdefault(r["density"], []).append(r["relative_l2"])
    fig = Figure(figsize=(5.6, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (rank, points) in enumerate(sorted(by_rank.items())):
        densities = sorted(points)
        errors = [sum(points[d]) / len(points[d]) for d in densities]
        ax.plot(densities, errors, marker="o", color=f"C{i}", label="top-k" if rank == 0 else f"top-k + rank {rank}")
    ax.set_xlabel("density k / D_FF")
    ax.set_ylabel("relative error ‖FF − FF̂‖ / ‖FF‖")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or ("generated tokens, " + (f"layer {layer}" if layer is not None else "mean over layers")))
    return fig


def layer_histograms(stats: FFNStatistics, layer: int) -> Figure:
    """One layer's |Z| and |σ(gate)| histograms (density per unit log10), prompt vs generated."""
    layer_stats = stats.layer(layer)
    parts = [("|Z|", layer_stats.z)] + ([("|σ(x W_g)|", layer_stats.gate)] if layer_stats.gate is not None else [])
    fig = Figure(figsize=(5.0 * len(parts), 3.6), layout="constrained")
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, (name, hist) in zip(axes, parts):
        for phase in PHASES:
            lower, upper, counts = hist.nonzero_bins(phase)
            total = hist.total(phase)
            if total == 0 or counts.numel() == 0:
                continue
            widths = (upper.log10() - lower.clamp_min(1e-45).log10())
            density = (counts.double() / total) / widths
            ax.stairs(density.tolist(), [lower[0].item()] + upper.tolist(), label=phase,
                      linestyle=PHASE_STYLE[phase])
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("density per log10 unit")
        ax.legend(fontsize=8)
        ax.set_title(f"layer {layer}: {name}")
    return fig


def save_figure(fig: Figure, stem: Path) -> dict[str, Path]:
    """PNG and PDF next to each other, each written atomically."""
    paths = {}
    for fmt in ("png", "pdf"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150)
        paths[fmt] = atomic_write_bytes(stem.with_suffix(f".{fmt}"), buffer.getvalue())
    return paths


def write_figures(result, out: Path) -> dict[str, Path]:
    figures = {
        "sparsity_vs_epsilon": sparsity_heatmap(result.stats),
        "abs_z_quantiles": quantile_plot(result.stats),
        "error_vs_density": error_vs_density(result.error_rows()),
    }
    paths = {}
    for name, fig in figures.items():
        for fmt, path in save_figure(fig, Path(out) / name).items():
            paths[f"{name}_{fmt}"] = path
    return paths
