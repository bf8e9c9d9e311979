"""Figure 6: Caprese's extra parameters as a share of the model and of its FFN parameters, and the
active parameters per generated token the efficient method cuts.

Computed offline from the dimension-only reference configs (caprese.models.reference) at the
paper's ranks, in the paper's settings (GRIFFIN on the first half of the layers, CATS on all),
plus every model/rank a finished run trained an adapter for (the built-in toy model).
"""

from __future__ import annotations

from functools import cache

import pandas as pd

from ..arch.adapters import adapter_for
from ..methods.accounting import active_ffn_parameters_from_config
from ..models.reference import REFERENCE_CONFIGS, reference_config
from .common import Context, Made
from .results import Results
from .style import method_colour, method_name, new_figure, note, rank_colour, save_figure
from .tables import write_data

FIG6 = "fig6_parameters"
PAPER_RANKS = (128, 256, 512)
PAPER_SETTINGS = (("griffin", "first_half"), ("cats", "all"))  # (method, layers it corrects), as in the paper
SPARSITY = 0.5  # for the active parameters the method cuts
CUT_RANK = 256  # the paper's default rank, compared with the cut in the third panel


def caprese_extra_parameters(hidden_size: int, rank: int, corrected_layers: int) -> int:
    """L (D×r) and R (r×D) on each corrected layer."""
    return 2 * hidden_size * rank * corrected_layers


@cache
def _accounting(name: str, method: str, layers: str) -> tuple[dict, int]:
    config = reference_config(name)
    adapter = adapter_for(config)
    text = getattr(config, "get_text_config", lambda: config)()
    return active_ffn_parameters_from_config(config, method, SPARSITY, layers), int(getattr(text, adapter.hidden_size))


def _row(
    model: str,
    source: str,
    method: str,
    layers: str,
    corrected: int,
    hidden: int,
    rank: int,
    model_params: float,
    ffn_params: float,
    sparsity: float | None,
    cut: float | None,
    extra: int | None = None,
) -> dict:
    extra = caprese_extra_parameters(hidden, rank, corrected) if extra is None else extra
    return {
        "model": model,
        "source": source,
        "method": method,
        "layers": layers,
        "corrected_layers": corrected,
        "hidden_size": hidden,
        "rank": rank,
        "extra_parameters": extra,
        "model_parameters": model_params,
        "ffn_parameters": ffn_params,
        "extra_percent_of_model": 100.0 * extra / model_params,
        "extra_percent_of_ffn": 100.0 * extra / ffn_params,
        "sparsity": sparsity,
        "active_parameters_cut": cut,
        "net_cut_with_caprese": None if cut is None else cut - extra,
    }


def reference_rows(ranks: tuple[int, ...] = PAPER_RANKS) -> list[dict]:
    rows = []
    for name in REFERENCE_CONFIGS.names():
        for method, layers in PAPER_SETTINGS:
            accounting, hidden = _accounting(name, method, layers)
            for rank in ranks:
                rows.append(
                    _row(
                        name,
                        "reference config",
                        method,
                        layers,
                        len(accounting["layers"]),
                        hidden,
                        rank,
                        accounting["model_params"],
                        accounting["ffn_params_dense"],
                        SPARSITY,
                        accounting["ffn_params_cut"],
                    )
                )
    return rows


def run_rows(results: Results) -> list[dict]:
    """Each (model, method, layers, rank) a finished run trained an adapter for, as measured."""
    rows, seen = [], set()
    for run in results.where(lambda run: run.number("caprese.extra_percent_of_model") is not None):
        c = run.configuration
        key = (c.model, c.method, c.layers, c.rank)
        if key in seen or not c.is_caprese:
            continue
        seen.add(key)
        layers = run.get("params.layers")
        corrected = len(layers) if isinstance(layers, list) else 0
        extra = int(run.number("caprese.extra_parameters") or 0)
        hidden = extra // (2 * c.rank * corrected) if corrected else 0
        rows.append(
            _row(
                c.model,
                f"run {run.name}",
                c.method,
                c.layers or "",
                corrected,
                hidden,
                c.rank,
                run.number("caprese.model_parameters"),
                run.number("caprese.ffn_parameters"),
                c.sparsity,
                run.number("params.ffn_params_cut"),
                extra,
            )
        )
    return rows


