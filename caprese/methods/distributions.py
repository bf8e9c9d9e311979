"""Distributions that thresholds are read from: exact (a prompt's own values) or streamed (a calibration set).

Both expose `quantile(q)`, the inverse CDF, so CATS's τ and TEAL's t are each one function of a
distribution (`cats.cats_threshold`, `teal.teal_threshold`) whichever source it came from.

`StreamingHistogram` follows the TEAL / baukit-runningstats pattern: a fixed number of bins,
`update()` / `merge()` / `state_dict()`, so a million calibration tokens cost the memory of a
hundred. Its range grows by doubling (adjacent bins merge pairwise), so no range is guessed up
front and no value is ever dropped as an outlier.
"""

from __future__ import annotations

import math

import torch

from ..errors import CapreseError


class EmpiricalDistribution:
    """The exact distribution of a set of values (e.g. one prompt's |σ(X W_g)|)."""

    def __init__(self, values: torch.Tensor):
        self.values = values.detach().reshape(-1)
        if self.values.numel() == 0:
            raise CapreseError("an empirical distribution needs at least one value, got none")

    def quantile(self, q: float) -> float:
        """The smallest value v with P(X <= v) >= q (so thresholding at v zeroes at least a q-fraction)."""
        k = quantile_rank(q, self.values.numel())
        return float(torch.kthvalue(self.values.float(), k).values)


def quantile_rank(q: float, n: int) -> int:
    """k such that the k-th smallest of n values is their q-quantile (`EmpiricalDistribution`)."""
    return min(max(math.ceil(q * n - 1e-9), 1), n)


QUANTILE_CHUNK_ELEMENTS = 1 << 26
"""Entries per batched selection in `prompt_magnitude_quantiles` (256 MiB of float32): rows are
taken a few at a time beyond it, so an 8B model's 16 x 2048-token prefill (29M entries per row)
never holds a float32 copy of all of them at once."""


