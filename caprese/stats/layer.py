"""All FFN statistics of one layer, and of a whole model, fed by trace callbacks.

`LayerStatistics` receives a layer's Z (and σ(x W_g)) for each forward together with the phase
of the forward and keeps, per phase: the |Z| histogram with exact fractions |Z| ≤ ε, the
|σ(gate)| histogram, top-k energy and GRIFFIN flocking at each density. `FFNStatistics` holds one
per traced layer and is what `collect_statistics` fills.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..arch import ffn_blocks
from ..errors import CapreseError
from ..phase import Phase
from ..trace import check_layers
from .base import IGNORED, PHASES, phase_ids
from .flocking import FlockingOverlap
from .histogram import MagnitudeHistogram
from .topk import TopKEnergy, check_densities, keep_count, sort_magnitudes

# ε on the histogram's bin edges are read for free (exact); powers of two are edges
DEFAULT_EPSILONS = (0.0,) + tuple(2.0**k for k in range(-12, 5))  # 0, 2^-12 .. 2^4
DEFAULT_DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5)
DEFAULT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


@dataclass
class StatsConfig:
    epsilons: tuple[float, ...] = field(
        default=DEFAULT_EPSILONS, metadata={"help": "thresholds ε for fraction |Z| ≤ ε"}
    )
    densities: tuple[float, ...] = field(default=DEFAULT_DENSITIES, metadata={"help": "top-k densities d = k / D_FF"})
    quantiles: tuple[float, ...] = field(
        default=DEFAULT_QUANTILES, metadata={"help": "quantiles reported in summaries"}
    )
    gate: bool = field(default=True, metadata={"help": "histogram of |σ(x W_g)| (CATS thresholds)"})
    topk_energy: bool = field(
        default=True, metadata={"help": "fraction of ‖Z‖² kept by per-token top-k (one sort per token)"}
    )
    flocking: bool = field(
        default=True, metadata={"help": "overlap of each token's top-k with its prompt's GRIFFIN set"}
    )

    def __post_init__(self):
        self.epsilons = tuple(float(e) for e in self.epsilons)
        self.densities = check_densities(self.densities)
        self.quantiles = tuple(float(q) for q in self.quantiles)

    @classmethod
    def sparsity_only(cls, **overrides) -> StatsConfig:
        """The cheap set meant to stay on during every forward: fractions |Z| ≤ ε and the |Z|
        histogram (one integer pass pair and one bincount per Z; no sort, no gate)."""
        return cls(**{"gate": False, "topk_energy": False, "flocking": False, **overrides})


class LayerStatistics:
    """One layer's statistics, split by phase."""

    def __init__(self, layer: int, width: int, config: StatsConfig):
        self.layer, self.width, self.config = layer, int(width), config
        self.z = MagnitudeHistogram(config.epsilons)
        self.gate = MagnitudeHistogram() if config.gate else None
        self.topk = TopKEnergy(config.densities, width) if config.topk_energy else None
        self.flocking = FlockingOverlap(config.densities, width) if config.flocking else None

    def parts(self) -> dict[str, Any]:
        return {
            name: part
            for name, part in (("z", self.z), ("gate", self.gate), ("topk", self.topk), ("flocking", self.flocking))
            if part is not None
        }

    # -- updates (from trace callbacks) ------------------------------------------------------
    def observe_z(self, z: torch.Tensor, ids: torch.Tensor, prefill: bool) -> None:
        """Z of one forward (B, S, W) with per-token phase ids (B, S)."""
        if z.shape[-1] != self.width:
            raise CapreseError(f"layer {self.layer}: Z has width {z.shape[-1]}, expected D_FF={self.width}")
        self.z.update(z, ids)
        if self.topk is None and self.flocking is None:
            return
        flat, flat_ids = z.reshape(-1, self.width), ids.reshape(-1)
        rows = torch.arange(z.shape[0], device=z.device)[:, None].expand(ids.shape).reshape(-1)
        keep = flat_ids < IGNORED
        if not bool(keep.all()):
            flat, flat_ids, rows = flat[keep], flat_ids[keep], rows[keep]
        # one partial sort (up to the largest k) serves top-k energy and flocking
        magnitudes, order = sort_magnitudes(flat, max(keep_count(d, self.width) for d in self.config.densities))
        if self.topk is not None:
            self.topk.update_sorted(magnitudes, flat_ids, flat.double().square().sum(-1))
        if self.flocking is not None:
            if prefill:
                self.flocking.select(z, ids == PHASES.index("prompt"))
            self.flocking.update_sorted(order, rows, flat_ids)

    def observe_gate(self, gate_act: torch.Tensor, ids: torch.Tensor) -> None:
        if self.gate is not None:
            self.gate.update(gate_act, ids)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "width": self.width, **{n: p.state_dict() for n, p in self.parts().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self.parts().items():
            if name not in state:
                raise CapreseError(f"layer {self.layer}: state has no {name!r} statistics")
            part.load_state_dict(state[name])

    def merge(self, other: LayerStatistics) -> LayerStatistics:
        if other.width != self.width or set(other.parts()) != set(self.parts()):
            raise CapreseError(f"layer {self.layer}: cannot merge statistics of a different shape or selection")
        for name, part in self.parts().items():
            part.merge(other.parts()[name])
        return self

    def memory_bytes(self) -> int:
        return sum(part.memory_bytes() for part in self.parts().values())

    # -- read-outs ---------------------------------------------------------------------------
    def summary(self, phase: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "layer": self.layer,
            "phase": phase,
            "tokens": self.z.total(phase) // self.width,
            "fraction_le_eps": dict(zip(map(_key, self.config.epsilons), self.z.fractions(phase))),
            "abs_z_quantiles": dict(
                zip(map(_key, self.config.quantiles), self.z.quantiles(self.config.quantiles, phase))
            ),
        }
        if self.gate is not None:
            out["abs_gate_quantiles"] = dict(
                zip(map(_key, self.config.quantiles), self.gate.quantiles(self.config.quantiles, phase))
            )
        if self.topk is not None:
            out["topk_energy_kept"] = dict(zip(map(_key, self.config.densities), self.topk.kept_fractions(phase)))
        if self.flocking is not None:
            out["griffin_overlap"] = dict(zip(map(_key, self.config.densities), self.flocking.overlaps(phase)))
        return out


def _key(value: float) -> str:
    return f"{value:.6g}"


class FFNStatistics:
    """Per-layer statistics for the traced layers of one model."""

    def __init__(self, widths: dict[int, int], config: StatsConfig | None = None):
        self.config = config or StatsConfig()
        self.layers: dict[int, LayerStatistics] = {
            int(layer): LayerStatistics(int(layer), width, self.config) for layer, width in sorted(widths.items())
        }
        self._phase: Phase | None = None  # the forward whose phase ids are cached (kept alive: no id reuse)
        self._ids: torch.Tensor | None = None

    @classmethod
    def for_model(
        cls, model, layers: Iterable[int] | None = None, config: StatsConfig | None = None, blocks=None
    ) -> FFNStatistics:
        blocks = blocks if blocks is not None else ffn_blocks(model)
        chosen = check_layers(layers, len(blocks))
        return cls({layer: blocks[layer].intermediate_size for layer in chosen}, config)

    @property
    def points(self) -> tuple[str, ...]:
        return ("gate_act", "z") if self.config.gate else ("z",)

    def layer(self, index: int) -> LayerStatistics:
        if index not in self.layers:
            raise CapreseError(f"layer {index} was not traced (traced: {list(self.layers)})")
        return self.layers[index]

    # -- trace wiring ------------------------------------------------------------------------
    def _phase_ids(self, tracker) -> tuple[torch.Tensor, bool]:
        phase: Phase = tracker.phase()
        if phase is not self._phase:  # once per forward (a tracker makes a new Phase each), shared by every layer
            self._phase, self._ids = phase, phase_ids(phase)
        return self._ids, phase.prefill

    def callbacks(self, tracker) -> dict:
        """Per-point trace callbacks that read the phase of the forward in flight from `tracker`."""

        def on_z(layer: int, z: torch.Tensor) -> None:
            ids, prefill = self._phase_ids(tracker)
            self.layers[layer].observe_z(z, ids, prefill)

        def on_gate(layer: int, gate_act: torch.Tensor) -> None:
            ids, _ = self._phase_ids(tracker)
            self.layers[layer].observe_gate(gate_act, ids)

        return {"z": on_z, "gate_act": on_gate} if self.config.gate else {"z": on_z}

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "layers": {layer: s.state_dict() for layer, s in self.layers.items()}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FFNStatistics:
        config = StatsConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
        layers = {int(layer): int(s["width"]) for layer, s in state["layers"].items()}
        stats = cls(layers, config)
        stats.load_state_dict(state)
        return stats

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layers = {int(k): v for k, v in state["layers"].items()}
        if set(layers) != set(self.layers):
            raise CapreseError(f"state covers layers {sorted(layers)}, these statistics {sorted(self.layers)}")
        for layer, stats in self.layers.items():
            stats.load_state_dict(layers[layer])

    def merge(self, other: FFNStatistics) -> FFNStatistics:
        if set(other.layers) != set(self.layers):
            raise CapreseError(f"cannot merge statistics of layers {sorted(other.layers)} into {sorted(self.layers)}")
        for layer, stats in self.layers.items():
            stats.merge(other.layers[layer])
        return self

    def memory_bytes(self) -> int:
        """Bytes held in tensors, transient per-sequence state included."""
        extra = 0 if self._ids is None else self._ids.numel() * self._ids.element_size()
        return extra + sum(s.memory_bytes() for s in self.layers.values())

    # -- read-outs ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "layers": [self.layers[layer].summary(phase) for layer in self.layers for phase in PHASES],
        }

    SUMMARY_GROUPS = {
        "fraction_le_eps": "frac_le_",
        "abs_z_quantiles": "abs_z_q",
        "abs_gate_quantiles": "abs_gate_q",
        "topk_energy_kept": "topk_kept_d",
        "griffin_overlap": "griffin_overlap_d",
    }

    def rows(self, groups: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Flat rows (one per layer and phase) for CSV; `groups` picks summary groups (default all)."""
        groups = list(self.SUMMARY_GROUPS) if groups is None else list(groups)
        for group in groups:
            if group not in self.SUMMARY_GROUPS:
                raise CapreseError(
                    f"statistics group {group!r} is unknown (choose from: {', '.join(self.SUMMARY_GROUPS)})"
                )
        rows = []
        for entry in self.summary()["layers"]:
            row = {"layer": entry["layer"], "phase": entry["phase"], "tokens": entry["tokens"]}
            for group in groups:
                for key, value in entry.get(group, {}).items():
                    row[f"{self.SUMMARY_GROUPS[group]}{key}"] = value
            rows.append(row)
        return rows
