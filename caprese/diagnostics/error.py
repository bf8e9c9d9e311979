"""Reconstruction error of an FFN approximation, streamed: relative L2 and cosine.

`ErrorMeter.update(reference, approx)` takes (N, D) rows of FF(x) and FF̂(x) for the same tokens,
whatever produced FF̂ (oracle top-k, a low-rank-corrected top-k, any efficient FFN method), so
every method is measured by the same code. It keeps five sums, never the tokens:

    relative_l2             ‖FF − FF̂‖_F / ‖FF‖_F over all tokens (the figure-2 quantity)
    relative_l2_token_mean  mean over tokens of ‖FF(x) − FF̂(x)‖ / ‖FF(x)‖
    cosine                  mean over tokens of cos(FF(x), FF̂(x))
"""

from __future__ import annotations

import math

import torch

from ..errors import CapreseError
from ..stats.base import StreamingStatistic


class ErrorMeter(StreamingStatistic):
    ACCUMULATORS = ("error_sq", "reference_sq", "relative_sum", "cosine_sum", "tokens")

    def __init__(self):
        self.error_sq = torch.zeros((), dtype=torch.float64)
        self.reference_sq = torch.zeros((), dtype=torch.float64)
        self.relative_sum = torch.zeros((), dtype=torch.float64)
        self.cosine_sum = torch.zeros((), dtype=torch.float64)
        self.tokens = torch.zeros((), dtype=torch.int64)

    def config(self) -> dict:
        return {}

    def update(self, reference: torch.Tensor, approx: torch.Tensor) -> None:
        if reference.shape != approx.shape:
            raise CapreseError(
                f"reference {tuple(reference.shape)} and approximation {tuple(approx.shape)} differ in shape"
            )
        ref = reference.reshape(-1, reference.shape[-1]).double()
        app = approx.reshape(-1, approx.shape[-1]).double()
        if ref.shape[0] == 0:
            return
        err_sq = (ref - app).square().sum(-1)
        ref_sq = ref.square().sum(-1)
        app_sq = app.square().sum(-1)
        tiny = torch.finfo(torch.float64).tiny
        self.error_sq += err_sq.sum().cpu()
        self.reference_sq += ref_sq.sum().cpu()
        self.relative_sum += (err_sq.sqrt() / ref_sq.sqrt().clamp_min(tiny)).sum().cpu()
        self.cosine_sum += ((ref * app).sum(-1) / (ref_sq * app_sq).sqrt().clamp_min(tiny)).sum().cpu()
        self.tokens += ref.shape[0]

    def result(self) -> dict:
        n = int(self.tokens)
        if n == 0:
            return {"relative_l2": math.nan, "relative_l2_token_mean": math.nan, "cosine": math.nan, "tokens": 0}
        ref = float(self.reference_sq)
        return {
            "relative_l2": math.sqrt(float(self.error_sq) / ref) if ref > 0 else math.nan,
            "relative_l2_token_mean": float(self.relative_sum) / n,
            "cosine": float(self.cosine_sum) / n,
            "tokens": n,
        }
