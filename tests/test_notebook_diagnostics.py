"""notebooks/layerwise_diagnostics.ipynb runs headless under papermill (kernel `caprese`) on
toy-math with small parameters and writes its figures; bad parameters fail with a clear message."""

import base64
from pathlib import Path

import nbformat
import papermill
import pytest

import caprese
from caprese.diagnostics.notebook import KERNEL, NOTEBOOK, check_notebook_parameters, execute_notebook
from caprese.errors import CapreseError

pytestmark = pytest.mark.integration  # executes the diagnostics notebook: make test runs it, make test-fast does not

PARAMETERS = [
    "model",
    "data",
    "samples",
    "layers",
    "densities",
    "ranks",
    "max_new_tokens",
    "batch_size",
    "out",
    "results",
]
TOY_MATH = Path(caprese.__file__).parent / "models" / "toy_math" / "model.safetensors"


def test_notebook_is_committed_without_outputs_and_has_one_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert nb.metadata.kernelspec.name == KERNEL
    assert list(papermill.inspect_notebook(str(NOTEBOOK))) == PARAMETERS


def test_unknown_parameter_fails_before_running_with_a_clear_message(tmp_path):
    with pytest.raises(
        CapreseError,
        match=r"'sample' is not a parameter of notebook layerwise_diagnostics.ipynb; did you mean 'samples'\?",
    ) as info:
        check_notebook_parameters({"samples": 2, "sample": 2})
    assert "\n" not in str(info.value) and "parameters: model, data, samples" in str(info.value)
    with pytest.raises(CapreseError, match="'rank' is not a parameter"):
        execute_notebook({"rank": [4]}, tmp_path / "unused.ipynb")  # rejected before any kernel starts
    assert not (tmp_path / "unused.ipynb").exists()


def _small_parameters(tmp_path):
    if TOY_MATH.exists():
        return {
            "model": "toy-math",
            "data": "toy-math",
            "samples": 6,
            "max_new_tokens": 48,
            "ranks": [4, 8, 16],
            "densities": [0.1, 0.3, 0.5],
        }
    # before the toy-math checkpoint exists, the same notebook runs on a tiny model folder
    import json

    from caprese.testing import save_tiny_model

    folder = save_tiny_model(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: {i} + {i}?"}) + "\n" for i in range(4)))
    return {
        "model": str(folder),
        "data": str(prompts),
        "samples": 4,
        "max_new_tokens": 8,
        "ranks": [2, 4],
        "densities": [0.1, 0.5],
    }


@pytest.mark.slow
def test_notebook_runs_headless_and_writes_its_figures(tmp_path):
    params = {**_small_parameters(tmp_path), "out": str(tmp_path / "out"), "batch_size": 4}
    executed = execute_notebook(params, tmp_path / "executed.ipynb", timeout=600)
    for figure in ("sparsity_vs_epsilon", "abs_z_quantiles", "error_vs_density"):
        assert (tmp_path / "out" / f"{figure}.png").stat().st_size > 0
        assert (tmp_path / "out" / f"{figure}.pdf").stat().st_size > 0
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    # every figure arrives as a PNG: none is shown as a Figure's text repr (what a kernel without
    # matplotlib's inline backend does with a plain Figure object)
    for o in outputs:
        text = "".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", ""))
        assert "<Figure size" not in text, text
    for o in images:
        assert base64.b64decode(o["data"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    # (text/plain of a widget is its truncated repr: the explorer's starts with its header)
    explorer = [o for o in widgets if "generated tokens, layers" in "".join(o["data"].get("text/plain", ""))]
    assert len(explorer) == 1, [o["data"].get("text/plain", "")[:200] for o in widgets]  # drawn in a browser: tests/ui
    assert nb.metadata.papermill.parameters["samples"] == params["samples"]


def test_the_explorers_figures_are_pngs_for_any_kernel(tmp_path):
    """A diagnostics Figure displays as image/png even where no matplotlib backend registered a
    formatter (IPython's own formatters, as in a fresh kernel), and the explorer sends PNG bytes."""
    from IPython.core.formatters import DisplayFormatter

    from caprese.diagnostics import plots

    fig = plots.error_vs_density([{"layer": 0, "rank": 0, "density": 0.1, "relative_l2": 0.3}])
    data, _ = DisplayFormatter().format(fig)
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_parameter_of_the_wrong_type_stops_the_notebook_with_one_line(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="parameter samples='4' must be an integer"):
        execute_notebook({"samples": "4", "out": str(tmp_path / "out")}, tmp_path / "executed.ipynb", timeout=300)
