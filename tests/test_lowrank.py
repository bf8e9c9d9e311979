"""Reduced-rank regression from streamed moments equals the brute-force SVD solution."""

import pytest
import torch

from caprese.errors import CapreseError
from caprese.lowrank import RegressionAccumulator, fit_reduced_rank, fit_reduced_ranks


def _data(n=400, d=12, d_out=10, seed=0, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, d_out, generator=g, dtype=torch.float64) + noise * torch.randn(
        n, d_out, generator=g, dtype=torch.float64
    )
    return x, y


def brute_force(x, y, rank):
    """argmin_{rank(B) <= r} ||Y - X B||: with X = U S Wᵀ, the best X B is U · trunc_r(Uᵀ Y) (Eckart-Young)."""
    u, s, wt = torch.linalg.svd(x, full_matrices=False)
    p, sig, qt = torch.linalg.svd(u.T @ y, full_matrices=False)
    c = p[:, :rank] @ torch.diag(sig[:rank]) @ qt[:rank]
    return wt.T @ torch.diag(1 / s) @ c


@pytest.mark.parametrize("rank", [1, 3, 10])
def test_fit_equals_brute_force_svd_solution(rank):
    x, y = _data()
    L, R = fit_reduced_rank(x.T @ x, x.T @ y, rank, ridge=0.0, dtype=torch.float64)
    assert L.shape == (12, rank) and R.shape == (rank, 10)
    best = brute_force(x, y, rank)
    torch.testing.assert_close(x @ L @ R, x @ best, rtol=1e-8, atol=1e-8)
    loss = (y - x @ L @ R).square().sum()
    assert loss <= (y - x @ best).square().sum() * (1 + 1e-10)
    # and the default small ridge barely moves it
    Lr, Rr = fit_reduced_rank(x.T @ x, x.T @ y, rank, dtype=torch.float64)
    assert (y - x @ Lr @ Rr).square().sum() <= loss * (1 + 1e-5)


def test_streaming_in_chunks_merge_and_state_dict_equal_one_pass():
    x, y = _data(n=300)
    whole = RegressionAccumulator(12, 10)
    whole.update(x, y)
    parts = [RegressionAccumulator(12, 10) for _ in range(3)]
    for part, (xc, yc) in zip(parts, zip(x.split(100), y.split(100))):
        part.update(xc.float(), yc.float())  # float32 inputs are accumulated in float64
    merged = RegressionAccumulator(12, 10)
    merged.load_state_dict(parts[0].state_dict())
    merged.merge(parts[1]).merge(parts[2])
    assert int(merged.count) == 300
    torch.testing.assert_close(merged.xtx, whole.xtx, rtol=1e-6, atol=1e-6)
    L1, R1 = merged.fit(4)
    L2, R2 = whole.fit(4)
    torch.testing.assert_close(x.float() @ L1 @ R1, x.float() @ L2 @ R2, rtol=1e-4, atol=1e-4)


def test_memory_does_not_depend_on_tokens_and_residual_energy_matches():
    x, y = _data(n=50)
    acc = RegressionAccumulator(12, 10)
    size = acc.memory_bytes()
    for _ in range(10):
        acc.update(x, y)
    assert acc.memory_bytes() == size
    L, R = acc.fit(3, dtype=torch.float64)
    direct = 10 * (y - x @ L @ R).square().sum().item()
    assert abs(acc.residual_energy(L, R) - direct) <= 1e-8 * direct


def test_multiple_targets_share_inputs_and_ranks_are_nested():
    x, y = _data()
    y2 = -2 * y
    acc = RegressionAccumulator(12, 10, targets=2)
    acc.update(x, torch.stack([y, y2]))
    fits = acc.fit_ranks([2, 5], target=1, ridge=0.0, dtype=torch.float64)
    torch.testing.assert_close(x @ fits[5][0] @ fits[5][1], x @ brute_force(x, y2, 5), rtol=1e-5, atol=1e-5)
    # rank 2 directions are the first two of rank 5 (one eigendecomposition serves every rank)
    torch.testing.assert_close(fits[2][1], fits[5][1][:2])


def test_singular_inputs_are_stable_with_the_ridge():
    x, y = _data(n=8)  # fewer tokens than D: XᵀX is singular
    L, R = fit_reduced_rank(x.T @ x, x.T @ y, 4)
    assert torch.isfinite(L).all() and torch.isfinite(R).all()


def test_bad_arguments_raise_one_line_errors():
    x, y = _data(n=20)
    with pytest.raises(CapreseError, match=r"rank 11 is out of range \(allowed: integers 1..10\)"):
        fit_reduced_rank(x.T @ x, x.T @ y, 11)
    with pytest.raises(CapreseError, match="ridge"):
        fit_reduced_ranks(x.T @ x, x.T @ y, [1], ridge=-1.0)
    with pytest.raises(CapreseError, match="nothing to fit"):
        RegressionAccumulator(12, 10).fit(2)
    with pytest.raises(CapreseError, match="do not fit"):
        RegressionAccumulator(12, 10).update(x, y[:, :3])
