"""Produce events into the event topics: from data sets (replay) or one at a time (tests, tools).

Interactions from shopguide.datasets become schema-v1 events keyed by user. Diginetica views keep
their real times (optionally replayed at `speedup` times real time); Amazon sequences only have
an order, so their events are stamped with the send time and interleaved across users.
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

from shopguide.datasets import Interaction
from streams.events import TS_RANGE, Event, encode, topic_for, user_key


def publish(producer, settings, event: Event):
    """Send one event, keyed by user, to its topic; returns the producer's `send` (kafka-python's
    future, or aiokafka's coroutine to await)."""
    return producer.send(topic_for(event.type, settings), key=user_key(event.user), value=encode(event))


def to_event(interaction: Interaction, now: float) -> Event:
    """The user doubles as the session id: the data sets have no separate one we keep."""
    ts = interaction.timestamp if TS_RANGE[0] <= interaction.timestamp <= TS_RANGE[1] else now
    if interaction.kind == "search":
        return Event("search", interaction.user, interaction.user, ts, query=interaction.item)
    return Event(interaction.kind, interaction.user, interaction.user, ts, items=(interaction.item,))


def paced(interactions: list[Interaction], rate: float | None = None,
          speedup: float | None = None) -> Iterator[Interaction]:
    """Yield at `rate` events/s, or at `speedup` times the data's own pace (`.timestamp`), or as
    fast as possible."""
    start, first = time.monotonic(), interactions[0].timestamp if speedup and interactions else 0.0
    for number, interaction in enumerate(interactions):
        if rate:
            due = start + number / rate
        elif speedup:
            due = start + (interaction.timestamp - first) / speedup
        else:
            due = 0.0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield interaction


def make_producer(settings, linger_ms: int = 10):
    from kafka import KafkaProducer

    from shopguide.kafka_security import client_kwargs

    # Larger batches and a short linger: throughput matters more than per-event latency here.
    return KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=linger_ms, batch_size=256 * 1024,
                         max_in_flight_requests_per_connection=5, acks=1, **client_kwargs(settings))


def produce(settings, events: Iterable[Event], total: int | None = None, progress: bool = True) -> int:
    """Send every event; returns how many were sent (all acknowledged by the broker)."""
    from tqdm import tqdm

    producer = make_producer(settings)
    sent = 0
    try:
        for event in tqdm(events, total=total, unit=" events", disable=not progress, smoothing=0.1):
            publish(producer, settings, event)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def replay(settings, path, rate: float | None = None, speedup: float | None = None,
           limit: int | None = None, progress: bool = True) -> int:
    from shopguide.datasets import read
    from streams.topics import ensure_topics

    interactions = read(path)[:limit] if limit else read(path)
    ensure_topics(settings)
    now = time.time()
    events = (to_event(i, now if not (rate or speedup) else time.time())
              for i in paced(interactions, rate, speedup))
    return produce(settings, events, total=len(interactions), progress=progress)
