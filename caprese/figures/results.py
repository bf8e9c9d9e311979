"""Finished runs, read back from `runs/<sweep>/<run-id>/metrics.json` (or from a collected
`runs/<sweep>/results.csv` when the run folders are gone), and the configuration each one measured.

A run's `metrics.json` keeps its nested shape here (per-level accuracy, per-layer errors and
singular-value lists are awkward as flat CSV columns); `caprese collect` and this loader agree on
which runs are done because both ask `RunFolder.status()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import CapreseError
from ..io import read_json
from ..sweep.collect import BOOKKEEPING
from ..sweep.layout import DAMAGED, DONE, FAILED, INCOMPLETE, run_folders
from .style import method_name, stage_name

STAGE_ORDER = ("none", "closed_form", "layerwise", "e2e")
# the evaluation a number came from: only runs evaluated alike are compared or averaged together
EVALUATION_KEYS = ("model", "task", "eval_samples", "eval_seed", "max_new_tokens")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _layers_text(layers: Any) -> str:
    if isinstance(layers, (list, tuple)):
        return "+".join(str(layer) for layer in layers)
    return str(layers)


@dataclass(frozen=True, order=True)
class Configuration:
    """What a run measured, without its seed: runs that differ only by seed are averaged."""

    model: str
    task: str
    method: str
    sparsity: float | None  # None for dense
    layers: str | None  # None for dense
    stage: str  # none | closed_form | layerwise | e2e
    rank: int  # 0 without a Caprese path
    samples: int | None  # distillation samples; None without a Caprese path
    kind: str = "caprese"  # caprese (x L R) | lora (the eq-11 baseline); caprese without a path
    reselect_every: int = 0  # GRIFFIN's reselection period ρ (0: never)
    lora_scope: str = ""  # kept | full for the LoRA baseline; "" otherwise

    @property
    def is_dense(self) -> bool:
        return self.method == "dense"

    @property
    def is_caprese(self) -> bool:
        return self.stage != "none" and self.rank > 0

    @property
    def density(self) -> float:
        return round(1.0 - (self.sparsity or 0.0), 10)  # 1 - 0.8 is 0.19999999999999996

    def without_caprese(self) -> Configuration:
        return replace(self, stage="none", rank=0, samples=None, kind="caprese", lora_scope="")

    def sort_key(self) -> tuple:
        stage = STAGE_ORDER.index(self.stage) if self.stage in STAGE_ORDER else len(STAGE_ORDER)
        rho = self.reselect_every or float("inf")  # never reselecting first
        return (
            self.model,
            self.task,
            not self.is_dense,
            self.method,
            self.sparsity or 0.0,
            self.layers or "",
            -rho,
            stage,
            self.kind,
            self.lora_scope,
            self.rank,
            self.samples or 0,
        )

    def describe(self, fields: Iterable[str] = ("method", "sparsity", "layers", "caprese", "rank", "samples")) -> str:
        """A label naming the given parts, e.g. 'GRIFFIN 50% first_half + Caprese r16 E2E'."""
        fields = set(fields)
        if self.is_dense:
            return "dense" + (f" ({self.model})" if "model" in fields else "")
        parts = [method_name(self.method)] if "method" in fields else []
        if "sparsity" in fields and self.sparsity is not None:
            parts.append(f"{self.sparsity:.0%}")
        if "layers" in fields and self.layers:
            parts.append(self.layers)
        if self.reselect_every:  # always named: ρ changes what the method is
            parts.append(f"ρ={self.reselect_every}")
        if "model" in fields:
            parts.append(f"({self.model})")
        if self.is_caprese and "caprese" in fields:
            rank = f" r{self.rank}" if "rank" in fields else ""
            path = "Caprese"
            if self.kind == "lora":
                path = "LoRA full (matched)" if self.lora_scope == "full" else "LoRA (matched)"
            parts.append(f"+ {path}{rank} {stage_name(self.stage)}")
            if "samples" in fields and self.samples is not None:
                parts.append(f"n={self.samples}")
        return " ".join(parts) if parts else method_name(self.method)


def labels(configurations: Sequence[Configuration], *, omit: Iterable[str] = ()) -> dict[Configuration, str]:
    """Short labels: only the parts that differ between the (non-dense) configurations drawn together."""
    omit = set(omit)
    methods = [c for c in configurations if not c.is_dense]
    varying = {"caprese", "rank", "method"}  # a label always names its method and its Caprese path
    for name in ("model", "method", "sparsity", "layers", "samples"):
        values = {getattr(c, name) for c in methods if name != "samples" or c.is_caprese}
        if len(values) > 1:
            varying.add(name)
    return {config: config.describe(varying - omit) for config in configurations}


def common_description(configurations: Sequence[Configuration]) -> str:
    """What all drawn configurations share, for the caption: 'toy-math · sparsity 50% · layers first_half'."""
    methods = [c for c in configurations if not c.is_dense] or list(configurations)
    parts = []
    for name, show in (
        ("model", str),
        ("sparsity", lambda v: f"sparsity {v:.0%}"),
        ("layers", lambda v: f"layers {v}"),
        ("samples", lambda v: f"{v} distillation samples"),
    ):
        pool = [c for c in methods if name != "samples" or c.is_caprese]
        values = {getattr(c, name) for c in pool}
        if len(values) == 1 and None not in values:
            parts.append(show(values.pop()))
    return " · ".join(parts)


@dataclass(frozen=True)
class Run:
    """One finished run: the sweep it belongs to and its metrics.json, nested as written."""

    sweep: str
    run_id: str
    metrics: dict[str, Any] = field(hash=False, compare=False)

    @property
    def config(self) -> dict[str, Any]:
        config = self.metrics.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def name(self) -> str:
        return f"{self.sweep}/{self.run_id}"

    def get(self, dotted: str, default: Any = None) -> Any:
        value: Any = self.metrics
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value

    def number(self, dotted: str) -> float | None:
        return _number(self.get(dotted))

    @property
    def configuration(self) -> Configuration:
        c = self.config
        method = str(c.get("method", self.get("params.method", "dense"))).lower()
        stage = str(c.get("stage", "none"))
        rank = int(_number(c.get("rank")) or 0)
        dense = method == "dense"
        caprese = stage != "none" and rank > 0
        return Configuration(
            model=str(c.get("model", "")),
            task=str(c.get("task", self.get("task", ""))),
            method=method,
            sparsity=None if dense else _number(c.get("sparsity")),
            layers=None if dense else _layers_text(c.get("layers", "all")),
            stage=stage if caprese else "none",
            rank=rank if caprese else 0,
            samples=int(_number(c.get("samples")) or 0) if caprese else None,
            kind=str(c.get("kind", "caprese")) if caprese else "caprese",
            reselect_every=0 if dense else int(_number(c.get("reselect_every")) or 0),
            lora_scope=str(c.get("lora_scope", "kept")) if caprese and c.get("kind") == "lora" else "",
        )

    @property
    def evaluation(self) -> tuple:
        return tuple(str(self.config.get(key, "")) for key in EVALUATION_KEYS)

    @property
    def accuracy(self) -> float | None:
        return self.number("math.accuracy")

    def mean_ffn_error(self, path: str) -> float | None:
        """Relative FFN error averaged over the layers the method touched; `path` is 'method' or 'caprese'."""
        errors = self.get("ffn_error")
        if not isinstance(errors, dict):
            return None
        values = [
            _number(layer.get(path, {}).get("relative_l2")) for layer in errors.values() if isinstance(layer, dict)
        ]
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None


@dataclass
class Results:
    """Every finished run under a runs folder, by sweep."""

    runs_dir: Path
    sweeps: dict[str, list[Run]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # sweep -> status -> runs
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    """(sweep/run-id, status, why) of every run folder not drawn from: damaged, failed or incomplete."""

    @property
    def runs(self) -> list[Run]:
        return [run for runs in self.sweeps.values() for run in runs]

    def first_sweep(
        self, names: Sequence[str], keep: Callable[[Run], bool] = lambda run: True
    ) -> tuple[str, list[Run]] | None:
        """The first of `names` holding finished runs that pass `keep` (e.g. the full grid before the small one)."""
        for name in names:
            runs = [run for run in self.sweeps.get(name, []) if keep(run)]
            if runs:
                return name, runs
        return None

    def largest_sweep(self, keep: Callable[[Run], bool]) -> tuple[str, list[Run]] | None:
        """The sweep with the most runs passing `keep` (ties: by name)."""
        found = [(name, [run for run in runs if keep(run)]) for name, runs in sorted(self.sweeps.items())]
        found = [item for item in found if item[1]]
        return max(found, key=lambda item: len(item[1])) if found else None

    def where(self, keep: Callable[[Run], bool]) -> list[Run]:
        return [run for run in self.runs if keep(run)]

    def reference(self, like: Run, configuration: Configuration) -> list[Run]:
        """Runs of `configuration` evaluated like `like` (same model, task and evaluation settings), any sweep."""
        return [run for run in self.runs if run.configuration == configuration and run.evaluation == like.evaluation]

    def dense_reference(self, like: Run) -> list[Run]:
        c = like.configuration
        return self.reference(like, Configuration(c.model, c.task, "dense", None, None, "none", 0, None))

    def unfinished(self, name: str) -> str:
        """Why a sweep folder gave nothing: 'no finished runs in runs/rank (2 failed, 1 incomplete)'."""
        counts = {state: n for state, n in self.counts.get(name, {}).items() if state != DONE}
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"no finished runs in {self.runs_dir / name}" + (f" ({states})" if states else "")

    def source(self, name: str, runs: Sequence[Run]) -> str:
        return f"{self.runs_dir / name} ({len(runs)} runs)"


def unflatten(row: dict[str, Any]) -> dict[str, Any]:
    """A row of results.csv back into metrics.json's nested shape (lists were stored as JSON text)."""
    nested: dict[str, Any] = {}
    for column, value in row.items():
        if column in BOOKKEEPING or value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        key = column[len("metrics.") :] if column.startswith("metrics.") else column
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        target = nested
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                break
        else:
            target[leaf] = value
    return nested


