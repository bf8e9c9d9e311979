"""Wire `FFNStatistics` to a model: a phase tracker plus a trace whose callbacks feed the statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from ..arch import ffn_blocks
from ..phase import PhaseTracker
from ..trace import Trace
from .layer import FFNStatistics, StatsConfig


@contextlib.contextmanager
def collect_statistics(
    model,
    stats: FFNStatistics | None = None,
    *,
    layers: Iterable[int] | None = None,
    config: StatsConfig | None = None,
    tracker: PhaseTracker | None = None,
    stop: bool = False,
    blocks=None,
):
    """Within this context every forward of `model` updates the statistics (yielded).

    Pass `tracker` to share a `PhaseTracker` (e.g. one inside `tracker.teacher_forced(...)`);
    otherwise one is attached for the duration. `stop=True` ends each forward after the last
    traced layer (no LM head): statistics-only calibration forwards.
    """
    blocks = blocks if blocks is not None else ffn_blocks(model)
    if stats is None:
        stats = FFNStatistics.for_model(model, layers, config, blocks=blocks)
    with contextlib.ExitStack() as stack:
        if tracker is None:
            tracker = stack.enter_context(PhaseTracker(model))
        stack.enter_context(
            Trace(
                model,
                points=stats.points,
                layers=list(stats.layers),
                callback=stats.callbacks(tracker),
                stop=stop,
                blocks=blocks,
            )
        )
        yield stats
