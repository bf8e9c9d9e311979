"""A finished diagnostics run as the explorer reads it: from memory or from its folder on disk.

    view = DiagnosticsView.load("runs/diag")          # a `caprese diagnose --out` folder: no compute
    view = DiagnosticsView.from_result(result)        # right after `run_diagnostics`
    view.numbers(layer=3, phase="generated")          # the layer's numbers (what the explorer prints)
    view.figure(layer=3, phase="generated")           # its figure (`plots.layer_panel`)

Every number comes from the run's streaming statistics (`state.pt`) and error rows
(`errors.json`); nothing is recomputed from activations.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CapreseError
from ..stats import PHASES, FFNStatistics
from ..stats.base import phase_index
from . import plots

FOLDER_FILES = ("summary.json", "state.pt", "errors.json")
DEFAULT_EPSILON = 2.0**-6  # the ε whose fraction |Z| ≤ ε the explorer shows first (if the run has it)


@dataclass
class DiagnosticsView:
    stats: FFNStatistics
    errors: list[dict[str, Any]]  # error rows, each with a "phase" ("generated" where a folder predates it)
    summary: dict[str, Any]
    folder: Path | None = None

    @classmethod
    def from_result(cls, result, folder: str | Path | None = None) -> DiagnosticsView:
        return cls(result.stats, result.all_error_rows(), result.summary(), Path(folder) if folder else None)

    @classmethod
    def load(cls, folder: str | Path) -> DiagnosticsView:
        """Read a finished `caprese diagnose` folder (summary.json, state.pt, errors.json)."""
        folder = Path(folder).expanduser()
        missing = [name for name in FOLDER_FILES if not (folder / name).is_file()]
        if missing:
            raise CapreseError(
                f"{str(folder)!r} is not a finished diagnose folder: no {', '.join(missing)} "
                f"(write one with: caprese diagnose --model M --data D --out {folder})"
            )
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        stats = FFNStatistics.from_state_dict(state["stats"])
        errors = [
            {**row, "phase": row.get("phase", "generated")} for row in json.loads((folder / "errors.json").read_text())
        ]
        return cls(stats, errors, json.loads((folder / "summary.json").read_text()), folder)

    # -- what there is ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.stats.layers)

    @property
    def epsilons(self) -> tuple[float, ...]:
        return self.stats.config.epsilons

    @property
    def default_epsilon(self) -> float:
        eps = [e for e in self.epsilons if e > 0] or list(self.epsilons)
        return min(eps, key=lambda e: abs(math.log2(e / DEFAULT_EPSILON)) if e > 0 else math.inf)

    def check(self, layer: int, phase: str, epsilon: float | None = None) -> None:
        self.stats.layer(layer)
        phase_index(phase)
        if epsilon is not None and epsilon not in self.epsilons:
            raise CapreseError(
                f"ε={epsilon!r} was not recorded (recorded: {', '.join(f'{e:g}' for e in self.epsilons)})"
            )

    # -- one layer -------------------------------------------------------------------------------
    def error_rows(self, layer: int, phase: str) -> list[dict[str, Any]]:
        return [r for r in self.errors if r["layer"] == layer and r["phase"] == phase]

    def numbers(self, layer: int, phase: str, epsilon: float | None = None) -> dict[str, Any]:
        """The layer's numbers in `phase`: tokens, fraction |Z| ≤ ε, |Z| median, top-k energy kept,
        GRIFFIN overlap and relative error per density (top-k alone and with the best rank)."""
        epsilon = self.default_epsilon if epsilon is None else epsilon
        self.check(layer, phase, epsilon)
        stats = self.stats.layer(layer)
        densities = list(self.stats.config.densities)
        errors = self.error_rows(layer, phase)
        topk = stats.topk.kept_fractions(phase) if stats.topk is not None else [math.nan] * len(densities)
        overlap = stats.flocking.overlaps(phase) if stats.flocking is not None else [math.nan] * len(densities)
        per_density = []
        for i, d in enumerate(densities):
            at_d = {r["rank"]: r["relative_l2"] for r in errors if r["density"] == d}
            ranked = {rank: e for rank, e in at_d.items() if rank > 0}
            best = min(ranked, key=ranked.get) if ranked else None
            per_density.append(
                {
                    "density": d,
                    "topk_energy_kept": topk[i],
                    "griffin_overlap": overlap[i],
                    "error_topk": at_d.get(0, math.nan),
                    "best_rank": best,
                    "error_best_rank": ranked[best] if best is not None else math.nan,
                }
            )
        return {
            "layer": layer,
            "phase": phase,
            "tokens": stats.z.total(phase) // stats.width,
            "width": stats.width,
            "epsilon": epsilon,
            "sparsity": stats.z.fractions(phase)[self.epsilons.index(epsilon)],
            "median_abs_z": stats.z.quantile(0.5, phase),
            "densities": per_density,
        }

    def figure(self, layer: int, phase: str, epsilon: float | None = None):
        self.check(layer, phase, epsilon)
        return plots.layer_panel(
            self.stats, self.errors, layer, phase, epsilon=self.default_epsilon if epsilon is None else epsilon
        )

    def export(
        self, layer: int, phase: str, epsilon: float | None = None, out: str | Path | None = None
    ) -> dict[str, Path]:
        """The layer's figure as PNG and PDF under `out` (default: <folder>/explorer/)."""
        if out is None:
            if self.folder is None:
                raise CapreseError("this view has no folder to export into: pass out=")
            out = self.folder / "explorer"
        return plots.save_figure(self.figure(layer, phase, epsilon), Path(out) / f"layer{layer}_{phase}")


__all__ = ["DiagnosticsView", "PHASES"]