def _billions(value: float) -> str:
    return f"{value / 1e9:.2f}B"


def _caption(frame: pd.DataFrame) -> str:
    """The paper's headline number, from the data: the largest cut and what Caprese adds back."""
    griffin = frame[
        (frame["method"] == "griffin") & (frame["source"] == "reference config") & (frame["rank"] == CUT_RANK)
    ]
    if griffin.empty:
        return ""
    top = griffin.loc[griffin["active_parameters_cut"].idxmax()]
    return (
        f"GRIFFIN at {SPARSITY:.0%} on the first half of {top['model']}'s layers cuts {_billions(top['active_parameters_cut'])} "
        f"active parameters per token; Caprese r={CUT_RANK} adds {_billions(top['extra_parameters'])} "
        f"({top['extra_percent_of_model']:.2f}% of the model)"
    )


def fig6_parameters(ctx: Context) -> Made:
    frame = pd.DataFrame(reference_rows() + run_rows(ctx.results))
    references = frame[frame["source"] == "reference config"]
    models = list(references.sort_values("model_parameters")["model"].drop_duplicates())
    fig, axes = new_figure(3, len(PAPER_SETTINGS), panel=(6.2, 3.0))
    width = 0.8 / len(PAPER_RANKS)
    for row, (method, layers) in enumerate(PAPER_SETTINGS):
        mine = frame[frame["method"] == method]
        runs = mine[mine["source"] != "reference config"]
        groups = models + list(dict.fromkeys(runs["model"]))
        for column, metric, ylabel in (
            (0, "extra_percent_of_model", "% of model parameters"),
            (1, "extra_percent_of_ffn", "% of FFN parameters"),
        ):
            ax = axes[row * 3 + column]
            for i, rank in enumerate(PAPER_RANKS):
                part = (
                    mine[(mine["source"] == "reference config") & (mine["rank"] == rank)].set_index("model").loc[models]
                )
                ax.bar(
                    [g + (i - 1) * width for g in range(len(models))],
                    part[metric],
                    width,
                    color=rank_colour(method, rank, PAPER_RANKS),
                    label=f"r = {rank}",
                )
            for g, model in enumerate(dict.fromkeys(runs["model"]), start=len(models)):
                measured = runs[runs["model"] == model].sort_values("rank")
                step = 0.8 / len(measured)
                for j, (_, entry) in enumerate(measured.iterrows()):
                    x = g - 0.4 + step * (j + 0.5)
                    ax.bar(x, entry[metric], step, color="white", edgecolor=method_colour(method), hatch="///")
                    ax.annotate(f"r{entry['rank']}", (x, entry[metric]), ha="center", va="bottom", fontsize=6)
            ax.set_xticks(range(len(groups)), groups, rotation=40, ha="right", fontsize=7)
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 1.3 * max(mine[metric].max(), 1e-9))  # head room for the legend
            ax.set_title(f"Caprese on {method_name(method)} ({layers} layers): {ylabel}")
            ax.legend(
                title="reference configs" + ("" if runs.empty else " (hatched: measured runs)"),
                ncols=3,
                loc="upper center",
            )
        ax = axes[row * 3 + 2]
        at_rank = (
            mine[(mine["source"] == "reference config") & (mine["rank"] == CUT_RANK)].set_index("model").loc[models]
        )
        positions = range(len(models))
        ax.bar(
            [p - 0.2 for p in positions],
            at_rank["active_parameters_cut"] / 1e9,
            0.4,
            color=method_colour(method),
            label=f"cut by {method_name(method)} at {SPARSITY:.0%}",
        )
        ax.bar(
            [p + 0.2 for p in positions],
            at_rank["extra_parameters"] / 1e9,
            0.4,
            color="0.55",
            label=f"added by Caprese r={CUT_RANK}",
        )
        ax.set_xticks(positions, models, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("parameters per token (billions)")
        ax.set_title(f"{method_name(method)}: parameters cut vs added")
        ax.legend()
    note(fig, _caption(frame))
    paths = save_figure(fig, ctx.out_dir, FIG6) + [write_data(frame, ctx.out_dir, FIG6)]
    source = "caprese.models.reference configs" + (
        f" + {len(frame) - len(references)} measured run settings" if len(frame) > len(references) else ""
    )
    return Made(paths, source, frame)
