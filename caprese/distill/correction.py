"""Deprecated module: the low-rank path lives in `caprese.distill.path`."""

from .path import LowRankCorrection, LowRankPath, check_rank

__all__ = ["LowRankCorrection", "LowRankPath", "check_rank"]
