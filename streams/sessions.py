"""A shopper's session: a small, bounded, serialisable record and the pure function that folds
one event into it. The Faust table stores `Session.pack()` bytes; its changelog is what a worker
replays on restart, so the record stays small (a few hundred items at most).

The packed record is a msgpack map with a version field `v` (RECORD_VERSION). `applied` holds, per
source partition ("topic:partition"), the offset of the newest event folded in: a replay after a
crash re-reads events the session already holds, and `apply` leaves the session as it is for them.
`searched_at` and `searched_events` mark the newest search (its event time, and the session's event
count once it was folded in), so that `steering_query` can tell whether it still steers; records
written before they existed load with no search marked.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import msgpack

from streams.events import TYPES, Event, Id

MAX_SEARCHES = 10
MAX_PURCHASED = 100
RECORD_VERSION = 1


@dataclass(frozen=True, slots=True)
class Session:
    items: tuple[Id, ...] = ()        # recent clicked/carted/bought items, oldest first
    searches: tuple[str, ...] = ()    # recent queries, oldest first
    purchased: tuple[Id, ...] = ()    # distinct purchased items, most recent last
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    last_seen: float = 0.0            # newest event time seen
    session: Id | None = None         # the shop's session id of the newest event
    applied: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> newest offset folded in
    searched_at: float | None = None  # event time of the newest search
    searched_events: int = 0          # `events` once the newest search was folded in

    def pack(self) -> bytes:
        return msgpack.packb({"v": RECORD_VERSION, "items": list(self.items), "searches": list(self.searches),
                              "purchased": list(self.purchased), "counts": self.counts,
                              "last_seen": self.last_seen, "session": self.session, "applied": self.applied,
                              "searched_at": self.searched_at, "searched_events": self.searched_events},
                             use_bin_type=True)

    @classmethod
    def unpack(cls, data: bytes) -> "Session":
        record = msgpack.unpackb(data, raw=False)
        if isinstance(record, list):  # before records carried a version: positional, nothing applied yet
            return cls(*map(tuple, record[:3]), *record[3:6])
        version = record.get("v")
        if version != RECORD_VERSION:
            raise ValueError(f"session record version {version!r} is not {RECORD_VERSION}")
        return cls(tuple(record["items"]), tuple(record["searches"]), tuple(record["purchased"]),
                   record["counts"], record["last_seen"], record["session"], record["applied"],
                   record.get("searched_at"), record.get("searched_events", 0))

    @property
    def events(self) -> int:
        return sum(self.counts.values())


def steering_query(session: Session, max_events: int, max_age_s: float) -> str:
    """The search text that steers this session's answer, "" for none: the newest query, for its own
    search event and the session's next `max_events` events, while the newest event is at most
    `max_age_s` (event time) after the search. A newer search replaces it."""
    if session.searched_at is None:
        return ""
    fresh = session.last_seen - session.searched_at <= max_age_s
    return session.searches[-1] if fresh and session.events - session.searched_events <= max_events else ""


def source(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def holds(session: Session | None, at: str, offset: int) -> bool:
    """Whether the event at `offset` of source partition `at` is already folded into `session`."""
    return session is not None and offset <= session.applied.get(at, -1)


def apply(session: Session | None, event: Event, length: int, at: str | None = None, offset: int = -1) -> Session:
    """The session after `event`; `length` bounds the recent item sequence. With a source
    partition `at`, the event's offset is recorded there (see `holds`)."""
    session = session or Session()
    counts = dict(session.counts)
    counts[event.type] = counts.get(event.type, 0) + 1
    changes = {"counts": counts}
    if at is not None:
        changes["applied"] = {**session.applied, at: offset}
    if event.ts >= session.last_seen:
        changes.update(last_seen=event.ts, session=event.session)
    if event.items:
        changes["items"] = _tail(session.items + event.items, length)
    if event.type == "search":
        changes.update(searches=_tail(session.searches + (event.query,), MAX_SEARCHES), searched_at=event.ts,
                       searched_events=sum(counts.values()))
    elif event.type == "purchase":
        kept = tuple(item for item in session.purchased if item not in event.items)
        changes["purchased"] = _tail(kept + tuple(dict.fromkeys(event.items)), MAX_PURCHASED)
    return replace(session, **changes)


def _tail(values: tuple, length: int) -> tuple:
    return values[-length:] if length > 0 else ()
