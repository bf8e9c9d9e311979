"""Sweep specs: a YAML file naming a notebook, its base parameters and the values to sweep.

    notebook: ../notebooks/experiment.ipynb   # relative to this file
    timeout: 1800                             # seconds per run (optional)
    base:   {model: toy-math, sparsity: 0.5}  # defaults of every point
    grid:   {rank: [8, 32], seed: [0, 1]}     # cartesian product: 4 points
    zip:    {method: [griffin, cats], layers: [first_half, all]}  # vary together: one axis
    full:   {grid: {rank: [8, 16, 32, 64]}}   # the paper-sized variant, chosen with --full
    resources: {cpus: 4, gpus: 1}             # per point, for --launcher ray|slurm (optional)

Grid and zip values override base. `zip:` is one mapping (one group of lists that vary
together) or a list of such mappings. `full:` may hold `base` (merged into base), `grid` and
`zip` (each replaces its small counterpart) and `timeout`; a full sweep runs into
`runs/<name>-full/` so its results never mix with the small sweep's. `resources:` is what one
point needs on a cluster (`cpus`, `gpus`; Ray accepts fractional GPUs, Slurm whole ones); the
local launcher runs `--workers` points at once and ignores it.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SweepSpecError, raise_if_any

SPEC_KEYS = ("name", "description", "notebook", "timeout", "resources", "base", "grid", "zip", "full")
FULL_KEYS = ("base", "grid", "zip", "timeout", "resources")
RESOURCE_KEYS = ("cpus", "gpus")
RUNNER_PARAMETERS = ("out_dir",)  # set by the runner for every run, never by a spec

MAX_RUN_ID = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Point:
    """One run of a sweep."""

    run_id: str
    params: dict[str, Any]  # every parameter the spec sets (base + this point's values), not out_dir
    varying: dict[str, Any]  # this point's grid/zip values: what its run id spells


@dataclass(frozen=True)
class Resources:
    """What one point needs on a cluster (Ray task / Slurm job): CPU cores and GPUs."""

    cpus: float = 1
    gpus: float = 0


@dataclass
class SweepSpec:
    name: str
    notebook: Path
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    zips: list[dict[str, list]] = field(default_factory=list)
    timeout: float | None = None
    path: Path | None = None
    description: str = ""
    full: bool = False
    resources: Resources = field(default_factory=Resources)

    @property
    def label(self) -> str:
        """How error lines name this spec."""
        return str(self.path) if self.path is not None else f"sweep {self.name!r}"

    def varying_keys(self) -> list[str]:
        return list(self.grid) + [key for group in self.zips for key in group]

    def axes(self) -> list[list[dict[str, Any]]]:
        """One axis per grid key and per zip group; each axis is the list of its settings."""
        axes = [[{key: value} for value in values] for key, values in self.grid.items()]
        for group in self.zips:
            keys = list(group)
            axes.append([dict(zip(keys, values)) for values in zip(*group.values())])
        return axes

    def points(self) -> list[Point]:
        """The cartesian product of the axes (the last axis varies fastest), with unique run ids."""
        points = []
        for settings in itertools.product(*self.axes()):
            varying: dict[str, Any] = {}
            for setting in settings:
                varying.update(setting)
            points.append(Point(run_id(varying), {**self.base, **varying}, varying))
        seen: dict[str, int] = {}
        for point in points:
            seen[point.run_id] = seen.get(point.run_id, 0) + 1
        raise_if_any(
            [
                f"{self.label}: {count} points get run id {rid!r}; list each value once"
                for rid, count in seen.items()
                if count > 1
            ]
        )
        return points


# ---------------------------------------------------------------------------------- run ids


def format_value(value: Any) -> str:
    """A value as written in a run id (and as matched by --only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def run_id(varying: dict[str, Any]) -> str:
    """`rank=64_sparsity=0.5`: readable and stable; a short hash is appended when characters had
    to be replaced or the id was shortened, so that two different points never share an id."""
    if not varying:
        return "default"
    raw = "_".join(f"{key}={format_value(value)}" for key, value in varying.items())
    safe = _UNSAFE.sub("-", raw)
    if safe == raw and len(raw) <= MAX_RUN_ID:
        return raw
    blob = json.dumps(varying, sort_keys=True, default=str).encode()
    digest = hashlib.sha1(blob).hexdigest()[:8]
    return f"{safe[: MAX_RUN_ID - len(digest) - 1]}-{digest}"


# ---------------------------------------------------------------------------------- loading


def load_spec(path: str | Path, *, full: bool = False) -> SweepSpec:
    """Read a YAML sweep spec; structural problems are all reported at once (SweepSpecError)."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"sweep spec {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SweepSpecError(f"{path}: invalid YAML{where}: {problem}") from None
    return spec_from_dict(data, path=path, full=full)


def spec_from_dict(data: Any, *, path: Path | None = None, full: bool = False) -> SweepSpec:
    label = str(path) if path is not None else "sweep spec"
    if not isinstance(data, dict):
        raise SweepSpecError(f"{label}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    problems = _unknown_keys(label, "", data, SPEC_KEYS)

    name = data.get("name", path.stem if path is not None else None)
    if not isinstance(name, str) or not _SWEEP_NAME.match(name):
        problems.append(f"{label}: name {name!r} must be letters, digits, '.', '_' or '-' (it names runs/<name>/)")
        name = "sweep"

    notebook = data.get("notebook")
    if not isinstance(notebook, str) or not notebook:
        problems.append(f"{label}: notebook: must give the notebook to run (a path relative to the spec)")
        notebook = "."
    notebook_path = Path(notebook)
    if not notebook_path.is_absolute() and path is not None:
        notebook_path = Path(os.path.normpath(path.parent / notebook_path))  # ablations/../x -> x

    base = _mapping(label, "base", data.get("base"), problems)
    grid = _grid(label, "grid", data.get("grid"), problems)
    zips = _zips(label, "zip", data.get("zip"), problems)
    timeout = _timeout(label, "timeout", data.get("timeout"), problems)
    resources = _resources(label, "resources", data.get("resources"), Resources(), problems)

    if full:
        variant = data.get("full")
        if not isinstance(variant, dict):
            problems.append(f"{label}: --full asks for the spec's full: section, but it has none")
            variant = {}
        problems += _unknown_keys(label, "full.", variant, FULL_KEYS)
        base = {**base, **_mapping(label, "full.base", variant.get("base"), problems)}
        if "grid" in variant:
            grid = _grid(label, "full.grid", variant["grid"], problems)
        if "zip" in variant:
            zips = _zips(label, "full.zip", variant["zip"], problems)
        if "timeout" in variant:
            timeout = _timeout(label, "full.timeout", variant["timeout"], problems)
        if "resources" in variant:
            resources = _resources(label, "full.resources", variant["resources"], resources, problems)
        name = f"{name}-full"
    elif "full" in data and not isinstance(data["full"], dict):
        problems.append(f"{label}: full: must be a mapping with keys {', '.join(FULL_KEYS)}")

    problems += _overlaps(label, grid, zips)
    for key in RUNNER_PARAMETERS:
        if key in base or key in grid or any(key in group for group in zips):
            problems.append(f"{label}: {key!r} is set by the runner for each run (runs/<sweep>/<run-id>/); remove it")
    raise_if_any(problems)
    return SweepSpec(
        name=name,
        notebook=notebook_path,
        base=base,
        grid=grid,
        zips=zips,
        timeout=timeout,
        path=path,
        description=str(data.get("description") or ""),
        full=full,
        resources=resources,
    )


def _unknown_keys(label: str, prefix: str, data: dict, allowed: tuple[str, ...]) -> list[str]:
    lines = []
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{label}: unknown key {prefix}{key!r}{hint} (allowed: {', '.join(allowed)})")
    return lines


def _mapping(label: str, section: str, value: Any, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{label}: {section}: must be a mapping of parameter: value, got {value!r}")
        return {}
    bad = [key for key in value if not isinstance(key, str)]
    problems += [f"{label}: {section}: parameter name {key!r} must be text" for key in bad]
    return {key: v for key, v in value.items() if isinstance(key, str)}


def _value_list(label: str, where: str, values: Any, problems: list[str]) -> list | None:
    if not isinstance(values, list) or not values:
        problems.append(
            f"{label}: {where} must be a non-empty list of values, got {values!r} (write [{values!r}] for one value)"
        )
        return None
    return values


def _grid(label: str, section: str, value: Any, problems: list[str]) -> dict[str, list]:
    grid = {}
    for key, values in _mapping(label, section, value, problems).items():
        checked = _value_list(label, f"{section}.{key}", values, problems)
        if checked is not None:
            grid[key] = checked
    return grid


def _zips(label: str, section: str, value: Any, problems: list[str]) -> list[dict[str, list]]:
    if value is None:
        return []
    groups = value if isinstance(value, list) else [value]
    zips = []
    for i, group in enumerate(groups):
        where = section if not isinstance(value, list) else f"{section}[{i}]"
        lists = _grid(label, where, group, problems)
        lengths = {key: len(values) for key, values in lists.items()}
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{key}: {n}" for key, n in lengths.items())
            problems.append(f"{label}: {where}: zipped lists must have the same length ({sizes})")
        elif lists:
            zips.append(lists)
    return zips


def _timeout(label: str, section: str, value: Any, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        problems.append(f"{label}: {section}: must be a positive number of seconds, got {value!r}")
        return None
    return float(value)


def _resources(label: str, section: str, value: Any, default: Resources, problems: list[str]) -> Resources:
    if value is None:
        return default
    if not isinstance(value, dict):
        problems.append(f"{label}: {section}: must be a mapping like {{cpus: 4, gpus: 1}}, got {value!r}")
        return default
    problems += _unknown_keys(label, f"{section}.", value, RESOURCE_KEYS)
    amounts = {}
    for key, low in (("cpus", 0.0), ("gpus", -1e-12)):
        if key not in value:
            continue
        amount = value[key]
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > low:
            wanted = "a positive number" if key == "cpus" else "a number >= 0 (fractions share a GPU under Ray)"
            problems.append(f"{label}: {section}.{key}: must be {wanted}, got {amount!r}")
            continue
        amounts[key] = amount
    return Resources(**{**default.__dict__, **amounts})


def _overlaps(label: str, grid: dict, zips: list[dict]) -> list[str]:
    owner: dict[str, str] = {key: "grid" for key in grid}
    lines = []
    for i, group in enumerate(zips):
        for key in group:
            if key in owner:
                lines.append(
                    f"{label}: parameter {key!r} is swept twice (in {owner[key]} and zip group {i}); sweep it in one place"
                )
            owner[key] = f"zip group {i}"
    return lines


# ---------------------------------------------------------------------------------- --only


def select(points: list[Point], only: list[str] | tuple[str, ...]) -> list[Point]:
    """Keep the points matching every `KEY=VALUE` filter (repeat a key to allow several values)."""
    if not only:
        return points
    wanted: dict[str, list[tuple[Any, str]]] = {}
    problems = []
    for item in only:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--only {item!r}: write KEY=VALUE, e.g. --only rank=64")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        wanted.setdefault(key, []).append((value, text.strip()))
    known = list(dict.fromkeys(key for point in points for key in point.params))
    for key in wanted:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"--only {key}=...: no point sets {key!r}{hint} (keys: {', '.join(known)})")
    raise_if_any(problems)

    def matches(point: Point) -> bool:
        return all(
            any(point.params[key] == value or format_value(point.params[key]) == text for value, text in options)
            for key, options in wanted.items()
        )

    kept = [point for point in points if matches(point)]
    if not kept:
        takes = "; ".join(
            f"{key} takes {', '.join(dict.fromkeys(format_value(p.params[key]) for p in points))}" for key in wanted
        )
        raise SweepSpecError(f"--only {' '.join(only)}: no point matches ({takes})")
    return kept
