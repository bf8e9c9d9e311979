"""What every streaming statistic shares: phases, token phase ids, and state_dict / merge.

A statistic's memory never depends on the number of tokens it has seen: it holds fixed-size
accumulators (counts and sums) and nothing else, so results of batches, runs or workers combine
exactly with `merge`, and `state_dict()` round-trips through `torch.save` or JSON (`to_jsonable`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CapreseError
from ..phase import Phase

PHASES: tuple[str, ...] = ("prompt", "generated")
"""Every statistic is split by phase: prompt tokens (full FFN) and generated tokens (sparse FFN)."""
IGNORED = len(PHASES)
"""Phase id of padding tokens: counted nowhere."""


def phase_ids(phase: Phase) -> torch.Tensor:
    """(B, S) int64 per token: 0 prompt, 1 generated, `IGNORED` for padding."""
    ids = torch.full(phase.valid.shape, IGNORED, dtype=torch.long, device=phase.valid.device)
    ids[phase.prompt_valid] = PHASES.index("prompt")
    ids[phase.generated] = PHASES.index("generated")
    return ids


def phase_index(name: str) -> int:
    if name not in PHASES:
        raise CapreseError(f"phase {name!r} is unknown (choose from: {', '.join(PHASES)})")
    return PHASES.index(name)


class StreamingStatistic:
    """Base class: subclasses name their hyperparameters (`config`) and accumulators (`ACCUMULATORS`).

    Accumulators are tensors on the CPU; `merge` adds them (override `_merge` for other rules).
    """

    ACCUMULATORS: tuple[str, ...] = ()

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, *args, **kwargs) -> None:
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"type": type(self).__name__, "config": self.config()}
        state.update({name: getattr(self, name).clone() for name in self.ACCUMULATORS})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_compatible(state.get("type"), state.get("config"))
        for name in self.ACCUMULATORS:
            current = getattr(self, name)
            value = torch.as_tensor(state[name], dtype=current.dtype)
            if value.shape != current.shape:
                raise CapreseError(
                    f"{type(self).__name__}.{name}: state has shape {tuple(value.shape)}, expected {tuple(current.shape)}"
                )
            setattr(self, name, value.clone())

    def merge(self, other: StreamingStatistic) -> StreamingStatistic:
        """Add `other`'s counts into this one (same type and configuration required); returns self."""
        self._check_compatible(type(other).__name__, other.config())
        for name in self.ACCUMULATORS:
            setattr(self, name, self._merge(name, getattr(self, name), getattr(other, name)))
        return self

    def _merge(self, name: str, mine: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
        return mine + theirs

    def _check_compatible(self, kind, config) -> None:
        if kind != type(self).__name__:
            raise CapreseError(f"cannot combine a {kind} state with a {type(self).__name__}")
        if _canonical(config) != _canonical(self.config()):
            raise CapreseError(f"{type(self).__name__}: configurations differ ({config} vs {self.config()})")

    def memory_bytes(self) -> int:
        """Bytes held in tensors by this statistic (accumulators and any transient state)."""
        return sum(v.numel() * v.element_size() for v in vars(self).values() if isinstance(v, torch.Tensor))


def _canonical(value):
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def to_jsonable(state: Any) -> Any:
    """A state_dict with tensors turned into lists (for JSON files)."""
    if isinstance(state, torch.Tensor):
        return state.tolist()
    if isinstance(state, dict):
        return {k: to_jsonable(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [to_jsonable(v) for v in state]
    return state
