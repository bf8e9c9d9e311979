"""`cats`: per-token thresholding of the gate activation (docs/method.md eq 6).

ẑ = T_τ(σ(x W_g)) ⊙ (x W_1), T_τ zeroing entries with |σ(x W_g)| ≤ τ; non-gated FFNs threshold
σ(x W_1) = Z itself. τ is the sparsity-quantile of |σ(X W_g)|, read either from each prompt's own
prefill features, per sequence and layer (`threshold_source="prompt"`, the Caprese paper's
setting and the default), or from a calibration set's histogram (`"calibration"`, original CATS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import CapreseError
from ..registry import check_choice
from .base import LayerShape, Method, MethodConfig, register_method
from .distributions import prompt_magnitude_quantiles

THRESHOLD_SOURCES = ("prompt", "calibration")


@dataclass
class CatsConfig(MethodConfig):
    threshold_source: str = field(
        default="prompt",
        metadata={
            "help": "τ from each prompt's prefill features (paper) or from --calibration (original CATS)",
            "flag": "cats-threshold",
            "choices": THRESHOLD_SOURCES,
        },
    )

    def validate(self) -> None:
        check_choice("threshold_source", self.threshold_source, THRESHOLD_SOURCES)


def cats_threshold(magnitudes, sparsity: float) -> float:
    """τ = the sparsity-quantile of |σ(X W_g)| (a distribution with `quantile`); -inf keeps everything."""
    if sparsity <= 0:
        return float("-inf")
    return magnitudes.quantile(sparsity)


@register_method("cats")
class Cats(Method):
    config_class = CatsConfig
    prepare_point = "gate_act"  # the prompt's own σ(x W_g), captured from the original FFN's prefill

    def __init__(self, block, sparsity, config: CatsConfig):
        super().__init__(block, sparsity, config)
        self.from_prompt = config.threshold_source == "prompt"
        self.stateful = self.from_prompt
        self.threshold: float | None = None  # the calibrated τ of this layer

    @classmethod
    def active_parameters(cls, shape: LayerShape, sparsity, config) -> float:
        """D·D_FF + n_in·D·(1-p)·D_FF: the thresholded activation's projection runs dense, the
        other n_in projections skip its zeros."""
        p = sparsity
        return shape.hidden * shape.intermediate + shape.inputs * shape.hidden * (1 - p) * shape.intermediate

    @classmethod
    def calibration_needs(cls, config: CatsConfig):
        return set() if config.threshold_source == "prompt" else {"gate_abs"}

    def setup(self, calibration) -> None:
        if not self.from_prompt:
            self.threshold = cats_threshold(calibration.gate_abs, self.sparsity)

    def _gate_and_up(self, x: torch.Tensor):
        """(σ(x W_g), x W_1) for gated FFNs; (σ(x W_1), None) for non-gated ones, whose σ(x W_1) is Z."""
        gate_pre, up = self.block.pre_activations(x)
        if self.block.gated:
            return self.block.act(gate_pre), up
        return self.block.act(up), None

    @torch.no_grad()
    def prepare(self, x: torch.Tensor, prompt: torch.Tensor, features: torch.Tensor | None = None):
        if not self.from_prompt:
            return None
        empty = (~prompt.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise CapreseError(
                f"layer {self.block.index}: CATS reads τ from the prompt, but sequence {empty[0]} has no prompt token"
            )
        if self.sparsity <= 0:  # cats_threshold's "keep everything"
            return torch.full((x.shape[0],), float("-inf"), dtype=torch.float32, device=x.device)
        activation = self._gate_and_up(x)[0] if features is None else features
        return prompt_magnitude_quantiles(activation, prompt, self.sparsity)

    def efficient(self, x: torch.Tensor, state, meter=None, count=None) -> torch.Tensor:
        tau = state[:, None, None] if self.from_prompt else self.threshold
        activation, up = self._gate_and_up(x)
        keep = activation.abs() > tau
        if meter is not None:
            meter.add("intermediate", keep, count)
        z = activation * keep if up is None else (activation * keep) * up
        return self.block.output(z)

    def describe(self) -> dict:
        return {"threshold_source": self.config.threshold_source, "threshold": self.threshold}
