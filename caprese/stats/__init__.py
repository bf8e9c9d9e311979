"""Streaming FFN statistics: memory independent of the number of tokens, mergeable, split by phase.

    stats = FFNStatistics.for_model(model)
    with collect_statistics(model, stats):
        model.generate(...)
    stats.summary()                     # fractions |Z| ≤ ε, quantiles, top-k energy, flocking
    stats.layer(3).gate.threshold(0.5)  # CATS τ for 50% sparsity, from the prompt tokens

Every statistic has `update()`, `state_dict()`, `load_state_dict()` and `merge()`.
"""

from .base import PHASES, StreamingStatistic, phase_ids, to_jsonable
from .collect import collect_statistics
from .flocking import FlockingOverlap, neuron_ranks
from .histogram import NUM_BINS, MagnitudeHistogram, bin_index, bin_of, is_bin_edge, upper_edges
from .layer import DEFAULT_DENSITIES, DEFAULT_EPSILONS, FFNStatistics, LayerStatistics, StatsConfig
from .topk import TopKEnergy, keep_count, sort_magnitudes

__all__ = [
    "DEFAULT_DENSITIES",
    "DEFAULT_EPSILONS",
    "FFNStatistics",
    "FlockingOverlap",
    "LayerStatistics",
    "MagnitudeHistogram",
    "NUM_BINS",
    "PHASES",
    "StatsConfig",
    "StreamingStatistic",
    "TopKEnergy",
    "bin_index",
    "bin_of",
    "collect_statistics",
    "is_bin_edge",
    "keep_count",
    "neuron_ranks",
    "phase_ids",
    "sort_magnitudes",
    "to_jsonable",
    "upper_edges",
]
