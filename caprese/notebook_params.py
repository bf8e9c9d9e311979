"""A notebook's `parameters` cell, read without running anything: names, defaults and the kinds of
value each accepts. Shared by sweep spec checks (`caprese.sweep.params`) and the diagnostics
notebook runner (`caprese.diagnostics.notebook`), so both refuse the same unknown names the same way.

papermill's `inspect_notebook` lists the assignments of the cell tagged `parameters`. Its parser
misses lines whose annotation it cannot read (`budget: int | None = None`), so the cell is also
read with `ast`; names found by either count. A parameter's type comes from its annotation when
there is one, else from its default value; `x = None` without an annotation accepts anything
(annotate it, e.g. `layers: Optional[list] = None`, to have it checked).

A notebook whose parameters are a config dataclass says so in its metadata
(`"caprese": {"parameters": "caprese.experiment:ExperimentConfig"}`); its parameters, their
kinds and defaults are then the dataclass fields, not re-derived from the cell's source.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# nbformat imports jsonschema, whose format checkers build rfc3987-syntax's 38 Lark grammars at import
# when that optional package is installed (jupyter-events pulls it in): ~2 s in every sweep worker and
# `caprese sweep`. Notebook schemas check no IRI formats, so unless jsonschema is already loaded this
# process goes without that package (jsonschema skips the two "iri" checks when it cannot import it).
if "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)

import nbformat  # noqa: E402 - after the line above
import papermill
from papermill.translators import PythonTranslator

from .errors import CapreseError

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
    if not notebook.is_file():
        raise CapreseError(f"notebook {str(notebook)!r} does not exist")
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as err:  # nbformat raises several types for a bad file
        raise CapreseError(
            f"notebook {str(notebook)!r} cannot be read: {type(err).__name__}: {err}".splitlines()[0]
        ) from None
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return nb, cell
    raise CapreseError(
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
            found[node.target.id] = (
                ast.get_source_segment(source, node.annotation) or "",
                ast.get_source_segment(source, node.value) or "",
            )
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ("", ast.get_source_segment(source, node.value) or "")
    return found


_KIND_OF_TYPE = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict", type(None): "None"}


def dataclass_parameters(declared: str) -> dict[str, NotebookParameter]:
    """The parameters of a notebook whose metadata names its config dataclass ("module:Class"):
    names, kinds, defaults and help read from the dataclass fields (the notebook's cell repeats
    them exactly; tests/test_experiment.py fails on any drift). A nested config that is seen
    flat (`parameter_fields()` and `parameter_defaults()`, as `ExperimentConfig`) lists its flat names."""
    module_name, _, class_name = declared.partition(":")
    try:
        config_class = getattr(importlib.import_module(module_name), class_name)
        if hasattr(config_class, "parameter_fields"):
            typed = config_class.parameter_fields()
            defaults = config_class.parameter_defaults()
        else:
            hints = typing.get_type_hints(config_class)
            typed = {f.name: (f, hints[f.name]) for f in dataclasses.fields(config_class)}
            defaults = {f.name: _field_default(f) for f in dataclasses.fields(config_class)}
    except (ImportError, AttributeError) as err:
        raise CapreseError(f"notebook parameters {declared!r} do not resolve: {err}") from None
    parameters = {}
    for name, (f, hint) in typed.items():
        kinds = frozenset(_KIND_OF_TYPE.get(t) for t in (typing.get_args(hint) or (hint,)))
        parameters[name] = NotebookParameter(
            name,
            None if None in kinds else kinds,
            repr(defaults[name]),
            str(hint).replace("<class '", "").replace("'>", ""),
            f.metadata.get("help", ""),
        )
    return parameters


def _field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def notebook_parameters(notebook: str | Path) -> dict[str, NotebookParameter]:
    """The parameters of a notebook's `parameters` cell; raises if the notebook has no such cell.
    A notebook whose metadata declares `caprese.parameters` gets them from that dataclass."""
    notebook = Path(notebook)
    nb, cell = _parameters_cell(notebook)
    declared = nb.metadata.get("caprese", {}).get("parameters")
    if declared:
        return dataclass_parameters(declared)
    try:
        inspected = papermill.inspect_notebook(str(notebook))
    except ValueError:  # no kernelspec in the notebook's metadata: read the cell as Python
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


def unknown_parameter(name: str, parameters, where: str, *, hidden: tuple[str, ...] = ()) -> str | None:
    """None when `name` is a parameter; else one line naming it, a did-you-mean and the parameters."""
    if name in parameters:
        return None
    close = difflib.get_close_matches(name, list(parameters), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(p for p in parameters if p not in hidden)
    return f"{name!r} is not a parameter of {where}{hint} (parameters: {listed})"
