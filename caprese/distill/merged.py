"""Merged inference (docs/method.md eqs 9-10): each layer's low-rank path folded into its method.

For a kept set E and factors L (D×r), R (r×D):

    ẑ⁺  = [σ(x W_g[:,E]), 1_r] ⊙ x [W_1[:,E], L]        (eq 9; 1_r is never materialised)
    out = ẑ⁺ [W_2[E,:] ; R]                             (eq 10)

How a path merges is the method's own business (`Method.merged`, e.g. `MergedGriffin` in
caprese/methods/griffin.py); a method that returns None (top-k, CATS, TEAL: nothing to
concatenate) runs the sparse path plus x L R, the same as unmerged inference.
"""

from __future__ import annotations

from ..methods.griffin import MergedFFN, MergedGriffin
from .path import LowRankPath

__all__ = ["MergedFFN", "MergedGriffin", "merge_into"]


def merge_into(session, paths: dict[int, LowRankPath]) -> None:
    """Attach each layer's path to an applied method: merged where the method can, added otherwise."""
    for layer, path in paths.items():
        wrapper = session.wrapper(layer)
        merged = wrapper.method.merged(path)
        if merged is None:
            wrapper.correction = path
        else:
            wrapper.method = merged
            wrapper.correction = None
