"""Checks of command-line and notebook options that need no model: whole numbers and ranges.

The other kinds of input have their one checking place next to the code that reads them:
model source / dtype / device in `caprese.models.loading` (`check_model_options`), adapters in
`caprese.distill.adapter_io`, data files in `caprese.io.read_jsonl`, output locations in
`caprese.io.check_output_dir` / `check_output_file`, distillation plans in
`caprese.distill.api.check_distill_inputs`, sweep values in `caprese.sweep.params.check_point_values`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .errors import CapreseError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int_at_least(name: str, value: Any, low: int) -> int:
    """`value` must be a whole number >= low; `name` is how the user wrote it (e.g. --repeats)."""
    if not _is_int(value) or value < low:
        raise CapreseError(f"{name} {value!r} must be an integer >= {low}")
    return value


def check_ints_at_least(options: dict[str, Any], low: int) -> None:
    for name, value in options.items():
        check_int_at_least(name, value, low)


def check_finite(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A real number (not NaN / inf) within optional bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CapreseError(f"{name} {value!r} must be a finite number")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise CapreseError(
            f"{name} {value!r} is out of range (allowed: {'(' if low_open or low is None else '['}{lo}, "
            f"{hi}{')' if high_open or high is None else ']'})"
        )
    return float(value)


def check_rank_fits(name: str, rank: int, dims: Iterable[tuple[str, int]], *, default: int | None = None) -> None:
    """A low-rank path's rank r must be 1..D for every shape it is used with."""
    check_int_at_least(name, rank, 1)
    for label, hidden in dims:
        if rank > hidden:
            note = " (the default)" if default is not None and rank == default else ""
            raise CapreseError(
                f"{name} {rank}{note} is out of range: it exceeds D={hidden} of {label} (allowed: 1..{hidden})"
            )


def check_layers_syntax(layers: Any) -> None:
    """'all', 'first_half', indices or a comma-separated string of them; the indices are checked
    against the model once it is loaded (`caprese.methods.resolve_layers`)."""
    from .methods import resolve_layers  # torch: this module stays importable without it (config checks)

    if isinstance(layers, str) and layers.strip().lower().replace("-", "_") in ("all", "first_half", "firsthalf"):
        return
    resolve_layers(layers, 2**31)


def check_method_values(method: Any, sparsity: Any, layers: Any) -> None:
    """A registered method (did-you-mean), its sparsity in [0, 1) and the layers' syntax."""
    from .methods import METHODS
    from .methods.base import check_sparsity

    if not isinstance(method, str):
        raise CapreseError(f"method {method!r} must be a name (choose from: {', '.join(METHODS.names())})")
    METHODS.get(method)
    if method.lower() != "dense":
        check_sparsity(sparsity)
    check_layers_syntax(layers)
