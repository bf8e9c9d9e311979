"""Figures of the diagnostics: each function returns a matplotlib Figure (no pyplot state, so it
works headless and in notebooks alike); `write_figures` saves them as PNG and PDF.

The figures are `ReportFigure`s, which render themselves as PNG for IPython (`_repr_png_`): a
kernel that never activated matplotlib's inline backend has no formatter for a plain `Figure`
and would show its text repr (`<Figure size 1000x360 with 2 Axes>`) instead of the plot.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write_bytes
from ..stats import PHASES, FFNStatistics
from ..stats.base import phase_index

PHASE_STYLE = {"prompt": "--", "generated": "-"}
DISPLAY_DPI = 100  # notebook / widget images; files are written at 150


def figure_png(fig: Figure, dpi: int = DISPLAY_DPI) -> bytes:
    """The figure as PNG bytes (what a notebook or an image widget shows)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class ReportFigure(Figure):
    """A matplotlib Figure that IPython displays as PNG in any kernel, with or without a backend."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def _eps_label(eps: float) -> str:
    if eps == 0:
        return "0"
    exponent = math.log2(eps)
    return f"2^{int(exponent)}" if exponent == int(exponent) else f"{eps:.2g}"


def sparsity_heatmap(stats: FFNStatistics) -> Figure:
    """Fraction of |Z| ≤ ε, layers × ε, one panel per phase."""
    eps = stats.config.epsilons
    layers = list(stats.layers)
    fig = ReportFigure(figsize=(4.2 * len(PHASES) + 1.2, 0.35 * len(layers) + 2.2), layout="constrained")
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
    fig = ReportFigure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i}" for i in range(len(qs))]
    for phase in PHASES:
        for q, color in zip(qs, colors):
            values = [stats.layer(layer).z.quantile(q, phase) for layer in layers]
            ax.plot(
                layers,
                values,
                PHASE_STYLE[phase],
                color=color,
                marker="o",
                markersize=3,
                label=f"q={q:g}" if phase == "generated" else None,
            )
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
    fig = ReportFigure(figsize=(5.6, 4.0), layout="constrained")
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
    fig = ReportFigure(figsize=(5.0 * len(parts), 3.6), layout="constrained")
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, (name, hist) in zip(axes, parts):
        for phase in PHASES:
            lower, upper, counts = hist.nonzero_bins(phase)
            total = hist.total(phase)
            if total == 0 or counts.numel() == 0:
                continue
            widths = upper.log10() - lower.clamp_min(1e-45).log10()
            density = (counts.double() / total) / widths
            ax.stairs(density.tolist(), [lower[0].item()] + upper.tolist(), label=phase, linestyle=PHASE_STYLE[phase])
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("density per log10 unit")
        ax.legend(fontsize=8)
        ax.set_title(f"layer {layer}: {name}")
    return fig


def layer_panel(
    stats: FFNStatistics, errors: list[dict[str, Any]], layer: int, phase: str, *, epsilon: float | None = None
) -> Figure:
    """Everything about one layer in one phase (the other phase drawn faint for reference):
    |Z| (and |σ(gate)|) histogram, fraction |Z| ≤ ε vs ε (the chosen ε marked), top-k energy kept
    and GRIFFIN flocking overlap vs density, and figure 2's error vs density per correction rank.

    `errors` are error rows (`ResidualStudy.rows()`) with a "phase" key ("generated" if absent).
    """
    phase_index(phase)  # a one-line error for an unknown phase
    layer_stats = stats.layer(layer)
    other = [p for p in PHASES if p != phase][0]
    fig = ReportFigure(figsize=(9.0, 6.4), layout="constrained")
    (ax_hist, ax_eps), (ax_topk, ax_err) = fig.subplots(2, 2)

    parts = [("|Z|", layer_stats.z, "C0")] + (
        [("|σ(x W_g)|", layer_stats.gate, "C1")] if layer_stats.gate is not None else []
    )
    for name, hist, color in parts:
        for p, alpha in ((phase, 1.0), (other, 0.3)):
            lower, upper, counts = hist.nonzero_bins(p)
            total = hist.total(p)
            if total == 0 or counts.numel() == 0:
                continue
            widths = upper.log10() - lower.clamp_min(1e-45).log10()
            density = (counts.double() / total) / widths
            ax_hist.stairs(
                density.tolist(),
                [lower[0].item()] + upper.tolist(),
                color=color,
                alpha=alpha,
                linestyle=PHASE_STYLE[p],
                label=f"{name} ({p})",
            )
    ax_hist.set_xscale("log")
    ax_hist.set_xlabel("magnitude")
    ax_hist.set_ylabel("density per log10 unit")
    ax_hist.set_title(f"layer {layer}: |Z| and |σ(gate)| histograms")
    ax_hist.legend(fontsize=7)

    eps = [e for e in stats.config.epsilons if e > 0]
    for p, alpha in ((phase, 1.0), (other, 0.3)):
        fractions = [f for e, f in zip(stats.config.epsilons, layer_stats.z.fractions(p)) if e > 0]
        ax_eps.plot(eps, fractions, PHASE_STYLE[p], marker="o", markersize=3, color="C0", alpha=alpha, label=p)
    if epsilon is not None and epsilon > 0:
        ax_eps.axvline(epsilon, color="C3", linewidth=0.8, label=f"ε = {_eps_label(epsilon)}")
    ax_eps.set_xscale("log", base=2)
    ax_eps.set_ylim(0, 1)
    ax_eps.set_xlabel("ε")
    ax_eps.set_ylabel("fraction of |Z| ≤ ε")
    ax_eps.set_title("sparsity of Z vs ε")
    ax_eps.grid(alpha=0.3)
    ax_eps.legend(fontsize=7)

    densities = list(stats.config.densities)
    for p, alpha in ((phase, 1.0), (other, 0.3)):
        if layer_stats.topk is not None:
            ax_topk.plot(
                densities,
                layer_stats.topk.kept_fractions(p),
                PHASE_STYLE[p],
                marker="o",
                markersize=3,
                color="C2",
                alpha=alpha,
                label=f"top-k energy kept ({p})",
            )
        if layer_stats.flocking is not None:
            ax_topk.plot(
                densities,
                layer_stats.flocking.overlaps(p),
                PHASE_STYLE[p],
                marker="s",
                markersize=3,
                color="C4",
                alpha=alpha,
                label=f"GRIFFIN overlap ({p})",
            )
    ax_topk.set_ylim(0, 1.02)
    ax_topk.set_xlabel("density k / D_FF")
    ax_topk.set_ylabel("fraction")
    ax_topk.set_title("top-k energy of ‖Z‖² and GRIFFIN flocking")
    ax_topk.grid(alpha=0.3)
    ax_topk.legend(fontsize=7)

    rows = [r for r in errors if r.get("layer") == layer and r.get("phase", "generated") == phase]
    by_rank: dict[int, dict[float, float]] = {}
    for r in rows:
        by_rank.setdefault(r["rank"], {})[r["density"]] = r["relative_l2"]
    for i, (rank, points) in enumerate(sorted(by_rank.items())):
        ds = sorted(points)
        ax_err.plot(
            ds,
            [points[d] for d in ds],
            marker="o",
            markersize=3,
            color=f"C{i}",
            label="top-k" if rank == 0 else f"top-k + rank {rank}",
        )
    if not rows:
        ax_err.text(
            0.5,
            0.5,
            f"no reconstruction errors\nrecorded for {phase} tokens",
            ha="center",
            va="center",
            transform=ax_err.transAxes,
            fontsize=9,
        )
    else:
        ax_err.set_ylim(bottom=0)
        ax_err.legend(fontsize=7)
    ax_err.set_xlabel("density k / D_FF")
    ax_err.set_ylabel("relative error ‖FF − FF̂‖ / ‖FF‖")
    ax_err.set_title(f"figure 2: oracle top-k error ({phase} tokens)")
    ax_err.grid(alpha=0.3)
    fig.suptitle(f"layer {layer}, {phase} tokens (faint: {other})")
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
