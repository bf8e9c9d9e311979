"""`render_all(runs_dir, out_dir)`: every figure and table the data allows, a one-line reason for
each one it does not, and figures/README.md saying which is which and where each came from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CapreseError
from ..io import atomic_write_text
from ..registry import check_choice
from ..sweep.layout import DAMAGED
from .accuracy import ablation_rank, ablation_samples, fig5_accuracy_vs_density
from .common import Context, Made, MissingData
from .coverage import fig3_coverage, fig4_7_response_length
from .error import fig2_error_vs_density
from .parameters import fig6_parameters
from .real import real_task_levels, real_task_summary, real_task_table, real_teacher_forced, real_teacher_forced_table
from .reselection import fig_table3_reselection, table3_reselection
from .results import load_results
from .spectra import fig8_singular_values
from .style import style
from .tables import table1_math_accuracy, table4_language, table5_latency, write_table


@dataclass(frozen=True)
class Item:
    key: str  # how messages name it
    name: str  # file stem under out_dir (stable: the README and the paper's numbering refer to it)
    kind: str  # figure | table
    shows: str
    data_from: str  # the command that makes its data
    draw: Callable[[Context], Made]
    group: str = "paper"  # paper (ITEMS, drawn by default into figures/) | real (REAL_ITEMS, figures/real/)


def _table(name: str, title: str, build) -> Callable[[Context], Made]:
    def draw(ctx: Context) -> Made:
        frame = build(ctx)
        return Made(write_table(frame, ctx.out_dir, name, title), _table_source(ctx, name), frame)

    return draw


def _table_source(ctx: Context, name: str) -> str:
    if name == "table5_latency":
        return str(ctx.latency)
    return f"{ctx.results.runs_dir} ({len(ctx.results.runs)} finished runs, all sweeps)"


ITEMS: tuple[Item, ...] = (
    Item(
        "fig2",
        "fig2_error_vs_density",
        "figure",
        "relative FFN output error vs density, one line per correction rank (0 = the method alone); paper fig. 2",
        "`caprese sweep ablations/fig2.yaml`, or `caprese diagnose --model toy-math --data toy-math --out figures/diagnostics`",
        fig2_error_vs_density,
    ),
    Item(
        "fig3",
        "fig3_coverage",
        "figure",
        "pass@k coverage vs relative compute units (k x active-parameter fraction): dense / method / Caprese; paper fig. 3",
        "`caprese sweep ablations/coverage.yaml`",
        fig3_coverage,
    ),
    Item(
        "fig4_7",
        "fig4_7_response_length",
        "figure",
        "mean response length (tokens) by difficulty level: dense / method / Caprese, one panel per method; paper figs. 4, 7",
        "`caprese sweep ablations/coverage.yaml` (else the rank or sparsity sweep)",
        fig4_7_response_length,
    ),
    Item(
        "fig5",
        "fig5_accuracy_vs_density",
        "figure",
        "math accuracy vs density, the method alone (dashed) vs Caprese at each rank, one panel per method; paper fig. 5",
        "`caprese sweep ablations/density.yaml` (GRIFFIN and CATS; else ablations/sparsity.yaml)",
        fig5_accuracy_vs_density,
    ),
    Item(
        "fig6",
        "fig6_parameters",
        "figure",
        "Caprese's extra parameters as % of the model and of its FFNs (reference configs at r = 128/256/512, hatched: "
        "measured runs) and the active parameters the method cuts; paper fig. 6",
        "nothing (reference configs); hatched bars: any sweep that trains Caprese",
        fig6_parameters,
    ),
    Item(
        "fig8",
        "fig8_singular_values",
        "figure",
        "normalised singular values of each layer's learned L·R, one panel per method; paper fig. 8",
        "`caprese sweep ablations/spectra.yaml` (a matched CATS/GRIFFIN pair; only matched runs are drawn)",
        fig8_singular_values,
    ),
    Item(
        "rank",
        "ablation_rank",
        "figure",
        "math accuracy and relative FFN error vs Caprese rank",
        "`caprese sweep ablations/rank.yaml`",
        ablation_rank,
    ),
    Item(
        "samples",
        "ablation_samples",
        "figure",
        "math accuracy and relative FFN error vs distillation sample count",
        "`caprese sweep ablations/samples.yaml`",
        ablation_samples,
    ),
    Item(
        "table1",
        "table1_math_accuracy",
        "table",
        "math accuracy per configuration (seeds averaged), every sweep; paper table 1",
        "any sweep",
        _table(
            "table1_math_accuracy",
            "Math accuracy by configuration (table 1 analog)",
            lambda ctx: table1_math_accuracy(ctx.results),
        ),
    ),
    Item(
        "table4",
        "table4_language",
        "table",
        "short-answer accuracy, perplexity and KL(dense ‖ method) per configuration, next to math accuracy; paper table 4",
        "any sweep with `language_samples` > 0",
        _table(
            "table4_language",
            "Language metrics by configuration (table 4 analog)",
            lambda ctx: table4_language(ctx.results),
        ),
    ),
    Item(
        "table3",
        "table3_reselection",
        "table",
        "GRIFFIN reselecting every ρ tokens, alone and with Caprese: accuracy (95% Wilson intervals) and measured "
        "compute units; paper table 3",
        "`caprese sweep ablations/reselect.yaml`",
        table3_reselection,
    ),
    Item(
        "table3_fig",
        "fig_table3_reselection",
        "figure",
        "table 3 drawn: accuracy vs measured active-parameter fraction, one point per ρ, GRIFFIN alone and with Caprese",
        "`caprese sweep ablations/reselect.yaml`",
        fig_table3_reselection,
    ),
    Item(
        "table5",
        "table5_latency",
        "table",
        "time per generated token per configuration; paper table 5",
        "`caprese bench --out figures/latency.json`",
        _table("table5_latency", "Latency by configuration (table 5 analog)", lambda ctx: table5_latency(ctx.latency)),
    ),
)
# the real-model panels (ablations/real.yaml), drawn on request: caprese figures --out figures/real --only real
REAL_ITEMS: tuple[Item, ...] = (
    Item(
        "real_tf",
        "real_teacher_forced",
        "figure",
        "real model: teacher-forced KL(dense ‖ method) and perplexity / dense on math reasoning text vs prose, per "
        "configuration, 95% bootstrap intervals over texts",
        "`caprese sweep ablations/real.yaml`",
        real_teacher_forced,
        group="real",
    ),
    Item(
        "real_tf_table",
        "real_teacher_forced_table",
        "table",
        "real model: the teacher-forced numbers, with each Caprese/LoRA run's paired change against its method alone",
        "`caprese sweep ablations/real.yaml`",
        real_teacher_forced_table,
        group="real",
    ),
    Item(
        "real_task",
        "real_task_levels",
        "figure",
        "real model: task accuracy by difficulty level, Wilson 95% intervals",
        "`caprese sweep ablations/real.yaml` (points with eval_samples > 0)",
        real_task_levels,
        group="real",
    ),
    Item(
        "real_task_table",
        "real_task_table",
        "table",
        "real model: task accuracy by level with Wilson 95% intervals",
        "`caprese sweep ablations/real.yaml` (points with eval_samples > 0)",
        real_task_table,
        group="real",
    ),
    Item(
        "real_task_summary",
        "real_task_summary",
        "table",
        "real model: accuracy over all levels, and the share of each method's loss Caprese/LoRA recovers",
        "`caprese sweep ablations/real.yaml` (points with eval_samples > 0)",
        real_task_summary,
        group="real",
    ),
)
ALL_ITEMS = ITEMS + REAL_ITEMS
ITEM_KEYS = tuple(item.key for item in ALL_ITEMS)
GROUPS = tuple(dict.fromkeys(item.group for item in ALL_ITEMS))


def outputs(item: Item, out_dir: Path) -> list[Path]:
    """Every file an item may write (so a stale one can be removed when it is not made again)."""
    suffixes = (".png", ".pdf") if item.kind == "figure" else (".csv", ".md")
    return [out_dir / f"{item.name}{suffix}" for suffix in suffixes] + [out_dir / "data" / f"{item.name}.csv"]


@dataclass
class Outcome:
    item: Item
    made: Made | None = None
    reason: str = ""  # why it was not made (one line)
    error: bool = False  # the data was there but unreadable (a bad input, not a missing sweep)

    def line(self) -> str:
        if self.made is None:
            return f"{self.item.key}: {'error: ' if self.error else ''}{self.reason}"
        files = ", ".join(p.name for p in self.made.paths if p.parent.name != "data")
        return f"{self.item.key}: {files} <- {self.made.source}"


@dataclass
class RenderReport:
    runs_dir: Path
    out_dir: Path
    outcomes: list[Outcome] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (sweep/run-id, status, why): not drawn from
    only: tuple[str, ...] = ()  # the item keys or groups asked for (empty: the default group)

    @property
    def figures_made(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.made is not None and o.item.kind == "figure"]

    @property
    def not_made(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.made is None]

    @property
    def ok(self) -> bool:
        """At least one figure, and no input that was there but unreadable (a damaged run included)."""
        return (
            bool(self.figures_made)
            and not any(o.error for o in self.outcomes)
            and not any(status == DAMAGED for _, status, _ in self.skipped)
        )

    def pngs(self) -> list[Path]:
        return [p for o in self.figures_made for p in o.made.paths if p.suffix == ".png"]

    def lines(self) -> list[str]:
        skipped = [f"skipped run {self.runs_dir / name}: {status}: {why}" for name, status, why in self.skipped]
        return [o.line() for o in self.outcomes] + skipped

    def summary(self) -> str:
        made = sum(o.made is not None for o in self.outcomes)
        return "\n".join(self.lines() + [f"{made} of {len(self.outcomes)} figures and tables -> {self.out_dir}/"])

    def display(self) -> None:
        """Show every PNG in a notebook."""
        from IPython.display import Image, Markdown, display  # only inside a notebook

        for outcome in self.outcomes:
            display(
                Markdown(
                    f"**{outcome.item.name}** — {outcome.item.shows}"
                    if outcome.made is not None
                    else f"*{outcome.line()}*"
                )
            )
            for path in outcome.made.paths if outcome.made is not None else []:
                if path.suffix == ".png":
                    display(Image(filename=str(path)))


def readme(report: RenderReport) -> str:
    lines = [
        "# figures/",
        "",
        f"Written by `caprese figures --runs {report.runs_dir} --out {report.out_dir}"
        + (f" --only {','.join(report.only)}" if report.only else "")
        + "` (or `notebooks/figures.ipynb`,",
        "which calls the same `caprese.figures.render_all`) from the finished runs under "
        f"`{report.runs_dir}/`; regenerated in full each time.",
        "Each figure is a PNG and a PDF with the same name; the numbers it plots are in `data/<name>.csv`.",
        "Tables are CSV (every digit) and markdown (4 significant digits). File names are stable.",
        "",
        "| file | what it shows | drawn from | data made by |",
        "|---|---|---|---|",
    ]
    for outcome in report.outcomes:
        item = outcome.item
        suffix = ".png/.pdf" if item.kind == "figure" else ".csv/.md"
        drawn = outcome.made.source if outcome.made is not None else f"*not made:* {outcome.reason}"
        cells = [f"`{item.name}{suffix}`", item.shows, drawn, item.data_from]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    lines += [
        "",
        "Style (caprese/figures/style.py): one colour per method (dense black, GRIFFIN blue, CATS vermilion,",
        "TEAL green, top-k purple), darker shades for larger Caprese ranks, dashed lines for the method alone,",
        "dotted for dense, markers per Caprese stage (o none, D closed form, s layer-wise, ^ E2E); the",
        "parameter-matched LoRA baseline dash-dotted with x markers.",
        "",
    ]
    return "\n".join(lines)


def select_items(only: str | Sequence[str] | None) -> tuple[Item, ...]:
    """The items named in `only`: keys or group names (paper, real), comma-separated or a list;
    None or empty: the paper's figures and tables (group paper)."""
    if not only:
        return ITEMS
    keys = [k.strip() for k in (only.split(",") if isinstance(only, str) else only) if k.strip()]
    for key in keys:
        check_choice("figure", key, ITEM_KEYS + GROUPS)
    return tuple(item for item in ALL_ITEMS if item.key in keys or item.group in keys)


