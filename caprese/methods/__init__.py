"""Efficient FFN methods (the FF̂ that Caprese corrects): dense, topk, griffin, cats, teal.

    from caprese.methods import apply_method
    with apply_method(model, "griffin", sparsity=0.5, layers="first_half") as session:
        model.generate(...)

Each method is a registered class (`METHODS`, did-you-mean on a wrong name) with a dataclass
config; `apply_method` installs an `EfficientFFN` wrapper at each chosen layer's FFN path and a
phase tracker, and restores the dense model on exit.
"""

from . import cats, dense, griffin, teal, topk  # noqa: F401  (registers the methods)
from .accounting import active_ffn_parameters, active_ffn_parameters_from_config, layer_active_parameters
from .base import (
    METHODS,
    LayerShape,
    Method,
    MethodConfig,
    MethodOption,
    SparsityMeter,
    kept_count,
    method_options,
    register_method,
    resolve_layers,
)
from .calibration import CalibrationStats, LayerCalibration, collect_calibration
from .cats import CatsConfig, cats_threshold
from .choice import MethodChoice
from .distributions import EmpiricalDistribution, StreamingHistogram
from .forcing import ForcedBatch, incremental_logits, teacher_forced_batch
from .griffin import GriffinConfig, PrunedFFN, griffin_scores, reselection_scores, select_neurons
from .session import MethodSession, apply_method
from .teal import TealConfig, teal_threshold
from .topk import topk_mask
from .wrapper import EfficientFFN

__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "register_method",
    "apply_method",
    "MethodSession",
    "EfficientFFN",
    "MethodChoice",
    "LayerShape",
    "MethodOption",
    "method_options",
    "GriffinConfig",
    "CatsConfig",
    "TealConfig",
    "collect_calibration",
    "CalibrationStats",
    "LayerCalibration",
    "active_ffn_parameters",
    "active_ffn_parameters_from_config",
    "layer_active_parameters",
    "kept_count",
    "resolve_layers",
    "SparsityMeter",
    "StreamingHistogram",
    "EmpiricalDistribution",
    "PrunedFFN",
    "ForcedBatch",
    "teacher_forced_batch",
    "incremental_logits",
    "griffin_scores",
    "reselection_scores",
    "select_neurons",
    "cats_threshold",
    "teal_threshold",
    "topk_mask",
]
