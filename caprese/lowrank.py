"""Closed-form reduced-rank regression: the best x ↦ x L R (rank r) for streamed (x, y) pairs.

Used by the figure-2 diagnostics (the best rank-r correction of an efficient FFN's residual) and,
for Caprese, as the closed-form baseline / initialiser of the layer-wise objective (docs/method.md eqs 7, 14)

    min_{L ∈ R^{D×r}, R ∈ R^{r×D_out}}  Σ_x ‖y − x L R‖²₂ ,   y = FF(x) − FF̂(x).

Only the moments XᵀX (D×D) and XᵀY (D×D_out) are needed, so `RegressionAccumulator` streams any
number of tokens in fixed memory (float64, so millions of tokens sum without loss) and merges
across batches or workers.

The solution (reduced-rank ridge regression, Mukherjee & Zhu 2011): with the ridge solution
B = (XᵀX + λI)⁻¹ XᵀY, let V_r be the top-r eigenvectors of Bᵀ(XᵀX + λI)B = (XᵀY)ᵀB (the
fitted values' right singular vectors); then L = B V_r and R = V_rᵀ minimise
‖Y − X L R‖² + λ‖L R‖²_F exactly. The ridge λ = `ridge` · tr(XᵀX)/D (relative to the mean
eigenvalue of XᵀX, so it is scale-free) keeps the solve stable when XᵀX is singular or badly
conditioned (fewer tokens than D, or inputs confined to a subspace, as RMS-normalised FFN inputs
often are); the default 1e-6 changes a well-posed fit by ~1e-6 relative. `ridge=0` gives the
plain reduced-rank regression (the pseudo-inverse when XᵀX is singular).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .errors import CapreseError
from .stats.base import StreamingStatistic

DEFAULT_RIDGE = 1e-6


def _check_rank(rank: int, limit: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
        raise CapreseError(f"rank {rank!r} is out of range (allowed: integers 1..{limit})")
    return rank


def _ridge_solution(xtx: torch.Tensor, xty: torch.Tensor, ridge: float) -> torch.Tensor:
    """B = (XᵀX + λI)⁻¹ XᵀY in float64 (pseudo-inverse when ridge = 0)."""
    if ridge < 0:
        raise CapreseError(f"ridge {ridge!r} must be >= 0")
    xtx, xty = xtx.double(), xty.double()
    d = xtx.shape[0]
    if ridge == 0:
        return torch.linalg.pinv(xtx, hermitian=True) @ xty
    scale = torch.trace(xtx).item() / d
    lam = ridge * (scale if scale > 0 else 1.0)
    system = xtx + lam * torch.eye(d, dtype=xtx.dtype, device=xtx.device)
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return torch.cholesky_solve(xty, chol)
    return torch.linalg.lstsq(system, xty).solution


def _directions(xty: torch.Tensor, solution: torch.Tensor) -> torch.Tensor:
    """Output directions by decreasing explained energy: eigenvectors of (XᵀY)ᵀB, columns."""
    gram = xty.double().T @ solution
    gram = 0.5 * (gram + gram.T)
    _, vectors = torch.linalg.eigh(gram)  # ascending
    return vectors.flip(-1)


def fit_reduced_ranks(
    xtx: torch.Tensor,
    xty: torch.Tensor,
    ranks: Iterable[int],
    *,
    ridge: float = DEFAULT_RIDGE,
    dtype: torch.dtype = torch.float32,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{r: (L (D×r), R (r×D_out))} for each rank, from one solve and one eigendecomposition."""
    if xtx.dim() != 2 or xtx.shape[0] != xtx.shape[1] or xty.dim() != 2 or xty.shape[0] != xtx.shape[0]:
        raise CapreseError(f"moments of shapes {tuple(xtx.shape)} and {tuple(xty.shape)} do not fit (D×D and D×D_out)")
    limit = min(xty.shape)
    ranks = [_check_rank(r, limit) for r in ranks]
    solution = _ridge_solution(xtx, xty, ridge)
    directions = _directions(xty, solution)
    out = {}
    for r in ranks:
        v = directions[:, :r]
        out[r] = ((solution @ v).to(dtype), v.T.contiguous().to(dtype))
    return out


