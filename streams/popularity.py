"""What is popular right now: item counts over a sliding window of the most recent interactions.

The stream keeps it up to date, so it serves new users and stands in when the model can't.
Items are kept as strings, the form recommendations carry them in.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from typing import Container, Iterable

from streams.events import Id


class Popularity:
    def __init__(self, window: int = 20_000, top: int = 100, refresh_s: float = 1.0):
        self.recent: deque[str] = deque()
        self.counts: Counter[str] = Counter()
        self.window = window
        self.top = top
        self.refresh_s = refresh_s  # ranking the whole window per micro-batch costs more than it tells
        self._ranked: list[tuple[str, int]] = []
        self._ranked_at = float("-inf")

    def observe(self, items: Iterable[Id]) -> None:
        for item in map(str, items):
            self.recent.append(item)
            self.counts[item] += 1
            if len(self.recent) > self.window:
                old = self.recent.popleft()
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]

    def ranked(self) -> list[tuple[str, int]]:
        """The `top` most frequent items in the window with their counts, most frequent first
        (as of at most `refresh_s` ago)."""
        now = time.monotonic()
        if now - self._ranked_at >= self.refresh_s:
            self._ranked, self._ranked_at = self.counts.most_common(self.top), now
        return self._ranked

    def fill(self, items: list[str], scores: list[float], k: int, exclude: set[str],
             unbuyable: Container[str] = frozenset()) -> tuple[list[str], list[float]]:
        """`items` (already filtered) topped up to `k` with popular items not in it nor in `exclude`
        nor `unbuyable`. Popular items score their share of the window, so they rank below any
        model score of note."""
        items, scores = list(items[:k]), list(scores[:k])
        taken = set(items) | exclude
        total = max(len(self.recent), 1)
        for item, count in self.ranked():
            if len(items) >= k:
                break
            if item not in taken and item not in unbuyable:
                items.append(item)
                scores.append(count / total)
                taken.add(item)
        return items, scores
