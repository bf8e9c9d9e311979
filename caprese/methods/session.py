"""`apply_method`: run a model with an efficient FFN method at chosen layers, then restore it.

    with apply_method(model, "griffin", sparsity=0.5, layers="first_half") as session:
        model.generate(...)                       # prompt: full FFN; generated tokens: GRIFFIN
        with session.teacher_forced(prompt_lengths):
            model(input_ids=prompt_and_continuation, ...)   # = prefill + token-by-token decode

Wrappers keep the original module as `base_layer`; no weight is copied or modified, and the
original modules are put back on exit, also after an exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ..arch.ffn import FFNWrapper, ffn_blocks
from ..errors import CapreseError
from ..phase import PhaseTracker
from .accounting import active_ffn_parameters
from .base import METHODS, MethodConfig, build_config, check_sparsity, resolve_layers
from .calibration import CalibrationStats, collect_calibration
from .wrapper import EfficientFFN, PhaseFlags, TeacherCallback


class MethodSession:
    """What `apply_method` yields: the installed wrappers, the phase tracker and measurements."""

    def __init__(
        self,
        model: nn.Module,
        name: str,
        sparsity: float,
        layers: list[int],
        config: MethodConfig,
        tracker: PhaseTracker,
        calibration: CalibrationStats | None,
    ):
        self.model = model
        self.method = name
        self.sparsity = sparsity
        self.layers = layers
        self.config = config
        self.tracker = tracker
        self.calibration = calibration
        self.wrappers: dict[int, EfficientFFN] = {}

    def teacher_forced(self, prompt_lengths):
        """One forward over prompt + continuation: positions before each prompt length run the full FFN."""
        return self.tracker.teacher_forced(prompt_lengths)

    def wrapper(self, layer: int) -> EfficientFFN:
        if layer not in self.wrappers:
            raise CapreseError(f"layer {layer!r} has no method applied (applied layers: {self.layers})")
        return self.wrappers[layer]

    def kept_neurons(self, layer: int) -> torch.Tensor:
        """The method's current kept set E (GRIFFIN's), (B, k) sorted neuron indices per sequence of
        the last prefill."""
        wrapper = self.wrapper(layer)
        if not wrapper.method.defines("kept_neurons"):
            raise CapreseError(f"method {self.method!r} keeps no neuron set, so it has no kept_neurons")
        if wrapper.state is None:
            raise CapreseError(f"layer {layer}: no prefill has run yet, so no neurons are selected")
        return wrapper.method.kept_neurons(wrapper.state)

    def set_correction(self, layer: int, module: nn.Module | None) -> None:
        self.wrapper(layer).correction = module

    # -- measurements -------------------------------------------------------------------------------
    def reset_measurements(self) -> None:
        for wrapper in self.wrappers.values():
            wrapper.meter.reset()

    def measured_sparsity(self) -> dict[str, Any]:
        """Sparsity actually applied on generated tokens: overall (token-weighted over layers) and per layer."""
        per_layer = {i: w.meter.overall() for i, w in self.wrappers.items()}
        details = {i: w.meter.by_name() for i, w in self.wrappers.items()}
        # every layer sees the same tokens, so layers combine by their activations' weights
        weighted = [
            (w.meter.total_weight(), per_layer[i]) for i, w in self.wrappers.items() if per_layer[i] is not None
        ]
        total = sum(weight for weight, _ in weighted)
        overall = None if total == 0 else sum(weight * value for weight, value in weighted) / total
        return {"overall": overall, "per_layer": per_layer, "per_activation": details}

    def active_parameters(self, measured: dict | None = None) -> dict[str, Any]:
        """Active parameters at the requested sparsity, or from `measured` {layer: (sparsity,
        reselections per token)} where given."""
        return active_ffn_parameters(
            self.model,
            self.method,
            self.sparsity,
            self.layers,
            reselect_every=getattr(self.config, "reselect_every", None),
            config=self.config,
            measured=measured,
        )

    def measured_active_parameters(self) -> dict[str, Any]:
        """`active_parameters` from what was measured on generated tokens since the last reset:
        each layer's sparsity and its reselections per token (a layer with no counted token, or a
        method that drops nothing, counts as requested; `measured_layers` says how many were measured)."""
        measured = {}
        for index, wrapper in self.wrappers.items():
            sparsity = wrapper.meter.overall()
            if sparsity is not None:
                measured[index] = (min(sparsity, 1.0 - 1e-12), wrapper.meter.events_per_token("reselection"))
        out = self.active_parameters(measured)
        out["measured_layers"] = len(measured)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-able description for results files."""
        return {
            "method": self.method,
            "sparsity": self.sparsity,
            "layers": self.layers,
            "config": asdict(self.config),
            "per_layer": {i: w.method.describe() for i, w in self.wrappers.items()},
        }


def _resolve_calibration(model, cls, config, layers, calibration, tokenizer, progress) -> CalibrationStats | None:
    needs = cls.calibration_needs(config)
    if not needs:
        return None
    if calibration is None:
        raise CapreseError(f"method {cls.name!r} with these options needs a calibration set (calibration=...)")
    if isinstance(calibration, CalibrationStats):
        return calibration
    return collect_calibration(model, calibration, needs=needs, layers=layers, tokenizer=tokenizer, progress=progress)


@contextlib.contextmanager
def apply_method(
    model: nn.Module,
    name: str,
    sparsity: float | None = None,
    layers: Any = "all",
    *,
    calibration: Any = None,
    tokenizer=None,
    teacher_callback: TeacherCallback | None = None,
    progress: bool = True,
    **options: Any,
) -> Iterator[MethodSession]:
    """Install method `name` at `layers` ("all", "first_half", or indices) for the `with` block.

    `options` fill the method's dataclass config (e.g. reselect_every=8, prune=True for GRIFFIN;
    threshold_source="calibration" for CATS; allocation="greedy" for TEAL). `calibration` is a
    calibration set (texts with `tokenizer`, token sequences, or batches) or precomputed
    `CalibrationStats` (reuse them across sparsities). With `teacher_callback`, the model runs dense
    and each wrapper reports (layer, x, FF(x) − FF̂(x), FF̂(x)) on generated tokens.
    """
    cls = METHODS.get(name)
    if sparsity is None:
        if cls.takes_sparsity:
            raise CapreseError(f"method {cls.name!r} needs a sparsity in [0, 1) (sparsity=...)")
        sparsity = 0.0
    sparsity = check_sparsity(sparsity)
    config = build_config(cls, options)
    blocks = ffn_blocks(model)
    chosen = resolve_layers(layers, len(blocks))
    for index in chosen:
        if isinstance(blocks[index].installed(), FFNWrapper):
            raise CapreseError(
                f"layer {index} already has a caprese wrapper installed; leave the other apply_method first"
            )
    stats = _resolve_calibration(model, cls, config, chosen, calibration, tokenizer, progress)
    tracker = PhaseTracker(model)
    session = MethodSession(model, cls.name, sparsity, chosen, config, tracker, stats)
    installed: list[tuple[int, nn.Module]] = []
    flags = PhaseFlags()
    try:
        for index in chosen:
            block = blocks[index]
            method = cls(block, sparsity, config)
            if stats is not None:
                method.setup(stats.layer(index, cls.calibration_needs(config)))
            wrapper = EfficientFFN(block, method, tracker, teacher_callback, flags=flags)
            previous = block.install(wrapper)
            installed.append((index, previous))
            session.wrappers[index] = wrapper
        tracker.attach()
        yield session
    finally:
        tracker.detach()
        for index, previous in reversed(installed):
            blocks[index].install(previous)
