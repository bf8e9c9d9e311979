"""Sweep problems are found all at once, before anything runs, and reported one line each."""

from __future__ import annotations

from ..errors import CapreseError


class SweepSpecError(CapreseError):
    """One or more problems with a sweep spec; `lines` holds one self-contained line per problem."""

    def __init__(self, lines: list[str] | str):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


def raise_if_any(lines: list[str]) -> None:
    if lines:
        raise SweepSpecError(lines)
