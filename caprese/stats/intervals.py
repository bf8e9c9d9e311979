"""Confidence intervals for the numbers caprese reports: Wilson intervals for an accuracy, a seeded
percentile bootstrap for means over texts (perplexity, KL), and a parametric bootstrap for the
share of a method's accuracy loss that a correction recovers.

    wilson_interval(183, 200)                  # (0.866, 0.946): 183 of 200 problems solved
    bootstrap_interval(per_text_kl, seed=0)    # (low, high) of the mean, resampling texts
    ratio_bootstrap_interval(nll, tokens, transform=np.exp)   # perplexity, resampling texts
    paired_difference_interval(kl_caprese, kl_alone, tokens)  # ΔKL on the same texts
    recovered_interval((160, 200), (66, 200), (183, 200))

Every interval is two-sided at `confidence` (default 0.95); bootstraps are reproducible for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from ..errors import CapreseError

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise CapreseError(f"confidence {confidence!r} is out of range (allowed: 0 < confidence < 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(successes: int, n: int) -> None:
    if isinstance(n, bool) or isinstance(successes, bool) or n < 0 or not 0 <= successes <= n:
        raise CapreseError(f"counts {successes!r} of {n!r} are not valid (allowed: 0 <= successes <= n)")


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) for n = 0.

    Unlike the normal ('Wald') interval it stays inside [0, 1] and keeps its coverage near 0 and 1,
    where accuracies of a method at high sparsity or of the dense model live.
    """
    _check_counts(successes, n)
    if n == 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact bounds where rounding would miss them
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def wilson_half_width(successes: int, n: int, confidence: float = CONFIDENCE) -> float:
    low, high = wilson_interval(successes, n, confidence)
    return (high - low) / 2.0


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap of `statistic` over `values` (e.g. per-text perplexities), seeded."""
    _z(confidence)
    data = np.asarray([float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(resamples, data.size))
    stats = np.array([statistic(data[row]) for row in picks]) if statistic is not np.mean else data[picks].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha)))


def ratio_bootstrap_interval(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap over units (texts) of sum(numerators) / sum(denominators), then
    `transform` (e.g. np.exp: perplexity from per-text summed NLL and token counts), seeded."""
    _z(confidence)
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise CapreseError(f"numerators and denominators must be equal-length lists (got {num.shape} and {den.shape})")
    if num.size == 0 or den.sum() <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, num.size, size=(resamples, num.size))
    totals = den[picks].sum(axis=1)
    ratios = num[picks].sum(axis=1)[totals > 0] / totals[totals > 0]
    if transform is not None:
        ratios = transform(ratios)
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1.0 - alpha)))


def paired_difference_interval(
    numerators_a: Sequence[float],
    numerators_b: Sequence[float],
    denominators: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of (sum a - sum b) / sum(denominators) over the same texts resampled together:
    e.g. KL with Caprese minus KL of the method alone, per token (paired, so the texts' own
    difficulty cancels)."""
    a, b = np.asarray(numerators_a, dtype=float), np.asarray(numerators_b, dtype=float)
    if a.shape != b.shape:
        raise CapreseError(f"paired texts differ in number: {a.size} vs {b.size}")
    return ratio_bootstrap_interval(a - b, denominators, confidence=confidence, resamples=resamples, seed=seed)


def recovered_interval(
    caprese: tuple[int, int],
    method_alone: tuple[int, int],
    dense: tuple[int, int],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Interval of (acc - method) / (dense - method) by a parametric bootstrap: each of the three
    accuracies is redrawn as Binomial(n, p̂) from its own (correct, n). Resamples where the method
    lost nothing (dense <= method) are dropped; (nan, nan) when too few remain."""
    _z(confidence)
    for successes, n in (caprese, method_alone, dense):
        _check_counts(successes, n)
    if min(caprese[1], method_alone[1], dense[1]) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    draws = [rng.binomial(n, successes / n, size=resamples) / n for successes, n in (caprese, method_alone, dense)]
    acc, alone, full = draws
    lost = full - alone
    keep = lost > 0
    if keep.sum() < resamples // 2:
        return (math.nan, math.nan)
    shares = (acc[keep] - alone[keep]) / lost[keep]
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(shares, alpha)), float(np.quantile(shares, 1.0 - alpha)))
