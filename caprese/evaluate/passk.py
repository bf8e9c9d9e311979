"""pass@k coverage under best-of-N sampling (docs/method.md eq 16; the paper's figure 3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import CapreseError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of P(at least one of k draws is correct) from n samples with c correct:
    1 − C(n−c, k) / C(n, k), as a numerically stable product."""
    if not 0 <= c <= n:
        raise CapreseError(f"correct count c={c!r} must lie in [0, n={n}]")
    if not 1 <= k <= n:
        raise CapreseError(f"k={k!r} is out of range (allowed: 1..n={n} samples per prompt)")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def coverage_curve(correct: Sequence[Sequence[bool]], ks: Sequence[int] | None = None) -> dict[int, float]:
    """Mean pass@k over prompts for each k (default 1..N); `correct[p]` holds prompt p's N outcomes."""
    counts = [(len(row), int(sum(bool(x) for x in row))) for row in correct]
    if not counts:
        raise CapreseError("coverage needs at least one prompt")
    sizes = {n for n, _ in counts}
    if len(sizes) != 1:
        raise CapreseError(f"every prompt needs the same number of samples, got {sorted(sizes)}")
    n = sizes.pop()
    ks = list(range(1, n + 1)) if ks is None else list(ks)
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}


def relative_compute(n_samples: int, active_fraction: float) -> float:
    """The paper's relative compute units: N samples × fraction of parameters active per token."""
    if not 0 < active_fraction <= 1:
        raise CapreseError(f"active fraction {active_fraction!r} is out of range (allowed: (0, 1])")
    return n_samples * active_fraction