def _runs_from_csv(sweep: str, path: Path) -> list[Run]:
    frame = pd.read_csv(path)
    rows = frame.to_dict(orient="records")
    return [
        Run(sweep, str(row.get("run_id", i)), unflatten(row))
        for i, row in enumerate(rows)
        if row.get("status", DONE) == DONE
    ]


def load_results(runs_dir: str | Path) -> Results:
    """Read every finished run of every sweep under `runs_dir` (one folder per sweep)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise CapreseError(
            f"runs folder {str(runs_dir)!r} does not exist (run `caprese sweep ablations/<name>.yaml` first)"
        )
    sweeps: dict[str, list[Run]] = {}
    counts: dict[str, dict[str, int]] = {}
    skipped: list[tuple[str, str, str]] = []
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        runs, status = [], {}
        for run in run_folders(folder):
            state, reason = run.state()  # the same decision as the sweep's and collect's
            metrics = None
            if state == DONE:
                try:
                    metrics = read_json(run.metrics)
                except (OSError, ValueError) as err:  # changed since state() looked
                    state, reason = DAMAGED, f"metrics.json is unreadable ({type(err).__name__})"
            status[state] = status.get(state, 0) + 1
            if state == DONE:
                runs.append(Run(folder.name, run.run_id, metrics))
            else:
                skipped.append((f"{folder.name}/{run.run_id}", state, reason or _why_not_done(run, state)))
        if not status and (folder / "results.csv").is_file():
            # the run folders are gone but the collected table is here (e.g. copied from a cluster)
            runs = _runs_from_csv(folder.name, folder / "results.csv")
            status = {DONE: len(runs)}
        if status:
            sweeps[folder.name] = runs
            counts[folder.name] = status
    return Results(runs_dir, sweeps, counts, skipped)


def _why_not_done(run, state: str) -> str:
    if state == FAILED:
        try:
            info = read_json(run.error)
            return str(info.get("error", "")) if isinstance(info, dict) else "error.json is not a mapping"
        except (OSError, ValueError):
            return "error.json is unreadable"
    if state == INCOMPLETE:
        return "started but not finished (interrupted or still running)"
    return state
