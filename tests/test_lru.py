"""The one LRU: eviction order and budgets against a naive list-based reference."""

from __future__ import annotations

import random
import threading

import pytest

from app.lru import LRU, LRUStats


class _NaiveLRU:
    """Most recent last; evicts from the front until the new value fits."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.items: list[tuple[int, int]] = []  # (key, cost)

    def get(self, key: int) -> bool:
        for i, (k, _) in enumerate(self.items):
            if k == key:
                self.items.append(self.items.pop(i))
                return True
        return False

    def put(self, key: int, cost: int) -> None:
        self.items = [(k, c) for k, c in self.items if k != key]
        if cost > self.budget:
            return
        while self.items and sum(c for _, c in self.items) + cost > self.budget:
            self.items.pop(0)
        self.items.append((key, cost))


@pytest.mark.parametrize("budget", [0, 1, 7, 23])
def test_random_gets_and_puts_match_a_naive_reference(budget: int) -> None:
    rng = random.Random(budget)
    cache: LRU[int, int] = LRU(budget, size=lambda value: value)
    naive = _NaiveLRU(budget)
    hits = misses = 0
    for _ in range(3000):
        key = rng.randrange(11)
        if rng.random() < 0.5:
            cost = rng.randrange(9)
            cache.put(key, cost)
            naive.put(key, cost)
        else:
            found = cache.get(key)
            expected = naive.get(key)
            assert (found is not None) == expected
            hits, misses = hits + expected, misses + (not expected)
            if expected:
                assert found == dict(naive.items)[key]
    total = sum(c for _, c in naive.items)
    assert cache.stats == LRUStats(hits, misses, total, len(naive.items))
    assert total <= budget


def test_counting_budget_resize_pop_and_clear() -> None:
    cache: LRU[str, str] = LRU(3)
    for key in "abc":
        cache.put(key, key.upper())
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("d", "D")
    assert cache.get("b") is None and len(cache) == 3
    cache.max_size = 1  # shrinking keeps only the most recent
    assert [cache.get(k) for k in "acd"] == [None, None, "D"]
    assert cache.pop("d") == "D" and cache.pop("d") is None and len(cache) == 0
    cache.put("e", "E")
    cache.clear()
    assert cache.stats == LRUStats(0, 0, 0, 0)
    with pytest.raises(ValueError, match="max_size must be ≥ 0"):
        LRU(-1)
    with pytest.raises(ValueError, match="max_size must be ≥ 0"):
        cache.max_size = -5


def test_threads_never_exceed_the_budget() -> None:
    cache: LRU[int, int] = LRU(50, size=lambda value: value)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2000):
            cache.put(rng.randrange(40), rng.randrange(1, 12))
            cache.get(rng.randrange(40))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = cache.stats
    assert 0 < stats.size <= 50 and stats.hits + stats.misses == 8000
