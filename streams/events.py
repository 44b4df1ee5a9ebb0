"""Event schema v1 and its msgpack codec: every field checked against a bound.

On the wire an event is a msgpack map (README "Events"):

    v        1
    type     "click" | "search" | "add_to_cart" | "purchase"
    user     the shop's user id (str of 1-64 chars, or int 0..2**63-1)
    session  the shop's session id (same bounds)
    ts       event time, seconds since the epoch (int or float, 2000-01-01 .. 2100-01-01)
    item     click, add_to_cart: the item id (same bounds as user)
    query    search: the query text (1-256 chars)
    shown    search, optional: item ids shown as results (at most 100)
    items    purchase: item ids bought (1-100)
    value    purchase, optional: order value (0 .. 1e9)

`decode` returns an Event or raises RejectedEvent with a short, stable reason code (also the
dead-letter metric label, so the set of codes is small and fixed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack

VERSION = 1
TYPES = ("click", "search", "add_to_cart", "purchase")
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ID_CHARS = 64
MAX_ID_INT = 2**63 - 1
MAX_QUERY_CHARS = 256
MAX_SHOWN = 100
MAX_ITEMS = 100
MAX_VALUE = 1e9
TS_RANGE = (946684800.0, 4102444800.0)  # 2000-01-01 .. 2100-01-01 UTC

_COMMON = ("v", "type", "user", "session", "ts")
_FIELDS = {
    "click": {"item"},
    "add_to_cart": {"item"},
    "search": {"query", "shown"},
    "purchase": {"items", "value"},
}

Id = str | int


class RejectedEvent(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    user: Id
    session: Id
    ts: float
    items: tuple[Id, ...] = ()  # click/add_to_cart: the one item; purchase: the items bought
    query: str | None = None
    shown: tuple[Id, ...] | None = None
    value: float | None = None

    def to_wire(self) -> dict:
        wire = {"v": VERSION, "type": self.type, "user": self.user, "session": self.session, "ts": self.ts}
        if self.type in ("click", "add_to_cart"):
            wire["item"] = self.items[0]
        elif self.type == "purchase":
            wire["items"] = list(self.items)
            if self.value is not None:
                wire["value"] = self.value
        else:
            wire["query"] = self.query
            if self.shown is not None:
                wire["shown"] = list(self.shown)
        return wire


def encode(event: Event) -> bytes:
    return msgpack.packb(event.to_wire(), use_bin_type=True)


def decode(payload: bytes) -> Event:
    return from_wire(unpack(payload))


def unpack(payload: bytes):
    """The msgpack value of a payload of at most MAX_PAYLOAD_BYTES (events and catalogue records)."""
    if not payload:
        raise RejectedEvent("empty")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedEvent("too_large")
    try:
        return msgpack.unpackb(payload, raw=False)
    except (msgpack.UnpackException, ValueError, TypeError):
        raise RejectedEvent("malformed_msgpack") from None


def from_wire(wire) -> Event:
    if not isinstance(wire, dict):
        raise RejectedEvent("not_a_map")
    if "v" not in wire:
        raise RejectedEvent("bad_field:v")
    if type(wire["v"]) is not int or wire["v"] != VERSION:
        raise RejectedEvent("unsupported_version")
    kind = wire.get("type")
    if kind not in _FIELDS:
        raise RejectedEvent("unknown_type")
    if not set(wire) <= _FIELDS[kind].union(_COMMON):
        raise RejectedEvent("unknown_field")
    user, session, ts = _id(wire, "user"), _id(wire, "session"), _ts(wire)
    if kind == "search":
        shown = _ids(wire, "shown", 0, MAX_SHOWN) if "shown" in wire else None
        return Event(kind, user, session, ts, query=_query(wire), shown=shown)
    if kind == "purchase":
        value = _value(wire) if "value" in wire else None
        return Event(kind, user, session, ts, items=_ids(wire, "items", 1, MAX_ITEMS), value=value)
    return Event(kind, user, session, ts, items=(_id(wire, "item"),))


def valid_id(value) -> bool:
    if type(value) is int:  # bool is an int subclass: `type` keeps True out
        return 0 <= value <= MAX_ID_INT
    return type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def _id(wire: dict, name: str) -> Id:
    value = wire.get(name)
    if not valid_id(value):
        raise RejectedEvent(f"bad_field:{name}")
    return value


def _ids(wire: dict, name: str, least: int, most: int) -> tuple[Id, ...]:
    value = wire.get(name)
    if type(value) is not list or not least <= len(value) <= most or not all(map(valid_id, value)):
        raise RejectedEvent(f"bad_field:{name}")
    return tuple(value)


def _number(wire: dict, name: str, low: float, high: float) -> float:
    value = wire.get(name)
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise RejectedEvent(f"bad_field:{name}")
    return float(value)


def _ts(wire: dict) -> float:
    return _number(wire, "ts", *TS_RANGE)


def _value(wire: dict) -> float:
    return _number(wire, "value", 0.0, MAX_VALUE)


def _query(wire: dict) -> str:
    value = wire.get("query")
    if type(value) is not str or not 0 < len(value) <= MAX_QUERY_CHARS or not value.strip():
        raise RejectedEvent("bad_field:query")
    return value


def user_key(user: Id) -> bytes:
    """The Kafka key of a user's events: every event topic is partitioned by it."""
    return str(user).encode()


def topic_for(kind: str, settings) -> str:
    """Clicks, searches and purchases each have a topic; add_to_cart rides with purchases."""
    return {"click": settings.topic_clicks, "search": settings.topic_searches,
            "add_to_cart": settings.topic_purchases, "purchase": settings.topic_purchases}[kind]
