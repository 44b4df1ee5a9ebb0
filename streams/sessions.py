"""A shopper's session: a small, bounded, serialisable record and the pure function that folds
one event into it. The Faust table stores `Session.pack()` bytes; its changelog is what a worker
replays on restart, so the record stays small (a few hundred items at most)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import msgpack

from streams.events import TYPES, Event, Id

MAX_SEARCHES = 10
MAX_PURCHASED = 100


@dataclass(frozen=True, slots=True)
class Session:
    items: tuple[Id, ...] = ()        # recent clicked/carted/bought items, oldest first
    searches: tuple[str, ...] = ()    # recent queries, oldest first
    purchased: tuple[Id, ...] = ()    # distinct purchased items, most recent last
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    last_seen: float = 0.0            # newest event time seen
    session: Id | None = None         # the shop's session id of the newest event

    def pack(self) -> bytes:
        return msgpack.packb([list(self.items), list(self.searches), list(self.purchased), self.counts,
                              self.last_seen, self.session], use_bin_type=True)

    @classmethod
    def unpack(cls, data: bytes) -> "Session":
        items, searches, purchased, counts, last_seen, session = msgpack.unpackb(data, raw=False)
        return cls(tuple(items), tuple(searches), tuple(purchased), counts, last_seen, session)

    @property
    def events(self) -> int:
        return sum(self.counts.values())


def apply(session: Session | None, event: Event, length: int) -> Session:
    """The session after `event`; `length` bounds the recent item sequence."""
    session = session or Session()
    counts = dict(session.counts)
    counts[event.type] = counts.get(event.type, 0) + 1
    changes = {"counts": counts}
    if event.ts >= session.last_seen:
        changes.update(last_seen=event.ts, session=event.session)
    if event.items:
        changes["items"] = _tail(session.items + event.items, length)
    if event.type == "search":
        changes["searches"] = _tail(session.searches + (event.query,), MAX_SEARCHES)
    elif event.type == "purchase":
        kept = tuple(item for item in session.purchased if item not in event.items)
        changes["purchased"] = _tail(kept + tuple(dict.fromkeys(event.items)), MAX_PURCHASED)
    return replace(session, **changes)


def _tail(values: tuple, length: int) -> tuple:
    return values[-length:] if length > 0 else ()
