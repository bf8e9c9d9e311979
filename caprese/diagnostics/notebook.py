"""Run notebooks/layerwise_diagnostics.ipynb headless (papermill) and check its parameters.

Papermill injects any name it is given, even one the notebook never reads, so a misspelt
parameter would silently run the defaults. `check_notebook_parameters` reads the notebook's
`parameters` cell with `papermill.inspect_notebook` and rejects unknown names first. Inside the
notebook, `notebook_config` checks each value's type, so a value of the wrong type fails on
the first cell with one line instead of deep inside a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import papermill

from ..errors import CapreseError
from ..notebook_params import NotebookParameter, unknown_parameter
from ..notebook_params import notebook_parameters as read_parameters
from .pipeline import DiagnoseConfig
from .view import FOLDER_FILES

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "layerwise_diagnostics.ipynb"
KERNEL = "caprese"


def notebook_parameters(notebook: str | Path = NOTEBOOK) -> dict[str, NotebookParameter]:
    """The notebook's parameters and their defaults, read without running anything."""
    return read_parameters(notebook)


def check_notebook_parameters(parameters: dict[str, Any], notebook: str | Path = NOTEBOOK) -> None:
    """Refuse a name the notebook's parameters cell does not have (papermill would inject it silently)."""
    known = notebook_parameters(notebook)
    for name in parameters:
        unknown = unknown_parameter(name, known, f"notebook {Path(notebook).name}")
        if unknown:
            raise CapreseError(unknown)


def execute_notebook(
    parameters: dict[str, Any],
    output: str | Path,
    *,
    notebook: str | Path = NOTEBOOK,
    kernel: str = KERNEL,
    timeout: int = 1800,
) -> Path:
    """Check the parameters, then execute the notebook with papermill into `output` (an .ipynb path)."""
    check_notebook_parameters(parameters, notebook)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=parameters,
        kernel_name=kernel,
        execution_timeout=timeout,
        progress_bar=False,
    )
    return output


def _check_type(name: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise CapreseError(f"parameter {name}={value!r} must be {what}")


def _check_list(name: str, value: Any, kinds: tuple[type, ...], what: str, *, allow_none: bool) -> tuple | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise CapreseError(
            f"parameter {name}={value!r} must be a non-empty list of {what}" + (" or None" if allow_none else "")
        )
    for item in value:
        _check_type(name, item, kinds, f"a list of {what}")
    return tuple(value)


def notebook_config(
    *,
    model: Any,
    data: Any,
    samples: Any,
    layers: Any,
    densities: Any,
    ranks: Any,
    out: Any,
    max_new_tokens: Any = 96,
    batch_size: Any = 8,
    results: Any = None,
) -> DiagnoseConfig:
    """Type-check the notebook's parameters (JSON-able values) and build the run's config.

    `results`, when given, must be a finished diagnose folder (checked here, before anything runs)."""
    for name, value in (("model", model), ("data", data), ("out", out)):
        _check_type(name, value, (str,), "a string")
    if results is not None:
        _check_type("results", results, (str,), "a diagnose folder (string) or None")
        missing = [name for name in FOLDER_FILES if not (Path(results).expanduser() / name).is_file()]
        if missing:
            raise CapreseError(
                f"parameter results={results!r} is not a finished diagnose folder (no {', '.join(missing)})"
            )
    for name, value in (("samples", samples), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        _check_type(name, value, (int,), "an integer")
    layers = _check_list("layers", layers, (int,), "layer indices", allow_none=True)
    densities = _check_list("densities", densities, (int, float), "numbers in (0, 1]", allow_none=False)
    ranks = _check_list("ranks", ranks, (int,), "integers", allow_none=True)
    return DiagnoseConfig(
        samples=samples,
        layers=layers,
        densities=densities,
        ranks=ranks,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
