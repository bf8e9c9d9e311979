"""Interactive layer selection for notebooks: one layer's histograms and error curves on demand.

The widget only chooses what to draw; every figure comes from `caprese.diagnostics.plots`.
"""

from __future__ import annotations

from . import plots


def show_layer(result, layer: int) -> None:
    """Display layer `layer`'s |Z| / |σ(gate)| histograms and its figure-2 curves."""
    from IPython.display import display

    display(plots.layer_histograms(result.stats, layer))
    display(plots.error_vs_density(result.error_rows(), layer=layer))


def layer_explorer(result):
    """A dropdown of the traced layers above an output area that redraws the chosen layer."""
    import ipywidgets as widgets

    layers = result.layers
    picker = widgets.Dropdown(options=[(f"layer {i}", i) for i in layers], value=layers[0], description="Layer")
    output = widgets.Output()

    def redraw(change=None) -> None:
        output.clear_output(wait=True)
        with output:
            show_layer(result, picker.value)

    picker.observe(redraw, names="value")
    redraw()
    return widgets.VBox([picker, output])
