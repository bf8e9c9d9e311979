"""The paper's figures and tables, re-drawn from finished sweep runs (`caprese figures`).

    from caprese.figures import render_all
    report = render_all("runs", "figures")      # every figure the data allows, PNG + PDF + data CSV
    print(report.summary())                     # one line per figure: its files, or what to run

Modules: `style` (one look), `results` (runs read back from runs/<sweep>/<run-id>/metrics.json),
one module per family of figures (`error` fig 2, `accuracy` fig 5 and the rank / sample-count
ablations, `coverage` figs 3, 4/7, `parameters` fig 6, `spectra` fig 8), `tables` (tables 1, 4,
5) and `render` (the list of all of them, `render_all`, figures/README.md).
"""

from .common import Context, Made, MissingData
from .render import ITEMS, RenderReport, render_all
from .results import Configuration, Results, Run, load_results

__all__ = [
    "ITEMS",
    "Configuration",
    "Context",
    "Made",
    "MissingData",
    "RenderReport",
    "Results",
    "Run",
    "load_results",
    "render_all",
]
