"""Adam with a linear schedule and warm-up (the paper's table 8: 2% warm-up; docs/method.md eq 7)."""

from __future__ import annotations

import math

import torch

from ..errors import CapreseError
from ..registry import check_range


def adam_with_linear_schedule(params, lr: float, total_steps: int, warmup_fraction: float = 0.02):
    """(optimizer, scheduler): linear warm-up over warmup_fraction of the steps, then linear decay to 0."""
    check_range("learning rate", lr, 0.0, math.inf, low_open=True, high_open=True)
    check_range("warm-up fraction", warmup_fraction, 0.0, 1.0, high_open=True)
    if total_steps < 1:
        raise CapreseError(f"total_steps {total_steps!r} must be >= 1")
    optimizer = torch.optim.Adam(params, lr=lr)
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
