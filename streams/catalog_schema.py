"""Catalogue record schema v1 and its msgpack codec: every field checked against a bound.

`shop.catalog` is compacted and keyed by the item id (its UTF-8 text, as events are keyed by user).
A record is a msgpack map (README "Catalogue"):

    v           1
    item        the shop's item id (the bounds of events' ids)
    title       1-200 printable characters, not blank
    categories  0-32 names of 1-100 printable characters
    brand       optional: 1-100 printable characters
    price       optional: 0 .. 1e9
    in_stock    true or false

A tombstone (a record without a value) delists the item. `decode` raises RejectedEvent with the
events' stable reason codes (`empty`, `too_large`, `malformed_msgpack`, `not_a_map`,
`unsupported_version`, `unknown_field`, `bad_field:<name>`, `key_mismatch`), plus `bad_key` for a
key that is no item id.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack

from streams.events import Id, RejectedEvent, unpack, valid_id

VERSION = 1
MAX_TITLE_CHARS = 200
MAX_CATEGORIES = 32
MAX_NAME_CHARS = 100
MAX_PRICE = 1e9
_REQUIRED = {"v", "item", "title", "categories", "in_stock"}
_FIELDS = _REQUIRED | {"brand", "price"}


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item: Id
    title: str
    categories: tuple[str, ...] = ()
    in_stock: bool = True
    brand: str | None = None
    price: float | None = None

    def to_wire(self) -> dict:
        wire = {"v": VERSION, "item": self.item, "title": self.title, "categories": list(self.categories),
                "in_stock": self.in_stock}
        if self.brand is not None:
            wire["brand"] = self.brand
        if self.price is not None:
            wire["price"] = self.price
        return wire


def item_key(item: Id) -> bytes:
    return str(item).encode()


def encode(record: CatalogItem) -> bytes:
    return msgpack.packb(record.to_wire(), use_bin_type=True)


def decode(key: bytes | None, payload: bytes | None) -> tuple[str, CatalogItem | None]:
    """The item id as recommendations carry it (text) and its record; None for a tombstone."""
    item = _key(key)
    if payload is None:
        return item, None
    record = from_wire(unpack(payload))
    if str(record.item) != item:
        raise RejectedEvent("key_mismatch")
    return item, record


def from_wire(wire) -> CatalogItem:
    if not isinstance(wire, dict):
        raise RejectedEvent("not_a_map")
    if type(wire.get("v")) is not int:
        raise RejectedEvent("bad_field:v")
    if wire["v"] != VERSION:
        raise RejectedEvent("unsupported_version")
    if not set(wire) <= _FIELDS:
        raise RejectedEvent("unknown_field")
    if missing := sorted(_REQUIRED - set(wire)):
        raise RejectedEvent(f"bad_field:{missing[0]}")
    if not valid_id(wire["item"]):
        raise RejectedEvent("bad_field:item")
    if type(wire["in_stock"]) is not bool:
        raise RejectedEvent("bad_field:in_stock")
    categories = wire["categories"]
    if type(categories) is not list or len(categories) > MAX_CATEGORIES or \
            not all(_text(name, MAX_NAME_CHARS) for name in categories):
        raise RejectedEvent("bad_field:categories")
    return CatalogItem(wire["item"], _checked(wire, "title", MAX_TITLE_CHARS), tuple(categories), wire["in_stock"],
                       _checked(wire, "brand", MAX_NAME_CHARS), _price(wire.get("price")))


def _key(key: bytes | None) -> str:
    try:
        item = key.decode() if key is not None else ""
    except UnicodeDecodeError:
        item = ""
    if not valid_id(item):
        raise RejectedEvent("bad_key")
    return item


def _text(value, most: int) -> bool:
    return type(value) is str and 0 < len(value) <= most and value.isprintable() and bool(value.strip())


def _checked(wire: dict, name: str, most: int) -> str | None:
    value = wire.get(name)
    if value is None and name not in _REQUIRED:
        return None
    if not _text(value, most):
        raise RejectedEvent(f"bad_field:{name}")
    return value


def _price(value) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= MAX_PRICE:
        raise RejectedEvent("bad_field:price")
    return float(value)
