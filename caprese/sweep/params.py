"""The check of a sweep against its notebook's parameters, before anything runs: unknown keys,
values of the wrong kind, then every point's values as the run would check them.

The parameters come from `caprese.notebook_params`: for the experiment notebook, the fields of
`caprese.experiment.ExperimentConfig` its metadata declares (kinds, defaults and help); for
another notebook, its `parameters` cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from .. import notebook_params
from ..errors import CapreseError
from ..experiment import PARAMETERS, ExperimentConfig
from ..notebook_params import KINDS, NotebookParameter, unknown_parameter, value_kind
from .errors import SweepSpecError, raise_if_any
from .spec import RUNNER_PARAMETERS, SweepSpec


def notebook_parameters(notebook: str | Path) -> dict[str, NotebookParameter]:
    """The parameters of a notebook's `parameters` cell; SweepSpecError if it has none."""
    try:
        return notebook_params.notebook_parameters(notebook)
    except CapreseError as err:
        raise SweepSpecError(str(err)) from None


def _plain_value_problem(value: Any) -> str | None:
    """Sweep values travel as JSON-like literals: reject YAML's dates, sets and the like."""
    kind = value_kind(value)
    if kind not in KINDS:
        return f"is a {kind}; use int, float, str, bool, null, a list or a mapping (quote it to make it text)"
    if kind == "list":
        return next((p for p in map(_plain_value_problem, value) if p), None)
    if kind == "dict":
        return next((p for p in map(_plain_value_problem, value.values()) if p), None)
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _type_hint(value: Any, parameter: NotebookParameter) -> str:
    if isinstance(value, str) and parameter.kinds and "float" in parameter.kinds:
        try:
            float(value)
            return f" (YAML reads {value} as text; write it with a dot, e.g. 1.0e-3)"
        except ValueError:
            pass
    return ""


def check_values(spec: SweepSpec, parameters: dict[str, NotebookParameter]) -> list[str]:
    """One line per unknown key and per value of the wrong type, naming key, value and notebook."""
    nb = str(spec.notebook)
    sections: list[tuple[str, str, list]] = [(f"base.{k}", k, [v]) for k, v in spec.base.items()]
    sections += [(f"grid.{k}", k, vs) for k, vs in spec.grid.items()]
    sections += [(f"zip.{k}", k, vs) for group in spec.zips for k, vs in group.items()]
    lines = []
    for where, key, values in sections:
        unknown = unknown_parameter(key, parameters, nb, hidden=RUNNER_PARAMETERS)
        if unknown:
            lines.append(f"{spec.label}: {where}: {unknown}")
            continue
        parameter = parameters[key]
        for value in values:
            problem = _plain_value_problem(value)
            if problem:
                lines.append(f"{spec.label}: {where}: value {value!r} {problem}")
            elif not parameter.accepts(value):
                declared = (
                    f"annotated {parameter.annotation}" if parameter.annotation else f"default {parameter.default}"
                )
                lines.append(
                    f"{spec.label}: {where}: value {value!r} is {_a(value_kind(value))}, but {key!r} in {nb} "
                    f"takes {parameter.expects()} ({declared}){_type_hint(value, parameter)}"
                )
    return lines


def check_point_values(spec: SweepSpec, parameters: dict[str, NotebookParameter]) -> list[str]:
    """The values of every point, checked as the run would check them, before any kernel starts
    (e.g. `sparsity: 1.0`, `stage: e2e` with `rank: 0`, `device: cuda` without a GPU, a model name
    with a typo). Applies to notebooks whose parameters are `caprese.experiment.ExperimentConfig`'s;
    one line per distinct problem, naming the first point that has it."""
    from ..models.loading import resolve_source  # torch: this module is imported without it

    if not set(parameters) <= set(PARAMETERS):
        return []  # another notebook: only its parameters' types are known
    lines: dict[str, str] = {}
    models: dict[str, str] = {}
    for point in spec.points():
        problem = ""
        try:
            ExperimentConfig.from_params({k: v for k, v in point.params.items() if k not in RUNNER_PARAMETERS})
            model = point.params.get("model")
            if isinstance(model, str):
                if model not in models:
                    try:
                        resolve_source(model)  # built-in names and folders; a hub id is looked up when it runs
                        models[model] = ""
                    except CapreseError as err:
                        models[model] = str(err)
                problem = models[model]
        except CapreseError as err:
            problem = str(err)
        except (TypeError, ValueError) as err:
            problem = f"{type(err).__name__}: {err}"
        if problem and problem not in lines:
            lines[problem] = f"{spec.label}: point {point.run_id}: {problem}"
    return list(lines.values())


def check_kernel(kernel: str) -> list[str]:
    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        return [
            f"Jupyter kernel {kernel!r} is not installed; register it with: "
            f"python -m ipykernel install --sys-prefix --name {kernel}"
        ]
    return []


def check_spec(spec: SweepSpec, *, kernel: str | None = None) -> dict[str, NotebookParameter]:
    """Check a spec against its notebook (and kernel); raise SweepSpecError with every problem."""
    parameters = notebook_parameters(spec.notebook)
    lines = []
    for name in RUNNER_PARAMETERS:
        if name not in parameters:
            lines.append(
                f"notebook {str(spec.notebook)!r} has no parameter {name!r}; the runner passes each run's folder as {name}"
            )
    lines += check_values(spec, parameters)
    if not lines:  # values of the right types: check them as the runs would
        lines += check_point_values(spec, parameters)
    if kernel is not None:
        lines += check_kernel(kernel)
    raise_if_any(lines)
    return parameters
