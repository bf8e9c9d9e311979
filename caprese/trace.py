"""`Trace`: hooks on canonical FFN points of any adapter-supported model (baukit TraceDict style).

Points, in the order they fire inside one layer's FFN:

    ffn_in    the FFN module's input x                    (pre-hook on the module at the FFN path)
    gate_act  σ(x W_g), the activation module's output    (hook on the adapter's `act`); for a
              non-gated FFN the activation's output is Z itself
    z         Z, the input of down_proj                   (pre-hook on W_2)
    ffn_out   FF(x), the FFN module's output              (hook on the module at the FFN path)

Every location is resolved through `ffn_blocks`, so no family-specific path lives here. Only the
requested (layer, point) pairs get a hook; hooks only read (they return None), so the model's
outputs are bitwise unchanged. All handles are removed on exit, also after an exception, and a
nested trace removes only its own. By default nothing is kept (`retain=False`): values stream to
a callback, which is how statistics stay independent of the number of tokens.

`ffn_in`/`ffn_out` hook whatever module sits at the FFN path when the trace is entered (the
original FFN, or a caprese wrapper installed before), so they see what the decoder layer sees.
`gate_act`/`z` hook the original activation and W_2: a wrapper that computes through those modules
is seen, one that slices W_2 with `F.linear` is not, and one that runs both its sparse path and
the original module (prompt and generated tokens in one forward) fires them twice. Statistics of
the dense model are what `z`/`gate_act` are for; trace a method's effect with `ffn_in`/`ffn_out`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .arch import FFNBlock, ffn_blocks
from .errors import CapreseError
from .registry import Registry

POINTS: tuple[str, ...] = ("ffn_in", "gate_act", "z", "ffn_out")
"""Canonical trace points, in firing order within one layer."""

TRACE_POINTS = Registry("trace point")
TRACE_POINTS.register("ffn_in", "FFN input x (D)")
TRACE_POINTS.register("gate_act", "activation output σ(x W_g) (D_FF); Z itself for non-gated FFNs")
TRACE_POINTS.register("z", "intermediate activation Z, the input of down_proj (D_FF)")
TRACE_POINTS.register("ffn_out", "FFN output FF(x) (D)")

PointCallback = Callable[[int, torch.Tensor], None]
"""Per-point streaming callback: (layer index, detached tensor)."""
TraceCallback = Callable[[int, str, torch.Tensor], None]
"""Streaming callback for every point: (layer index, point name, detached tensor)."""


_LOCAL = threading.local()


@contextlib.contextmanager
def untraced():
    """Module calls inside this context are invisible to every Trace.

    Callbacks run inside it, so a callback that computes through the model's own modules (say
    FF̂ = down(top-k(Z)) to measure an error) does not feed its own values back into any trace.
    """
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


def tracing_suspended() -> bool:
    return getattr(_LOCAL, "depth", 0) > 0


class StopForward(Exception):
    """Raised by a `stop=True` trace once the last requested point ran; the trace swallows it."""

    def __init__(self, trace: Trace):
        super().__init__("forward stopped after the last traced layer")
        self.trace = trace


def check_points(points: Iterable[str]) -> tuple[str, ...]:
    """Canonical point names in firing order; a one-line did-you-mean error for unknown names."""
    wanted = {TRACE_POINTS.canonical(p) for p in points}
    if not wanted:
        raise CapreseError(f"a trace needs at least one point (choose from: {', '.join(POINTS)})")
    return tuple(p for p in POINTS if p in wanted)


def check_layers(layers: Iterable[int] | None, num_layers: int) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(num_layers))
    chosen = []
    for layer in layers:
        if isinstance(layer, bool) or not hasattr(layer, "__index__"):  # ints and numpy ints, not "1" or 1.0
            raise CapreseError(f"layer {layer!r} is not an integer (allowed: 0..{num_layers - 1})")
        layer = layer.__index__()
        if not 0 <= layer < num_layers:
            raise CapreseError(f"layer {layer} does not exist (allowed: 0..{num_layers - 1})")
        if layer not in chosen:
            chosen.append(layer)
    if not chosen:
        raise CapreseError(f"a trace needs at least one layer (allowed: 0..{num_layers - 1})")
    return tuple(sorted(chosen))


def _pre_hook_input(args, kwargs):
    """The module input a forward pre-hook sees: the first positional argument, else the first keyword."""
    return _first_tensor(args[0] if args else next(iter(kwargs.values()), None))


def _first_tensor(value):
    """A hook's tensor: the first positional input, or the first element of a tuple output."""
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if not isinstance(value, torch.Tensor):
        raise CapreseError(f"traced value is {type(value).__name__}, expected a tensor")
    return value


@dataclass(frozen=True)
class _Site:
    module: nn.Module
    pre: bool  # pre-hook (reads the input) or forward hook (reads the output)


def _site(block: FFNBlock, point: str) -> _Site:
    if point == "ffn_in":
        return _Site(block.installed(), pre=True)
    if point == "ffn_out":
        return _Site(block.installed(), pre=False)
    if point == "gate_act":
        return _Site(block.act, pre=False)
    return _Site(block.down, pre=True)  # z


def run_capturing(block: FFNBlock, point: str, fn: Callable[[], Any]) -> tuple[Any, torch.Tensor | None]:
    """(fn(), the value of `point` of `block` seen while fn ran): a one-shot private hook, removed
    before returning, that no `Trace` sees or suspends. The value is None unless the point's module
    ran exactly once inside fn (then a caller recomputes it from the layout's parts instead)."""
    site = _site(block, TRACE_POINTS.canonical(point))
    seen: list[torch.Tensor] = []

    if site.pre:
        handle = site.module.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(_pre_hook_input(args, kwargs).detach()), with_kwargs=True
        )
    else:
        handle = site.module.register_forward_hook(
            lambda module, args, output: seen.append(_first_tensor(output).detach())
        )
    try:
        result = fn()
    finally:
        handle.remove()
    return result, seen[0] if len(seen) == 1 else None


