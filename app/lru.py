"""One thread-safe least-recently-used cache, bounded by entry count or by a size budget.

Torch-free, so the store and the service can use it as well as the engine.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["LRU", "LRUStats"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _one(_: object) -> int:
    return 1


@dataclass(frozen=True)
class LRUStats:
    """Counters of an :class:`LRU`: look-ups that hit and missed, total size, entries."""

    hits: int
    misses: int
    size: int
    entries: int


class LRU(Generic[K, V]):
    """A mapping that forgets its least recently used entries past ``max_size``.

    Args:
        max_size: the budget; with the default ``size`` it counts entries.
        size: the cost of one value (e.g. its bytes); a value costing more than the whole
            budget is not stored.

    Raises:
        ValueError: a negative ``max_size``.
    """

    def __init__(self, max_size: int, size: Callable[[V], int] = _one) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be ≥ 0, got {max_size}")
        self._max = max_size
        self._size = size
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    @property
    def max_size(self) -> int:
        """The budget."""
        return self._max

    @max_size.setter
    def max_size(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"max_size must be ≥ 0, got {value}")
        with self._lock:
            self._max = value
            self._evict(0)

    def get(self, key: K) -> V | None:
        """The value under ``key`` (now the most recent), or ``None``."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return found[0]

    def put(self, key: K, value: V) -> None:
        """Store ``value``, forgetting the least recently used entries to stay in budget."""
        cost = self._size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= old[1]
            if cost > self._max:
                return
            self._evict(cost)
            self._items[key] = (value, cost)
            self._total += cost

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, or ``None`` when absent."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is None:
                return None
            self._total -= old[1]
            return old[0]

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._items.clear()
            self._total = self._hits = self._misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def stats(self) -> LRUStats:
        """Hits, misses, total size and number of entries."""
        with self._lock:
            return LRUStats(self._hits, self._misses, self._total, len(self._items))

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until ``room`` more fits (the lock is held)."""
        while self._items and self._total + room > self._max:
            _, (_, cost) = self._items.popitem(last=False)
            self._total -= cost
