"""Confidence intervals: Wilson against a published table, seeded bootstraps."""

import math

import numpy as np
import pytest

from caprese.errors import CapreseError
from caprese.stats.intervals import bootstrap_interval, recovered_interval, wilson_half_width, wilson_interval

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson)
NEWCOMBE = [
    ((81, 263), (0.2553, 0.3662)),
    ((15, 148), (0.0624, 0.1605)),
    ((0, 20), (0.0, 0.1611)),
    ((1, 29), (0.0061, 0.1718)),
]


@pytest.mark.parametrize("counts,expected", NEWCOMBE)
def test_wilson_matches_the_published_table(counts, expected):
    low, high = wilson_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_is_symmetric_inside_the_unit_interval_and_shrinks_with_n():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(3, 10)
    assert math.isclose(1 - high, wilson_interval(7, 10)[0]) and math.isclose(1 - low, wilson_interval(7, 10)[1])
    assert wilson_half_width(300, 500) < wilson_half_width(30, 50)
    assert 0.04 < wilson_half_width(300, 500) < 0.045  # ±4.3 points at n = 500 near p = 0.6
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@pytest.mark.parametrize("bad", [(5, 3), (-1, 3), (True, 3)])
def test_bad_counts_are_one_line(bad):
    with pytest.raises(CapreseError, match="counts"):
        wilson_interval(*bad)


def test_bootstrap_is_reproducible_for_a_seed_and_covers_the_mean():
    values = np.random.default_rng(3).normal(2.0, 1.0, size=200)
    first = bootstrap_interval(values, seed=7)
    assert first == bootstrap_interval(values, seed=7)
    assert first != bootstrap_interval(values, seed=8)
    assert first[0] < values.mean() < first[1]
    assert 0.2 < first[1] - first[0] < 0.35  # ≈ 2 · 1.96 · 1/√200 = 0.277
    median = bootstrap_interval(values, np.median, seed=7, resamples=300)
    assert median[0] < np.median(values) < median[1]


def test_recovered_interval_brackets_the_point_estimate():
    low, high = recovered_interval((160, 200), (66, 200), (183, 200), seed=0)
    point = (160 - 66) / (183 - 66)
    assert low < point < high and high - low < 0.3
    assert (low, high) == recovered_interval((160, 200), (66, 200), (183, 200), seed=0)
    assert all(math.isnan(v) for v in recovered_interval((5, 10), (10, 10), (10, 10)))