def render_all(
    runs_dir: str | Path = "runs",
    out_dir: str | Path = "figures",
    *,
    diagnostics: str | Path | None = None,
    latency: str | Path | None = None,
    only: str | Sequence[str] | None = None,
) -> RenderReport:
    """Render every figure and table the finished runs allow into `out_dir` (only those named in
    `only`, when given); see `RenderReport`."""
    items = select_items(only)
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if diagnostics is not None and not Path(diagnostics).is_dir():
        raise CapreseError(
            f"diagnostics folder {str(diagnostics)!r} does not exist (caprese diagnose --out DIR writes one)"
        )
    ctx = Context(
        load_results(runs_dir),
        out_dir,
        Path(diagnostics) if diagnostics is not None else None,
        Path(latency) if latency is not None else out_dir / "latency.json",
    )
    asked = only.split(",") if isinstance(only, str) else list(only or ())
    report = RenderReport(
        runs_dir, out_dir, skipped=list(ctx.results.skipped), only=tuple(k.strip() for k in asked if k.strip())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with style():
        for item in items:
            try:
                report.outcomes.append(Outcome(item, made=item.draw(ctx)))
            except MissingData as missing:
                report.outcomes.append(Outcome(item, reason=str(missing).removeprefix(f"{item.key}: ")))
            except CapreseError as err:
                report.outcomes.append(Outcome(item, reason=str(err), error=True))
    for outcome in report.not_made:
        # a figure from an earlier render would contradict the README: it is not drawn from this data
        for path in outputs(outcome.item, out_dir):
            if path.exists():
                path.unlink()
                report.removed.append(path)
    atomic_write_text(out_dir / "README.md", readme(report))
    return report
