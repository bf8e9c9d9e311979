"""Confidence intervals for accuracy (Wilson score) and for token-weighted text statistics (paired
percentile bootstrap over texts)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from ..errors import CapreseError


def wilson_interval(correct: int, count: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion `correct / count` (stays inside [0, 1], sane at 0 and n)."""
    if count < 1 or not 0 <= correct <= count:
        raise CapreseError(f"Wilson interval needs 0 <= correct <= count and count >= 1, got {correct} of {count}")
    if not 0 < confidence < 1:
        raise CapreseError(f"confidence {confidence!r} must be in (0, 1)")
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = correct / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 from rounding
    high = 1.0 if correct == count else min(1.0, centre + half)
    return low, high


def bootstrap_indices(n: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """(resamples, n) indices drawn with replacement, seeded: every configuration scored on the same
    texts draws the same resamples, so differences between configurations are paired."""
    if n < 1:
        raise CapreseError("a bootstrap needs at least one text")
    if resamples < 1:
        raise CapreseError(f"resamples {resamples!r} must be >= 1")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *, confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0, transform=None) -> tuple[float, float]:
    """Percentile bootstrap interval over texts of sum(numerators) / sum(denominators) (e.g. NLL per
    token), optionally transformed (np.exp for perplexity)."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise CapreseError(f"{num.size} numerators for {den.size} denominators")
    draws = bootstrap_indices(num.size, resamples, seed)
    stat = num[draws].sum(1) / den[draws].sum(1)
    if transform is not None:
        stat = transform(stat)
    low, high = np.percentile(stat, [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100])
    return float(low), float(high)


def paired_difference_interval(numerators_a: Sequence[float], numerators_b: Sequence[float],
                               denominators: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000,
                               seed: int = 0) -> tuple[float, float]:
    """Interval of (sum a - sum b) / sum(denominators) over the same texts resampled together:
    e.g. KL with Caprese minus KL of the method alone, per token."""
    a, b = np.asarray(numerators_a, dtype=float), np.asarray(numerators_b, dtype=float)
    if a.shape != b.shape:
        raise CapreseError(f"paired texts differ in number: {a.size} vs {b.size}")
    return ratio_interval(a - b, denominators, confidence=confidence, resamples=resamples, seed=seed)
