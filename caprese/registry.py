"""Name -> object registries with did-you-mean errors (one pattern for models, methods, tasks, points),
and the shared value checkers every config's `__post_init__` / `validate` uses (one-line errors)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import CapreseError

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive mapping from names (and aliases) to registered objects."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._display: dict[str, str] = {}  # lower-case key -> name as registered

    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = ()):
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""

        def add(item: T) -> T:
            key = name.lower()
            if key in self._items or key in self._aliases:
                raise CapreseError(f"{self.kind} {name!r} is already registered")
            self._items[key] = item
            self._display[key] = name
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return item

        return add(obj) if obj is not None else add

    def canonical(self, name: str) -> str:
        key = str(name).lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            candidates = list(self._items) + list(self._aliases)
            close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CapreseError(f"unknown {self.kind} {name!r}{hint} (choose from: {', '.join(self.names())})")
        return key

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def display_name(self, name: str) -> str:
        return self._display[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        key = str(name).lower()
        return key in self._items or key in self._aliases

    def names(self) -> list[str]:
        """Registered names as written at registration, sorted."""
        return sorted(self._display.values())

    def items(self) -> Iterator[tuple[str, T]]:
        return iter((name, self._items[name.lower()]) for name in self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def check_choice(kind: str, value: object, allowed: list | tuple) -> None:
    """Raise a one-line error unless `value` is one of `allowed`."""
    if value not in allowed:
        raise CapreseError(f"{kind} {value!r} is not allowed (choose from: {', '.join(map(str, allowed))})")


def check_range(kind: str, value: float, low: float, high: float, *, low_open=False, high_open=False) -> None:
    """Raise a one-line error unless low <= value <= high (with optional open ends)."""
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high) or value != value:  # NaN fails too
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise CapreseError(f"{kind} {value!r} is out of range (allowed: {lo}{low}, {high}{hi})")


def check_int(kind: str, value: object, minimum: int = 1, *, allow_none: bool = False) -> None:
    """Raise a one-line error unless `value` is an integer >= `minimum` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " (or None)" if allow_none else ""
        raise CapreseError(f"{kind} {value!r} must be an integer >= {minimum}{none}")


def check_positive(kind: str, value: object) -> None:
    """Raise a one-line error unless `value` is a finite number > 0 (learning rates, temperatures)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CapreseError(f"{kind} {value!r} is not a number (allowed: (0, inf))")
    check_range(kind, float(value), 0.0, math.inf, low_open=True, high_open=True)


def check_text(kind: str, value: object) -> None:
    if not isinstance(value, str):
        raise CapreseError(f"{kind} {value!r} must be text")


def check_bool(kind: str, value: object) -> None:
    if not isinstance(value, bool):
        raise CapreseError(f"{kind} {value!r} must be true or false")
