"""The chaos suite's storefront: a seeded mix of clicks, searches, add-to-carts and purchases from
many users, some malformed payloads among them, offered at a steady rate from a thread.

Each user's item-carrying events stay within the session length, and their searches within what
a session keeps, so the checker can compare a whole session with the events that made it; a
third of the users only click, so their exact item order is checked too.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import msgpack

from shopguide.errors import UserError
from streams.events import Event, encode, topic_for, user_key
from streams.sessions import MAX_SEARCHES
from streams.worker_process import wait_for

OVERSIZED_BYTES = 1_000_500  # over the worker's 64 KiB event limit and Faust's 1,000,000-byte request limit
ITEMS = 5000  # item ids "1".."5000": the Toys model knows them
QUERIES = ("lego", "puzzle", "doll house", "train set", "board game", "plush", "kite", "robot kit")
MIXED = (("click", 0.55), ("search", 0.2), ("add_to_cart", 0.15), ("purchase", 0.1))
# Payloads the worker must dead-letter, one kind after another.
MALFORMED = ("garbage", "not_a_map", "version", "unknown_type", "key_mismatch", "empty")

Message = tuple[str, bytes, bytes]  # topic, key, value


@dataclass(frozen=True)
class Workload:
    events: int = 20_000
    users: int = 1_000
    session_length: int = 50
    malformed: float = 0.01  # share of payloads that are malformed
    oversized: bool = False  # one OVERSIZED_BYTES payload half way through
    seed: int = 0

    def check(self) -> None:
        room = sum(self.session_length + (0 if clicks_only(u) else MAX_SEARCHES) for u in range(self.users))
        if self.events > 0.8 * room:
            raise UserError(f"{self.events:,} events from {self.users:,} users would overflow their sessions "
                            f"(the checker compares whole sessions): use more users")

    def messages(self, settings) -> Iterator[Message]:
        self.check()
        rng = random.Random(self.seed)
        room = {u: [self.session_length, 0 if clicks_only(u) else MAX_SEARCHES] for u in range(self.users)}
        for n in range(self.events):
            if self.oversized and n == self.events // 2:
                yield oversized(settings, rng.randrange(self.users))
            elif rng.random() < self.malformed:
                yield malformed(settings, rng, MALFORMED[n % len(MALFORMED)], rng.randrange(self.users))
            else:
                event = _next_event(rng, room)
                yield topic_for(event.type, settings), user_key(event.user), encode(event)


def clicks_only(user: int) -> bool:
    return user % 3 == 0


def user_name(user: int) -> str:
    return f"chaos-{user}"


def _next_event(rng: random.Random, room: dict[int, list[int]]) -> Event:
    """An event of a user with room left for it; a user with none left stops sending."""
    while room:
        user = rng.choice(list(room))
        items, searches = room[user]
        kind = "click" if clicks_only(user) else rng.choices([k for k, _ in MIXED], [w for _, w in MIXED])[0]
        if kind == "search" and not searches:
            kind = "click"
        if kind != "search" and not items:
            kind = "search" if searches else None
        if kind is None:
            del room[user]
            continue
        return _event(rng, user, kind, room[user])
    raise UserError("every user's session is full: use more users")


def _event(rng: random.Random, user: int, kind: str, room: list[int]) -> Event:
    name, now = user_name(user), time.time()
    if kind == "search":
        room[1] -= 1
        return Event("search", name, f"s{user}", now, query=rng.choice(QUERIES))
    count = min(rng.randint(1, 3), room[0]) if kind == "purchase" else 1
    room[0] -= count
    items = tuple(str(rng.randint(1, ITEMS)) for _ in range(count))
    return Event(kind, name, f"s{user}", now, items=items, value=9.99 * count if kind == "purchase" else None)


def malformed(settings, rng: random.Random, kind: str, user: int) -> Message:
    topic = rng.choice(settings.event_topics)
    wire = Event("click", user_name(user), "s", time.time(), items=("1",)).to_wire()
    key = user_key(user_name(user))
    value = {"garbage": b"\xc1\x00junk", "not_a_map": msgpack.packb([1, 2, 3]),
             "version": msgpack.packb({**wire, "v": 2}), "unknown_type": msgpack.packb({**wire, "type": "refund"}),
             "key_mismatch": msgpack.packb(wire), "empty": b""}[kind]
    if kind == "key_mismatch":
        key = user_key(user_name(user + 1))
    return topic, key, value


def oversized(settings, user: int) -> Message:
    """A search whose query pads it to exactly OVERSIZED_BYTES (msgpack str32: 5-byte header)."""
    wire = Event("search", user_name(user), "s", time.time(), query="q").to_wire()
    padding = OVERSIZED_BYTES - len(msgpack.packb({**wire, "query": ""})) - 4
    value = msgpack.packb({**wire, "query": "x" * padding})
    assert len(value) == OVERSIZED_BYTES
    return settings.topic_searches, user_key(user_name(user)), value


class Load(threading.Thread):
    """Offers the workload's messages at `rate` per second; `sent` counts them, `failed` those the
    broker never took (with retries for minutes, a broker outage alone fails none)."""

    def __init__(self, settings, workload: Workload, rate: float):
        super().__init__(daemon=True, name="chaos-load")
        self.settings, self.workload, self.rate = settings, workload, rate
        self.sent = self.failed = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, linger_ms=5,
                                 max_request_size=2 * 1024 * 1024, max_block_ms=300_000,
                                 delivery_timeout_ms=300_000)
        try:
            start = time.monotonic()
            for n, (topic, key, value) in enumerate(self.workload.messages(self.settings)):
                if self.stopping.is_set():
                    break
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.send(topic, key=key, value=value).add_errback(self._failed)
                self.sent = n + 1
            producer.flush()
        except BaseException as error:  # reported by the scenario, not lost in a thread
            self.error = error
        finally:
            producer.close()

    def _failed(self, _error) -> None:
        self.failed += 1

    def wait_sent(self, fraction: float) -> None:
        """Until `fraction` of the workload was offered (or the load ended)."""
        limit = self.workload.events / self.rate * 3 + 300
        wait_for(lambda: self.sent >= fraction * self.workload.events or not self.is_alive(), limit,
                 f"{fraction:.0%} of the load offered")

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise UserError(f"the load generator failed: {self.error!r}")