def prompt_magnitude_quantiles(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """float32 (B,): row b's q-quantile (`EmpiricalDistribution`'s) of |values[b][mask[b]]|.

    values (B, S, W); mask (B, S) bool, each row with at least one True. One batched `kthvalue`
    per chunk of rows instead of one per row: masked-out entries become +inf, and each row gets
    K - k_b extra -inf entries (k_b its own rank, K the chunk's largest), so the K-th smallest of
    every padded row is the k_b-th smallest of its own magnitudes, exactly.
    """
    batch, length, width = values.shape
    per_chunk = max(1, QUANTILE_CHUNK_ELEMENTS // (length * width))
    counts = mask.sum(dim=1).tolist()
    return torch.cat([
        _magnitude_quantiles(values[i : i + per_chunk], mask[i : i + per_chunk], counts[i : i + per_chunk], q)
        for i in range(0, batch, per_chunk)
    ])  # fmt: skip


def _magnitude_quantiles(values: torch.Tensor, mask: torch.Tensor, counts: list[int], q: float) -> torch.Tensor:
    batch, length, width = values.shape
    ranks = [quantile_rank(q, n * width) for n in counts]
    top = max(ranks)
    shifts = torch.tensor([top - k for k in ranks], device=values.device)
    extra = max(1, top - min(ranks))
    rows = torch.empty(batch, length * width + extra, dtype=torch.float32, device=values.device)
    body = rows[:, : length * width].view(batch, length, width)
    body.copy_(values)
    body.abs_()
    body.masked_fill_(~mask[..., None], math.inf)
    below = torch.arange(extra, device=values.device) < shifts[:, None]
    rows[:, length * width :] = torch.where(below, -math.inf, math.inf)
    return torch.kthvalue(rows, top, dim=1).values


class SymmetrizedEmpirical:
    """The distribution of the values and their negatives, without materialising the negatives:
    its F⁻¹(q) is ±(the (2q − 1)-quantile of |x|), so F⁻¹(0.5 + p/2) is the p-quantile of |x|."""

    def __init__(self, values: torch.Tensor):
        self.magnitudes = EmpiricalDistribution(values.abs())

    def quantile(self, q: float) -> float:
        if q >= 0.5:
            return self.magnitudes.quantile(2 * q - 1)
        return -self.magnitudes.quantile(1 - 2 * q)


class StreamingHistogram:
    """A histogram over [-limit, limit] (or [0, limit] when `nonnegative`) whose range doubles on demand."""

    def __init__(self, bins: int = 1 << 14, nonnegative: bool = False):
        if bins < 4 or bins % 4:
            raise CapreseError(f"histogram bins {bins!r} must be a multiple of 4 and >= 4")
        self.bins = bins
        self.nonnegative = nonnegative
        self.counts = torch.zeros(bins, dtype=torch.float64)
        self.limit: float | None = None

    # -- geometry ----------------------------------------------------------------------------------
    @property
    def low(self) -> float:
        return 0.0 if self.nonnegative else -self.limit

    @property
    def width(self) -> float:
        return (self.limit - self.low) / self.bins

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def _double(self) -> None:
        """Double the range, keeping `bins`: each pair of adjacent bins becomes one."""
        pairs = self.counts.view(-1, 2).sum(dim=1)
        counts = torch.zeros_like(self.counts)
        if self.nonnegative:
            counts[: self.bins // 2] = pairs  # [0, L] -> first half of [0, 2L]
        else:
            counts[self.bins // 4 : 3 * self.bins // 4] = pairs  # [-L, L] -> middle half of [-2L, 2L]
        self.counts = counts
        self.limit *= 2

    def _grow_to(self, magnitude: float) -> None:
        if self.limit is None:
            # a power of two, so any two histograms' ranges differ by doublings and merge bin for bin
            self.limit = 2.0 ** math.ceil(math.log2(magnitude)) if magnitude > 0 else 1.0
        while magnitude > self.limit:
            self._double()

    # -- streaming -------------------------------------------------------------------------------
    def update(self, values: torch.Tensor) -> None:
        values = values.detach().reshape(-1).float()
        if values.numel() == 0:
            return
        if not bool(torch.isfinite(values).all()):
            raise CapreseError("calibration activations contain NaN or inf; the model or data is broken")
        if self.nonnegative and bool((values < 0).any()):
            raise CapreseError("a nonnegative histogram got negative values")
        self._grow_to(float(values.abs().max()))
        counts = torch.histc(values, bins=self.bins, min=self.low, max=self.limit)
        self.counts += counts.to(device=self.counts.device, dtype=torch.float64)

    def merge(self, other: StreamingHistogram) -> StreamingHistogram:
        if other.bins != self.bins or other.nonnegative != self.nonnegative:
            raise CapreseError("cannot merge histograms with different bins or sidedness")
        if other.limit is None:
            return self
        other = other.copy()
        self._grow_to(other.limit)
        while other.limit < self.limit:
            other._double()
        self.counts += other.counts
        return self

    def copy(self) -> StreamingHistogram:
        clone = StreamingHistogram(self.bins, self.nonnegative)
        clone.counts, clone.limit = self.counts.clone(), self.limit
        return clone

    def symmetrized(self) -> StreamingHistogram:
        """The histogram of the values and their negatives (halved): zero-mean and symmetric by
        construction, so its F⁻¹(0.5 + p/2) is exactly the p-quantile of |x|."""
        if self.nonnegative:
            raise CapreseError("only a signed histogram can be symmetrized")
        clone = self.copy()
        clone.counts = (self.counts + self.counts.flip(0)) / 2  # bin i mirrors bin N-1-i on [-L, L]
        return clone

    def state_dict(self) -> dict:
        return {"bins": self.bins, "nonnegative": self.nonnegative, "limit": self.limit, "counts": self.counts.clone()}

    @classmethod
    def from_state_dict(cls, state: dict) -> StreamingHistogram:
        hist = cls(int(state["bins"]), bool(state["nonnegative"]))
        hist.limit = state["limit"]
        hist.counts = state["counts"].to(torch.float64).clone()
        return hist

    # -- reading ---------------------------------------------------------------------------------
    def quantile(self, q: float) -> float:
        """Inverse CDF with values spread uniformly inside each bin."""
        total = self.total
        if total == 0:
            raise CapreseError("the calibration histogram is empty: no calibration tokens reached this layer")
        cumulative = torch.cumsum(self.counts, dim=0)
        target = min(max(q, 0.0), 1.0) * total
        index = int(torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64)).item())
        index = min(index, self.bins - 1)
        before = float(cumulative[index - 1]) if index > 0 else 0.0
        inside = float(self.counts[index])
        fraction = 0.0 if inside == 0 else (target - before) / inside
        return self.low + (index + fraction) * self.width
