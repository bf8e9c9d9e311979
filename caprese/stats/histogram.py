"""Histogram of |x| on fixed log-spaced bins, split by phase, with exact "fraction ≤ ε" counts.

Bins are defined by the float32 bit pattern: bin i holds the values whose bits lie in
((i-1)·2^20, i·2^20], i.e. each octave (2^e, 2^(e+1)] is cut into 8 bins of equal width (edges
2^e·(1 + j/8); relative width 1/16 to 1/8), bin 0 holds exact zeros, and every float32 from 0 to
inf has a bin (NaN inputs are not supported). Why bits rather than log + search: the index is
two integer ops on a view of the tensor (the sign needs no pass of its own, see
`signed_bin_index`) instead of an abs, a logarithm and a binary search, which is what lets the
statistics run on every forward (benchmarks/bench_trace_overhead.py). Bins are right-closed, so
"fraction of |x| ≤ ε" is exact from the counts when ε is a bin edge (0, powers of two,
2^e·(1 + j/8)); any other ε costs one exact comparison pass per update. Because every
histogram uses the same bins, merging adds counts and is exact. bfloat16 inputs use their own
16 bits (bfloat16 is the top half of float32, so the bins are identical); other dtypes are
converted to float32 first.

Quantiles are read from the cumulative counts with linear interpolation inside the bin that
holds the order statistic, so a quantile is always within one bin of the exact value. CATS's
threshold τ for sparsity p is the p-quantile of |σ(x W_g)| (docs/method.md eq 6), `threshold(p)`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import torch

from ..errors import CapreseError
from .base import IGNORED, PHASES, StreamingStatistic, phase_index

MANTISSA_BITS = 3
BINS_PER_OCTAVE = 2**MANTISSA_BITS
_SHIFT = 23 - MANTISSA_BITS  # float32: drop the low mantissa bits
NUM_BINS = 1 << (31 - _SHIFT)  # bin i = ceil(|x| bits / 2^20): 0 (exact zeros) .. 2047; inf is bin 2040
_FIRST_INF_BIN = 0x7F800000 >> _SHIFT  # (largest finite edge, inf]


def _float32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def upper_edges() -> torch.Tensor:
    """float64 (NUM_BINS,): bin i holds (upper[i-1], upper[i]]; bin 0 holds exact zeros.

    upper[2040] is inf; the edges above it are NaN bit patterns (NaN inputs are not supported)."""
    bits = (torch.arange(NUM_BINS, dtype=torch.int64) << _SHIFT).to(torch.int32)
    return bits.view(torch.float32).to(torch.float64)


_UPPER = upper_edges()


def bin_of(value: float) -> int:
    """The bin index of |value| (as float32)."""
    bits = _float32_bits(float(value)) & 0x7FFFFFFF
    return -(-bits >> _SHIFT)  # ceil(bits / 2^20)


def is_bin_edge(value: float) -> bool:
    """True when `value` is exactly a bin edge, so fraction ≤ value is read from counts."""
    value = float(value)
    if value < 0 or not math.isfinite(value):
        return False
    as32 = struct.unpack("<f", struct.pack("<f", value))[0]
    return as32 == value and _float32_bits(value) & ((1 << _SHIFT) - 1) == 0


def signed_bin_index(values: torch.Tensor) -> torch.Tensor:
    """ceil(bits / 2^20) of the raw (signed) bit pattern, in two integer passes.

    For x ≥ 0 this is bin_of(x); for x < 0 (sign bit set) it is bin_of(|x|) - NUM_BINS, because
    the int32 pattern of -|x| is bits(|x|) - 2^31 and 2^31 / 2^20 = NUM_BINS. So
    `signed_bin_index(x) + NUM_BINS` indexes a (2, NUM_BINS) table of (negative, non-negative)
    halves whose sum is the histogram of |x|, without a separate pass taking |x|. bfloat16 is
    the top half of float32, so its own 16 bits give the same bins.
    """
    if values.dtype == torch.bfloat16:
        bits, shift = values.view(torch.int16), _SHIFT - 16
    else:
        if values.dtype != torch.float32:
            values = values.float()
        bits, shift = values.view(torch.int32), _SHIFT
    index = bits + ((1 << shift) - 1)  # ceil division by 2^shift, as floor of a shifted sum
    index >>= shift
    return index


def bin_index(values: torch.Tensor) -> torch.Tensor:
    """Bin index of |values| (same shape): the reference definition, for tests and plotting."""
    index = signed_bin_index(values)
    return torch.where(index < 0, index + NUM_BINS, index)


def count_values(index: torch.Tensor, size: int) -> torch.Tensor:
    """int64 (size,): how often each value of the 1-D integer `index` (all in [0, size)) occurs.

    `torch.bincount`. Tried instead: `index_add_` of ones (no min/max scan first): faster when the
    2 cores were shared by many processes (p10 109 vs 245 ms for 0.5M values), slower undisturbed
    (min 1.60 vs 1.02 ms), so bincount stays."""
    return torch.bincount(index, minlength=size)


def _check_epsilons(epsilons: Iterable[float]) -> tuple[float, ...]:
    eps = tuple(float(e) for e in epsilons)
    for e in eps:
        if not (e >= 0 and math.isfinite(e)):
            raise CapreseError(f"epsilon {e!r} is not allowed (allowed: finite values >= 0)")
    if len(set(eps)) != len(eps):
        raise CapreseError(f"epsilons {list(eps)} contain duplicates")
    return eps


class MagnitudeHistogram(StreamingStatistic):
    """|x| histogram per phase on the fixed bit-pattern bins, plus exact fraction of |x| ≤ ε."""

    ACCUMULATORS = ("counts", "below_offgrid")

    def __init__(self, epsilons: Sequence[float] = ()):
        self.epsilons = _check_epsilons(epsilons)
        self._on_grid = [is_bin_edge(e) for e in self.epsilons]
        self._offgrid = [e for e, on in zip(self.epsilons, self._on_grid) if not on]
        self._pending: torch.Tensor | None = None
        self.counts = torch.zeros(len(PHASES), NUM_BINS, dtype=torch.int64)
        self.below_offgrid = torch.zeros(len(PHASES), len(self._offgrid), dtype=torch.int64)

    @property
    def counts(self) -> torch.Tensor:
        """(phases, NUM_BINS) int64 on the CPU; counts of updates on another device are added to a
        table on that device (no sync per update) and brought over when first read."""
        if self._pending is not None:
            self._counts += self._pending.cpu()
            self._pending = None
        return self._counts

    @counts.setter
    def counts(self, value: torch.Tensor) -> None:
        self._counts, self._pending = value, None

    def _add_counts(self, counts: torch.Tensor) -> None:
        if counts.device == self._counts.device:
            self._counts += counts
        elif self._pending is None or self._pending.device != counts.device:
            self.counts  # noqa: B018 - flush a table of another device first
            self._pending = counts
        else:
            self._pending += counts

    def config(self) -> dict:
        return {"epsilons": list(self.epsilons), "bins": "float32 bits, 8 per octave", "num_bins": NUM_BINS}

    # -- update ------------------------------------------------------------------------------
    def update(self, values: torch.Tensor, phase_ids: torch.Tensor | int) -> None:
        """Count |values| (shape (..., W)); `phase_ids` (shape (...), or one int) names each row's phase."""
        width = values.shape[-1]
        index = signed_bin_index(values)
        halves = 2 * NUM_BINS  # (negative, non-negative) half-tables per phase
        if isinstance(phase_ids, int):
            if not 0 <= phase_ids <= IGNORED:
                raise CapreseError(f"phase id {phase_ids} is out of range (allowed: 0..{IGNORED})")
            if phase_ids == IGNORED:
                return
            index += NUM_BINS
            counts = torch.zeros(len(PHASES), NUM_BINS, dtype=torch.int64, device=values.device)
            counts[phase_ids] = count_values(index.reshape(-1), halves).view(2, NUM_BINS).sum(0)
            self._add_counts(counts)
            phase_ids = torch.full(values.shape[:-1], phase_ids, dtype=torch.long, device=values.device)
        else:
            if phase_ids.shape != values.shape[:-1]:
                raise CapreseError(
                    f"phase ids of shape {tuple(phase_ids.shape)} do not match values {tuple(values.shape)}"
                )
            # one count for all phases: phase p's half-tables start at p * 2 * NUM_BINS (fits int16 too)
            index += (NUM_BINS + halves * phase_ids).to(index.dtype).unsqueeze(-1)
            counts = count_values(index.reshape(-1), halves * (IGNORED + 1))
            self._add_counts(counts.view(IGNORED + 1, 2, NUM_BINS)[:IGNORED].sum(1))
        if self._offgrid:
            self._count_offgrid(values, phase_ids, width)

    def _count_offgrid(self, values: torch.Tensor, phase_ids, width: int) -> None:
        magnitudes = values.float().abs().reshape(-1, width)
        per_token = torch.stack([(magnitudes <= e).sum(-1) for e in self._offgrid], dim=-1)  # (N, n_off)
        ids = phase_ids.reshape(-1).to(per_token.device)
        sums = torch.zeros(IGNORED + 1, len(self._offgrid), dtype=torch.int64, device=per_token.device)
        sums.index_add_(0, ids, per_token.to(torch.int64))
        self.below_offgrid += sums[:IGNORED].cpu()

    # -- read-outs ---------------------------------------------------------------------------
    def total(self, phase: str) -> int:
        return int(self.counts[phase_index(phase)].sum())

    def fractions(self, phase: str) -> list[float]:
        """Fraction of |x| ≤ ε for each ε (NaN when the phase saw nothing)."""
        p = phase_index(phase)
        total = self.counts[p].sum().item()
        if total == 0:
            return [math.nan] * len(self.epsilons)
        cum = self.counts[p].cumsum(0)
        out, off = [], 0
        for e, on_grid in zip(self.epsilons, self._on_grid):
            if on_grid:
                below = cum[bin_of(e)].item()
            else:
                below = self.below_offgrid[p, off].item()
                off += 1
            out.append(below / total)
        return out

    def quantile(self, q: float, phase: str) -> float:
        """The q-quantile of |x| in `phase`, within one bin of the exact value (NaN if empty)."""
        return self.quantiles([q], phase)[0]

    def quantiles(self, qs: Sequence[float], phase: str) -> list[float]:
        p = phase_index(phase)
        counts = self.counts[p].to(torch.float64)
        n = counts.sum().item()
        out = []
        for q in qs:
            if not 0.0 <= float(q) <= 1.0:
                raise CapreseError(f"quantile {q!r} is out of range (allowed: [0, 1])")
            if n == 0:
                out.append(math.nan)
                continue
            cum = counts.cumsum(0)
            rank = float(q) * (n - 1) + 1  # 1-based, fractional: torch.quantile's convention
            i = int(torch.searchsorted(cum, torch.tensor([rank], dtype=torch.float64)).item())
            i = min(i, NUM_BINS - 1)
            if i == 0:
                out.append(0.0)
                continue
            lo, hi = _UPPER[i - 1].item(), _UPPER[i].item()
            if not math.isfinite(hi):
                out.append(hi)
                continue
            before = cum[i - 1].item()
            frac = (rank - before) / counts[i].item()
            out.append(lo + min(max(frac, 0.0), 1.0) * (hi - lo))
        return out

    def threshold(self, sparsity: float, phase: str = "prompt") -> float:
        """CATS's τ: the value below which a fraction `sparsity` of |x| lies."""
        return self.quantile(sparsity, phase)

    def bin_width_at(self, value: float) -> float:
        """Width of the bin holding `value` (the precision of a quantile read-out there)."""
        i = bin_of(value)
        return 0.0 if i == 0 else (_UPPER[i] - _UPPER[i - 1]).item()

    def nonzero_bins(self, phase: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lower edges, upper edges, counts) of the occupied finite range, for plotting."""
        p = phase_index(phase)
        counts = self.counts[p]
        occupied = torch.nonzero(counts[1:_FIRST_INF_BIN]).flatten() + 1
        if occupied.numel() == 0:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, empty, torch.zeros(0, dtype=torch.int64)
        first, last = occupied.min().item(), occupied.max().item()
        sl = slice(first, last + 1)
        return _UPPER[first - 1 : last], _UPPER[sl], counts[sl].clone()
