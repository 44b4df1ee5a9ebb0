"""What is popular right now: item counts over a sliding window of the most recent interactions.

The stream keeps it up to date, so it serves new users and stands in when the model can't.
Items are kept as strings, the form recommendations carry them in.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Iterable

from streams.events import Id


class Popularity:
    def __init__(self, window: int = 20_000, top: int = 100):
        self.recent: deque[str] = deque()
        self.counts: Counter[str] = Counter()
        self.window = window
        self.top = top
        self._ranked: list[tuple[str, int]] | None = []

    def observe(self, items: Iterable[Id]) -> None:
        for item in map(str, items):
            self.recent.append(item)
            self.counts[item] += 1
            if len(self.recent) > self.window:
                old = self.recent.popleft()
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]
        self._ranked = None

    def ranked(self) -> list[tuple[str, int]]:
        """The `top` most frequent items in the window with their counts, most frequent first."""
        if self._ranked is None:
            self._ranked = self.counts.most_common(self.top)
        return self._ranked

    def fill(self, items: list[str], scores: list[float], k: int, exclude: set[str]) -> tuple[list[str], list[float]]:
        """`items` (already filtered) topped up to `k` with popular items not in it nor in `exclude`.
        Popular items score their share of the window, so they rank below any model score of note."""
        items, scores = list(items[:k]), list(scores[:k])
        taken = set(items) | exclude
        total = max(len(self.recent), 1)
        for item, count in self.ranked():
            if len(items) >= k:
                break
            if item not in taken:
                items.append(item)
                scores.append(count / total)
                taken.add(item)
        return items, scores
