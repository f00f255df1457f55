"""Things this process created and a watch has not shown yet, each believed for a while.

A watch (or kopf's index fed by it) lags behind a create by one event. Until the create
shows up, the caller counts it from here; past `ttl` seconds the watch is believed again.
Used by the reconcile's expectations and the warm pool's count of pods being started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class ExpectedUntilSeen(Generic[T]):
    """Items by name, each kept from `add` until `seen` or until `expire` finds it too old."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._clock = ttl, clock
        self._items: dict[str, tuple[T, float]] = {}

    def add(self, name: str, item: T) -> None:
        """Created here just now (again: the clock starts over)."""
        self._items[name] = (item, self._clock())

    def seen(self, names: Iterable[str]) -> None:
        """These showed up in the watch: no longer expected."""
        for name in names:
            self._items.pop(name, None)

    def expire(self) -> None:
        """Drop what was added more than `ttl` seconds ago."""
        horizon = self._clock() - self._ttl
        for name, (_, at) in list(self._items.items()):
            if at < horizon:
                del self._items[name]

    def names(self) -> set[str]:
        return set(self._items)

    def items(self) -> list[T]:
        return [item for item, _ in self._items.values()]

    def __len__(self) -> int:
        return len(self._items)
