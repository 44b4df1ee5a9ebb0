"""The session agent: decode, validate, dead-letter or fold into the user's session, hand on.

Events arrive in batches (Faust `take_events`); each batch writes every touched session to the
table once, and passes one SessionUpdate per accepted event to the app's sink. Offsets are acked
only after the batch, so a crash replays it (at least once).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol, Sequence

from shopguide.metrics import WorkerMetrics
from streams.events import Event, Id, RejectedEvent, decode, user_key
from streams.sessions import Session, apply



# (topic, key, value, partition or None for the key's) -> once queued in the Kafka producer
Produce = Callable[[str, bytes, bytes, "int | None"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    user: Id
    key: bytes            # the event's Kafka key, also the table key
    session: Session      # the session right after `event`
    event: Event
    timestamp: float      # Kafka timestamp of the event (seconds)
    topic: str            # where the event was read: names it uniquely with partition and offset
    partition: int
    offset: int


class SessionSink(Protocol):
    """Where accepted events go after their session was updated (the recommender plugs in here).
    Awaited once per batch with that batch's updates in order: keep it quick (hand off, don't
    infer inline), since consumption waits for it."""

    async def __call__(self, updates: Sequence[SessionUpdate]) -> None: ...


class NullSink:
    async def __call__(self, updates: Sequence[SessionUpdate]) -> None:
        return None


class SessionAgent:
    def __init__(self, settings, table, deadletter, metrics: WorkerMetrics, sink: Callable[[], SessionSink],
                 produce: Produce):
        self.length = settings.session_length
        self.take = (settings.batch_max, settings.batch_wait_s)
        self.topics = frozenset(settings.event_topics)
        self.table = table
        self.deadletter = deadletter
        self.metrics = metrics
        self.sink = sink
        self.produce = produce
        self.changelog = table.changelog_topic.get_topic_name()
        self.done: dict = {}  # TP -> last processed offset, for the lag gauge

    async def run(self, stream) -> None:
        async for batch in stream.take_events(*self.take):
            await self.process(batch)

    async def process(self, batch) -> None:
        sessions: dict[bytes, Session] = {}
        partitions: dict[bytes, int] = {}
        updates: list[SessionUpdate] = []
        for faust_event in batch:
            message = faust_event.message
            self.done[message.tp] = message.offset
            try:
                event = decode(message.value)
                if message.key != user_key(event.user):
                    raise RejectedEvent("key_mismatch")
            except RejectedEvent as rejected:
                await self.reject(message, rejected.reason)
                continue
            key = message.key
            session = apply(sessions[key] if key in sessions else self.load(key), event, self.length)
            sessions[key] = session
            partitions[key] = message.partition
            updates.append(SessionUpdate(event.user, key, session, event, message.timestamp,
                                         message.topic, message.partition, message.offset))
        for key, session in sessions.items():
            await self.save(key, session, partitions[key])
        for kind, count in Counter(update.event.type for update in updates).items():
            self.metrics.events.labels(kind).inc(count)
        if updates:
            await self.sink()(updates)

    def load(self, key: bytes) -> Session | None:
        packed = self.table.get(key)
        return Session.unpack(packed) if packed is not None else None

    async def save(self, key: bytes, session: Session, partition: int) -> None:
        """Store and log to the changelog partition matching the event's (what `table[key] = v`
        does for the stream's current event, which in a batch is only the last one).

        Not through `table.send_changelog`: that queues in Faust's producer buffer, which sends
        one message at a time and pauses consumption while more than 100 wait. The memory store
        keeps no persisted offsets, so the buffer's callback has nothing to do here."""
        packed = session.pack()
        self.table.data[key] = packed
        await self.produce(self.changelog, key, packed, partition)

    async def reject(self, message, reason: str) -> None:
        headers = [("reason", reason.encode()), ("source_topic", message.topic.encode()),
                   ("source_partition", str(message.partition).encode()),
                   ("source_offset", str(message.offset).encode())]
        await self.deadletter.send(key=message.key, value=message.value, headers=headers, force=True)
        self.metrics.deadletters.labels(reason).inc()

    async def refresh_gauges(self, consumer) -> None:
        assigned = {tp for tp in consumer.assignment() if tp.topic in self.topics}
        for tp in set(self.done) - assigned:
            del self.done[tp]
        lags = {}
        for tp in assigned:
            high = consumer.highwater(tp)
            position = self.done[tp] + 1 if tp in self.done else await consumer.position(tp)
            if high is not None and position is not None:
                lags[tp] = max(high - position, 0)
        self.metrics.lag.clear()  # revoked partitions drop out
        for tp, lag in lags.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        self.metrics.sessions.set(len(self.table))
