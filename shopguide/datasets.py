"""Readers for the interaction logs we train on and replay: one record type, three formats.

- Amazon sequences (`user item item ...` a line, in time order, no timestamps),
- the Diginetica view log (`session_id;user_id;item_id;timeframe;eventdate`),
- a generic CSV `user,item,timestamp[,type]` (timestamp in seconds since the epoch, or ISO 8601).
"""
from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from shopguide.errors import UserError

KINDS = ("click", "search", "add_to_cart", "purchase")


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    timestamp: float  # seconds since the epoch; Amazon has only the order, so its times are ordinals
    kind: str = "click"


def detect_format(path: Path) -> str:
    if path.is_dir():
        raise UserError(f"{path} is a directory; name the data file inside it")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if first.startswith("session_id;"):
        return "diginetica"
    if "," in first:
        return "csv"
    if first.split() and all(tok.isdigit() for tok in first.split()):
        return "amazon"
    raise UserError(f"{path}: unknown format (expected Amazon sequences, Diginetica views or user,item,timestamp CSV)")


def read(path: Path | str) -> list[Interaction]:
    """All interactions in the file, in time order (ties keep file order)."""
    path = Path(path)
    reader = {"amazon": read_amazon, "diginetica": read_diginetica, "csv": read_csv}[detect_format(path)]
    return sorted(reader(path), key=lambda i: i.timestamp)


def read_amazon(path: Path) -> Iterator[Interaction]:
    """Each user's items get ordinal times 0, 1, 2 ...: sorting by time interleaves the users."""
    with path.open() as f:
        for line in f:
            user, *items = line.split()
            for position, item in enumerate(items):
                yield Interaction(user, item, float(position), "purchase")


def read_diginetica(path: Path) -> Iterator[Interaction]:
    """Anonymous sessions (`NA` user) become users named after the session."""
    with path.open(newline="") as f:
        for row in csv.DictReader(f, delimiter=";"):
            day = dt.datetime.fromisoformat(row["eventdate"]).replace(tzinfo=dt.timezone.utc)
            user = row["user_id"] if row["user_id"] not in ("", "NA") else f"s{row['session_id']}"
            yield Interaction(user, row["item_id"], day.timestamp() + int(row["timeframe"]) / 1000.0, "click")


def read_csv(path: Path) -> Iterator[Interaction]:
    with path.open(newline="") as f:
        rows = csv.reader(f)
        for number, row in enumerate(rows, start=1):
            if number == 1 and row and row[0].strip().lower() == "user":
                continue
            if len(row) not in (3, 4):
                raise UserError(f"{path}:{number}: expected user,item,timestamp[,type], got {len(row)} fields")
            kind = row[3].strip() if len(row) == 4 else "click"
            if kind not in KINDS:
                raise UserError(f"{path}:{number}: unknown event type {kind!r} (one of {', '.join(KINDS)})")
            yield Interaction(row[0].strip(), row[1].strip(), _timestamp(row[2].strip(), path, number), kind)


def _timestamp(text: str, path: Path, number: int) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{path}:{number}: bad timestamp {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def sequences(interactions: Iterable[Interaction]) -> dict[str, list[str]]:
    """Each user's items in time order (searches carry no item and are left out)."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for interaction in interactions:
        if interaction.kind != "search":
            by_user[interaction.user].append(interaction.item)
    return dict(by_user)
