"""Divergence handling shared by every training loop: keep the factors of the last finite epoch and
fail with one error type (`NonFiniteLoss`, a CapreseError) that carries what was trained."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..errors import CapreseError


class NonFiniteLoss(CapreseError):
    """Training diverged; the modules hold the last finite epoch's factors and `.result` what was trained."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


class Rollback:
    """Snapshots of `modules` (layer -> nn.Module) taken at each finished epoch."""

    def __init__(self, modules: dict[int, nn.Module]):
        self.modules = modules
        self.keep()

    def keep(self) -> None:
        self.last_good = {layer: copy.deepcopy(m.state_dict()) for layer, m in self.modules.items()}

    def fail(self, what: str, lr: float, result: Any = None) -> None:
        """Restore the last finite epoch's factors and raise NonFiniteLoss."""
        for layer, state in self.last_good.items():
            self.modules[layer].load_state_dict(state)
        raise NonFiniteLoss(f"{what}; kept the factors of the last finite epoch (lower lr={lr})", result)