def fit_reduced_rank(
    xtx: torch.Tensor,
    xty: torch.Tensor,
    rank: int,
    *,
    ridge: float = DEFAULT_RIDGE,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L: D×r, R: r×D_out) minimising ‖Y − X L R‖² (+ λ‖LR‖², see the module docstring)."""
    return fit_reduced_ranks(xtx, xty, [rank], ridge=ridge, dtype=dtype)[rank]


class RegressionAccumulator(StreamingStatistic):
    """Streaming moments for regressing T targets on shared inputs: XᵀX, XᵀY_t, Σ‖y_t‖², n.

    Memory is D² + T·D·D_out float64 whatever the number of tokens. Several targets share one
    XᵀX (e.g. the residuals of top-k at several densities, all on the same tokens).
    """

    ACCUMULATORS = ("xtx", "xty", "yy", "count")

    def __init__(self, d_in: int, d_out: int, targets: int = 1, *, device: str | torch.device = "cpu"):
        if min(d_in, d_out, targets) < 1:
            raise CapreseError(f"regression dimensions must be >= 1, got D={d_in}, D_out={d_out}, targets={targets}")
        self.d_in, self.d_out, self.targets = int(d_in), int(d_out), int(targets)
        self.xtx = torch.zeros(d_in, d_in, dtype=torch.float64, device=device)
        self.xty = torch.zeros(targets, d_in, d_out, dtype=torch.float64, device=device)
        self.yy = torch.zeros(targets, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    def config(self) -> dict:
        return {"d_in": self.d_in, "d_out": self.d_out, "targets": self.targets}

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x (N, D); y (N, D_out) for one target or (T, N, D_out) for all of them."""
        x = x.reshape(-1, self.d_in).to(self.xtx.device, torch.float64)
        if y.dim() == 2:
            y = y.unsqueeze(0)
        if y.shape != (self.targets, x.shape[0], self.d_out):
            raise CapreseError(
                f"targets of shape {tuple(y.shape)} do not fit {self.targets} target(s) × {x.shape[0]} tokens × D_out={self.d_out}"
            )
        y = y.to(self.xtx.device, torch.float64)
        self.xtx += x.T @ x
        self.xty += torch.matmul(x.T.unsqueeze(0), y)
        self.yy += y.square().sum(dim=(1, 2))
        self.count += x.shape[0]

    def fit(self, rank: int, target: int = 0, *, ridge: float = DEFAULT_RIDGE, dtype=torch.float32):
        """(L, R) of the best rank-`rank` map for target `target`."""
        return self.fit_ranks([rank], target, ridge=ridge, dtype=dtype)[rank]

    def fit_ranks(self, ranks: Sequence[int], target: int = 0, *, ridge: float = DEFAULT_RIDGE, dtype=torch.float32):
        if int(self.count) == 0:
            raise CapreseError("no (x, y) pairs were accumulated: nothing to fit")
        if not 0 <= target < self.targets:
            raise CapreseError(f"target {target} is out of range (allowed: 0..{self.targets - 1})")
        return fit_reduced_ranks(self.xtx, self.xty[target], ranks, ridge=ridge, dtype=dtype)

    def residual_energy(self, L: torch.Tensor, R: torch.Tensor, target: int = 0) -> float:
        """Σ‖y − x L R‖² over the accumulated pairs, from the moments alone."""
        B = L.double().to(self.xtx.device) @ R.double().to(self.xtx.device)
        fit = torch.sum(self.xty[target] * B)
        quad = torch.sum(B * (self.xtx @ B))
        return float(self.yy[target] - 2 * fit + quad)
