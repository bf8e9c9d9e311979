"""The interactive layer explorer for JupyterLab (ipywidgets): one layer's diagnostics on demand.

    layer_explorer("runs/diag")          # a finished `caprese diagnose` folder: opens at once
    layer_explorer(result)               # or a `run_diagnostics` result (or a DiagnosticsView)

A layer slider, a second layer to compare side by side, the phase (generated / prompt tokens)
and the ε of the sparsity read-out. Each panel shows the layer's numbers as text and one figure
(`plots.layer_panel`: |Z| histogram, sparsity vs ε, top-k energy and GRIFFIN overlap, figure 2)
as a PNG image widget that is updated in place; "Save PNG + PDF" writes the shown layers' figures
into the run folder. Figures are always sent as PNG bytes, never as Figure objects: a kernel
without matplotlib's inline backend would show `<Figure size ...>` text instead.

The widgets carry CSS classes (`caprese-layer`, `caprese-compare`, `caprese-phase`,
`caprese-epsilon`, `caprese-numbers`, `caprese-figure`, `caprese-export`) that the browser test uses.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from . import plots
from .view import DiagnosticsView

FIGURE_WIDTH = "620px"  # on screen; the PNG itself is plots.DISPLAY_DPI
NO_LAYER = -1  # "Compare: none" (a Dropdown shows an empty box for the value None)


def as_view(source) -> DiagnosticsView:
    """A DiagnosticsView from a view, a `run_diagnostics` result, or a diagnose folder path."""
    if isinstance(source, DiagnosticsView):
        return source
    if isinstance(source, (str, Path)):
        return DiagnosticsView.load(source)
    return DiagnosticsView.from_result(source)


def show_layer(source, layer: int, phase: str = "generated") -> None:
    """Display one layer's figure (PNG) and numbers without widgets, e.g. in a static notebook."""
    from IPython.display import HTML, Image, display

    view = as_view(source)
    display(HTML(numbers_html(view.numbers(layer, phase))))
    display(Image(data=plots.figure_png(view.figure(layer, phase)), format="png"))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _rank(rank) -> str:
    return "" if rank is None else f" (r={rank})"


def numbers_html(n: dict) -> str:
    """The layer's numbers as a small HTML table (plain text inside: the browser test reads it)."""
    eps = plots._eps_label(n["epsilon"])
    head = (
        f"<b>layer {n['layer']}</b>, {html.escape(n['phase'])} tokens: {n['tokens']} tokens, D_FF {n['width']}<br>"
        f"<span class='caprese-sparsity'>fraction |Z| ≤ ε={eps}: {_fmt(n['sparsity'])}</span>; "
        f"median |Z| {_fmt(n['median_abs_z'], 5)}"
    )
    rows = "".join(
        f"<tr><td>{d['density']:g}</td><td>{_fmt(d['topk_energy_kept'])}</td><td>{_fmt(d['griffin_overlap'])}</td>"
        f"<td>{_fmt(d['error_topk'])}</td><td>{_fmt(d['error_best_rank'])}{_rank(d['best_rank'])}</td></tr>"
        for d in n["densities"]
    )
    table = (
        "<table cellpadding='2' style='font-size:12px'>"
        "<tr><th>density</th><th>top-k energy</th><th>GRIFFIN overlap</th><th>error top-k</th>"
        f"<th>error + best rank</th></tr>{rows}</table>"
    )
    return f"<div style='font-size:13px;line-height:1.4'>{head}{table}</div>"


class LayerExplorer:
    """The widget tree and its callbacks; `widget` is what a notebook displays."""

    def __init__(self, source):
        import ipywidgets as widgets  # the ui extra; IPython only inside a notebook

        self.view = as_view(source)
        layers = self.view.layers
        self._png: dict[tuple, bytes] = {}
        self.layer = widgets.SelectionSlider(
            options=layers, value=layers[0], description="Layer", continuous_update=False
        )
        self.compare = widgets.Dropdown(
            options=[("none", NO_LAYER)] + [(f"layer {i}", i) for i in layers], value=NO_LAYER, description="Compare"
        )
        self.phase = widgets.ToggleButtons(options=list(plots.PHASES[::-1]), value="generated", description="Tokens")
        self.epsilon = widgets.Dropdown(
            options=[(plots._eps_label(e), e) for e in self.view.epsilons],
            value=self.view.default_epsilon,
            description="ε",
        )
        self.save = widgets.Button(description="Save PNG + PDF", icon="download")
        self.status = widgets.HTML()
        for w, name in (
            (self.layer, "layer"),
            (self.compare, "compare"),
            (self.phase, "phase"),
            (self.epsilon, "epsilon"),
            (self.save, "export"),
            (self.status, "status"),
        ):
            w.add_class(f"caprese-{name}")
        self.panels = [self._panel(widgets, slot) for slot in ("a", "b")]
        summary = self.view.summary
        header = widgets.HTML(
            f"<b>{html.escape(str(summary.get('model', '')))}</b> on {html.escape(str(summary.get('data', '')))}: "
            f"{summary.get('samples', '?')} samples, {summary.get('generated_tokens', '?')} generated tokens, "
            f"layers {layers[0]}–{layers[-1]}"
            + (f" · {html.escape(str(self.view.folder))}" if self.view.folder else "")
        )
        controls = widgets.VBox(
            [
                widgets.HBox([self.layer, self.compare]),
                widgets.HBox([self.phase, self.epsilon]),
                widgets.HBox([self.save, self.status]),
            ]
        )
        self.widget = widgets.VBox([header, controls, widgets.HBox([p[0] for p in self.panels])])
        self.widget.add_class("caprese-explorer")
        for control in (self.layer, self.compare, self.phase, self.epsilon):
            control.observe(self.redraw, names="value")
        self.save.on_click(self.export)
        self.redraw()

    def _panel(self, widgets, slot: str):
        numbers = widgets.HTML()
        image = widgets.Image(format="png", layout=widgets.Layout(width=FIGURE_WIDTH))
        numbers.add_class("caprese-numbers")
        image.add_class("caprese-figure")
        box = widgets.VBox([numbers, image])
        box.add_class(f"caprese-panel-{slot}")
        return box, numbers, image

    def png(self, layer: int, phase: str, epsilon: float) -> bytes:
        key = (layer, phase, epsilon)
        if key not in self._png:
            self._png[key] = plots.figure_png(self.view.figure(layer, phase, epsilon))
        return self._png[key]

    def shown(self) -> list[int]:
        return [self.layer.value] + ([self.compare.value] if self.compare.value != NO_LAYER else [])

    def redraw(self, change=None) -> None:
        phase, epsilon = self.phase.value, self.epsilon.value
        shown = self.shown()
        for (box, numbers, image), layer in zip(self.panels, shown + [None]):
            box.layout.display = None if layer is not None else "none"
            if layer is None:
                continue
            numbers.value = numbers_html(self.view.numbers(layer, phase, epsilon))
            image.value = self.png(layer, phase, epsilon)

    def export(self, button=None) -> None:
        try:
            paths = [self.view.export(layer, self.phase.value, self.epsilon.value) for layer in self.shown()]
        except Exception as error:  # shown in the widget, not lost in the kernel log
            self.status.value = f"<span style='color:#b00'>{html.escape(str(error))}</span>"
            return
        self.status.value = "saved " + ", ".join(html.escape(f"{p['png'].with_suffix('')}.png/.pdf") for p in paths)


def layer_explorer(source):
    """The explorer widget for a diagnose folder, a `run_diagnostics` result or a DiagnosticsView."""
    return LayerExplorer(source).widget
