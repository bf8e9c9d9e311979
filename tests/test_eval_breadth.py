"""pass@k coverage and teacher-forced language metrics."""

import itertools
import math

import pytest

from caprese.errors import CapreseError
from caprese.evaluate.language import language_scores
from caprese.evaluate.passk import coverage_curve, pass_at_k, relative_compute
from caprese.methods import apply_method
from caprese.testing import tiny_model, tiny_tokenizer


def brute_force_pass_at_k(outcomes, k):
    """Fraction of all k-subsets of the samples that contain a correct one."""
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(outcomes, k), abs=1e-12)


def test_pass_at_1_is_mean_accuracy():
    correct = [[True, False, False, True], [False] * 4, [True] * 4, [False, False, True, False]]
    curve = coverage_curve(correct)
    assert curve[1] == pytest.approx(sum(map(sum, correct)) / 16)
    assert list(curve) == [1, 2, 3, 4] and curve[4] == pytest.approx(3 / 4)
    assert all(a <= b for a, b in zip(list(curve.values()), list(curve.values())[1:]))


def test_bad_coverage_input():
    with pytest.raises(CapreseError, match="k=5"):
        pass_at_k(4, 1, 5)
    with pytest.raises(CapreseError, match="same number of samples"):
        coverage_curve([[True], [True, False]])
    with pytest.raises(CapreseError, match="active fraction"):
        relative_compute(4, 0.0)
    assert relative_compute(8, 0.5) == 4.0


TEXTS = ["The cat sat on the mat and looked at the bird.", "Ann has a red ball and a blue kite in the park."]


@pytest.mark.parametrize("method", ["griffin", "cats", "topk"])
def test_sparsity_zero_reproduces_dense_perplexity_and_zero_kl(method):
    model, tok = tiny_model(), tiny_tokenizer()
    dense = language_scores(model, tok, TEXTS, None, prefix_tokens=8)
    with apply_method(model, method, 0.0) as session:
        scores = language_scores(model, tok, TEXTS, session, prefix_tokens=8)
    assert scores.perplexity == dense.perplexity and scores.kl == 0.0
    with apply_method(model, method, 0.6) as session:
        sparse = language_scores(model, tok, TEXTS, session, prefix_tokens=8)
    assert sparse.kl > 0 and sparse.perplexity != dense.perplexity
    assert sparse.dense_perplexity == pytest.approx(dense.perplexity, rel=1e-6)
    assert sparse.tokens == dense.tokens and math.isfinite(sparse.perplexity)


def test_prefix_must_leave_something_to_score():
    with pytest.raises(CapreseError, match="prefix_tokens"):
        language_scores(tiny_model(), tiny_tokenizer(), ["short"], None, prefix_tokens=64)
