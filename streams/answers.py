"""The model's raw answers kept for reuse: an event that leaves a shopper's model input as it was (a
second event of the same user in one batch, a search repeated, another shopper with the same
history and query) needs no new inference.

Keyed by the model input (a session's item tuple and the search text steering it, "" for none), so
users with the same history and query share an entry;
values are the model's own top list and the version that computed it, before any per-event
filtering (purchases, catalogue), which the recommender still applies to every answer. Bounded
LRU. A Triton call that answers with another version empties it; so does a pause longer than
CONFIRM_S without any call, since only a call can tell that the served version changed.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Hashable

CONFIRM_S = 1.0  # longest a cached answer is trusted without a call confirming its version


class AnswerCache:
    def __init__(self, size: int, clock=time.monotonic):
        self.size = size
        self.clock = clock
        self.entries: OrderedDict = OrderedDict()
        self.version: int | None = None
        self.confirmed_at = float("-inf")

    def get(self, key: Hashable):
        """(answer, version) for `key`, or None."""
        if self.clock() - self.confirmed_at > CONFIRM_S:
            self.entries.clear()
            return None
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def confirm(self, version: int) -> None:
        """A call just answered from `version`: entries of another version go."""
        if version != self.version:
            self.entries.clear()
            self.version = version
        self.confirmed_at = self.clock()

    def put(self, key: Hashable, answer, version: int) -> None:
        if self.size <= 0 or version != self.version:
            return
        self.entries[key] = (answer, version)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