class Trace:
    """Context manager that hooks the requested FFN points of the requested layers.

    Args:
        model: any model `ffn_blocks` supports.
        points: names from `POINTS` (default: all, or the keys of a callback mapping).
        layers: layer indices (default: all).
        retain: keep the latest value of each (layer, point); read with `trace[layer, point]`.
        callback: `fn(layer, point, tensor)` for every point, or `{point: fn(layer, tensor)}`.
        stop: raise `StopForward` once the last requested point of the last requested layer
            ran, skipping the rest of the model (calibration needs no LM head); the trace
            swallows it, so `with Trace(..., stop=True): model(x)` simply ends early.
        clone: retain copies instead of views (for values a later op could change in place).
        blocks: precomputed `ffn_blocks(model)` (saves resolving them again).
    """

    def __init__(
        self,
        model: nn.Module,
        points: Iterable[str] | None = None,
        layers: Iterable[int] | None = None,
        *,
        retain: bool = False,
        callback: TraceCallback | Mapping[str, PointCallback] | None = None,
        stop: bool = False,
        clone: bool = False,
        blocks: list[FFNBlock] | None = None,
    ):
        self.model = model
        self.blocks = blocks if blocks is not None else ffn_blocks(model)
        if isinstance(callback, Mapping):
            per_point = {TRACE_POINTS.canonical(p): fn for p, fn in callback.items()}
            requested = check_points(points if points is not None else per_point)
            missing = sorted(set(per_point) - set(requested))
            if missing:
                raise CapreseError(
                    f"callback for point(s) {missing} that the trace does not request ({', '.join(requested)})"
                )
            self._per_point, self._callback = per_point, None
        elif callback is None or callable(callback):
            requested = check_points(points if points is not None else POINTS)
            self._per_point, self._callback = {}, callback
        else:
            raise CapreseError(
                f"callback must be callable or a mapping point -> callable, got {type(callback).__name__}"
            )
        self.points = requested
        self.layers = check_layers(layers, len(self.blocks))
        self.retain, self.clone, self.stop = bool(retain), bool(clone), bool(stop)
        self._values: dict[tuple[int, str], torch.Tensor] = {}
        self._handles: list = []
        self._entered = False
        self._last = (self.layers[-1], self.points[-1])

    # -- lifetime ----------------------------------------------------------------------------
    def __enter__(self) -> Trace:
        if self._entered:
            raise CapreseError("this Trace is already active; create a new Trace to nest")
        self._entered = True
        try:
            self._register()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        # swallow only our own early stop; an outer trace's StopForward keeps propagating
        return isinstance(exc, StopForward) and exc.trace is self

    def remove(self) -> None:
        """Remove this trace's hooks (and only these); safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()
        self._entered = False

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _register(self) -> None:
        seen: dict[tuple[int, bool], tuple[int, str]] = {}
        for layer in self.layers:
            block = self.blocks[layer]
            for point in self.points:
                site = _site(block, point)
                key = (id(site.module), site.pre)
                # a module shared between layers would report one layer's values as another's
                if key in seen and seen[key][0] != layer:
                    other = seen[key]
                    raise CapreseError(
                        f"point {point!r}: layers {other[0]} and {layer} share one {type(site.module).__name__} "
                        "module, so a hook cannot tell them apart"
                    )
                seen[key] = (layer, point)
                hook = self._make_hook(layer, point, site.pre)
                if site.pre:
                    handle = site.module.register_forward_pre_hook(hook, with_kwargs=True)
                else:
                    handle = site.module.register_forward_hook(hook)
                self._handles.append(handle)

    def _make_hook(self, layer: int, point: str, pre: bool):
        if pre:

            def pre_hook(module, args, kwargs):
                self._record(layer, point, _pre_hook_input(args, kwargs))
                return None  # read-only: the input is unchanged

            return pre_hook

        def forward_hook(module, args, output):
            self._record(layer, point, _first_tensor(output))
            return None  # read-only: the output is unchanged

        return forward_hook

    def _record(self, layer: int, point: str, value: torch.Tensor) -> None:
        if tracing_suspended():  # a callback's own computation, not the model's forward
            return
        value = value.detach()
        if self.retain:
            self._values[(layer, point)] = value.clone() if self.clone else value
        with untraced():
            fn = self._per_point.get(point)
            if fn is not None:
                fn(layer, value)
            if self._callback is not None:
                self._callback(layer, point, value)
        if self.stop and (layer, point) == self._last:
            raise StopForward(self)

    # -- retained values ---------------------------------------------------------------------
    def __getitem__(self, key: tuple[int, str]) -> torch.Tensor:
        if not self.retain:
            raise CapreseError("this trace keeps no values (retain=False); pass retain=True or use a callback")
        layer, point = key
        point = TRACE_POINTS.canonical(point)
        if (layer, point) not in self._values:
            raise CapreseError(
                f"no value for layer {layer} point {point!r} (traced layers {list(self.layers)}, "
                f"points {list(self.points)}; has the model run inside the trace?)"
            )
        return self._values[(layer, point)]

    def values(self) -> dict[tuple[int, str], torch.Tensor]:
        """The retained values, keyed by (layer, point)."""
        return dict(self._values)

    def clear(self) -> None:
        """Drop retained values (keeps the hooks)."""
        self._values.clear()
