"""A notebook's parameters and the check of a sweep against them, before anything runs.

papermill's `inspect_notebook` lists the assignments of the cell tagged `parameters`. Its
parser misses lines whose annotation it cannot read (`budget: int | None = None`), so the cell
is also read with `ast`; names found by either count. A parameter's type comes from its
annotation when there is one, else from its default value; `x = None` without an annotation
accepts anything (annotate it, e.g. `layers: Optional[list] = None`, to have it checked).
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SweepSpecError, raise_if_any
from .spec import RUNNER_PARAMETERS, SweepSpec

KINDS = ("int", "float", "str", "bool", "list", "dict", "None")

_NAMED_KINDS: dict[str, frozenset[str] | None] = {
    "int": frozenset({"int"}),
    "float": frozenset({"float"}),
    "str": frozenset({"str"}),
    "bool": frozenset({"bool"}),
    "list": frozenset({"list"}),
    "List": frozenset({"list"}),
    "tuple": frozenset({"list"}),
    "Tuple": frozenset({"list"}),
    "Sequence": frozenset({"list"}),
    "dict": frozenset({"dict"}),
    "Dict": frozenset({"dict"}),
    "Mapping": frozenset({"dict"}),
    "None": frozenset({"None"}),
    "NoneType": frozenset({"None"}),
    "Any": None,
}


@dataclass(frozen=True)
class NotebookParameter:
    name: str
    kinds: frozenset[str] | None  # the value kinds it accepts; None: unknown, anything goes
    default: str  # the default as written in the cell
    annotation: str = ""
    help: str = ""

    def expects(self) -> str:
        if self.kinds is None:
            return "anything"
        return " or ".join(k for k in KINDS if k in self.kinds)

    def accepts(self, value: Any) -> bool:
        if self.kinds is None:
            return True
        kind = value_kind(value)
        return kind in self.kinds or (kind == "int" and "float" in self.kinds)


def value_kind(value: Any) -> str:
    """The parameter kind of a YAML value (bool before int: True is an int in Python)."""
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "None"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def kinds_from_annotation(text: str) -> frozenset[str] | None:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    return _annotation_kinds(node)


def _annotation_kinds(node: ast.AST) -> frozenset[str] | None:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return frozenset({"None"})
        if isinstance(node.value, str):  # a quoted annotation
            return kinds_from_annotation(node.value)
        return None
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = node.id if isinstance(node, ast.Name) else node.attr
        return _NAMED_KINDS.get(name)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union(_annotation_kinds(node.left), _annotation_kinds(node.right))
    if isinstance(node, ast.Subscript):
        outer = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Optional":
            return _union(_annotation_kinds(inner[0]), frozenset({"None"}))
        if outer == "Union":
            kinds: frozenset[str] | None = frozenset()
            for element in inner:
                kinds = _union(kinds, _annotation_kinds(element))
            return kinds
        if outer == "Literal":
            values = [e.value for e in inner if isinstance(e, ast.Constant)]
            return frozenset(value_kind(v) for v in values) if len(values) == len(inner) else None
        return _NAMED_KINDS.get(outer)  # list[int] -> list (elements are not checked)
    return None


def _union(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def kinds_from_default(text: str) -> frozenset[str] | None:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None  # an expression: its type is unknown until it runs
    kind = value_kind(value)
    return None if kind == "None" or kind not in KINDS else frozenset({kind})


def _parameters_cell(notebook: Path):
    import nbformat

    if not notebook.is_file():
        raise SweepSpecError(f"notebook {str(notebook)!r} does not exist")
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as err:  # nbformat raises several types for a bad file
        raise SweepSpecError(f"notebook {str(notebook)!r} cannot be read: {type(err).__name__}: {err}".splitlines()[0]) from None
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise SweepSpecError(
        f"notebook {str(notebook)!r} has no cell tagged 'parameters'; tag the cell of defaults "
        "(Jupyter: View > Cell toolbar > Tags) so a sweep can set them"
    )


def _ast_assignments(source: str) -> dict[str, tuple[str, str]]:
    """name -> (annotation, default) for each top-level `name = value` / `name: T = value`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found[node.target.id] = (ast.get_source_segment(source, node.annotation) or "", ast.get_source_segment(source, node.value) or "")
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ("", ast.get_source_segment(source, node.value) or "")
    return found


def notebook_parameters(notebook: str | Path) -> dict[str, NotebookParameter]:
    """The parameters of a notebook's `parameters` cell; raises if the notebook has no such cell."""
    import papermill

    notebook = Path(notebook)
    cell = _parameters_cell(notebook)
    try:
        inspected = papermill.inspect_notebook(str(notebook))
    except ValueError:  # no kernelspec in the notebook's metadata: read the cell as Python
        from papermill.translators import PythonTranslator

        inspected = {p.name: p._asdict() for p in PythonTranslator.inspect(cell)}
    assigned = _ast_assignments(cell.source)
    parameters = {}
    for name in list(inspected) + [n for n in assigned if n not in inspected]:
        info = inspected.get(name, {})
        annotation, default = assigned.get(name, ("", info.get("default", "")))
        if not annotation and info.get("inferred_type_name", "None") != "None":
            annotation = info["inferred_type_name"]
        kinds = kinds_from_annotation(annotation) if annotation else kinds_from_default(default)
        parameters[name] = NotebookParameter(name, kinds, default, annotation, info.get("help", ""))
    return parameters


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
        if key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(
                f"{spec.label}: {where}: {key!r} is not a parameter of {nb}{hint} "
                f"(parameters: {', '.join(p for p in parameters if p not in RUNNER_PARAMETERS)})"
            )
            continue
        parameter = parameters[key]
        for value in values:
            problem = _plain_value_problem(value)
            if problem:
                lines.append(f"{spec.label}: {where}: value {value!r} {problem}")
            elif not parameter.accepts(value):
                declared = f"annotated {parameter.annotation}" if parameter.annotation else f"default {parameter.default}"
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
    from dataclasses import fields

    from ..errors import CapreseError
    from ..experiment import ExperimentConfig
    from ..models.loading import resolve_source

    known = {f.name for f in fields(ExperimentConfig)}
    if not set(parameters) <= known:
        return []  # another notebook: only its parameters' types are known
    lines: dict[str, str] = {}
    models: dict[str, str] = {}
    for point in spec.points():
        problem = ""
        try:
            ExperimentConfig.from_params({k: v for k, v in point.params.items() if k not in RUNNER_PARAMETERS}).check()
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
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

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
            lines.append(f"notebook {str(spec.notebook)!r} has no parameter {name!r}; the runner passes each run's folder as {name}")
    lines += check_values(spec, parameters)
    if not lines:  # values of the right types: check them as the runs would
        lines += check_point_values(spec, parameters)
    if kernel is not None:
        lines += check_kernel(kernel)
    raise_if_any(lines)
    return parameters
