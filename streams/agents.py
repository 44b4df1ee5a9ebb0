"""The session agent: decode, validate, dead-letter or fold into the user's session, hand on.

Events arrive in batches (`faust_internals.take_batches`: up to SHOPGUIDE_BATCH_MAX, each at most
SHOPGUIDE_BATCH_WAIT after its first event arrived); sessions live in a SessionStore (this worker's
partitions, recovered in bulk from the changelog). Each batch queues every touched session's
changelog record once, hands one SessionUpdate per accepted event to the sink (the recommender,
which queues its answers in the same outbox), and then waits until Kafka has confirmed all of it;
only then are the sessions stored and the batch's offsets acked. Faust acks a batch when the
agent moves past it, even on an exception, so a batch that cannot be confirmed ends the process
instead (no commit): after the restart its events are read again, and sessions skip the events
they already hold (`sessions.holds`), so each event is folded in once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol, Sequence

from aiokafka.errors import IllegalStateError

from shopguide.metrics import WorkerMetrics
from streams import faust_internals
from streams.delivery import Outbox, Record, dead_letter
from streams.events import Event, Id, RejectedEvent, decode, user_key
from streams.session_store import SessionStore
from streams.sessions import Session, apply, holds, source
from streams.stall_guard import StallGuard

log = logging.getLogger(__name__)

CRASH_EXIT = 70  # EX_SOFTWARE: the orchestrator restarts the worker, which replays the batch
SWEEP_EVERY_S = 60.0
SWEEP_CHUNK = 10_000


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
    Awaited once per batch with that batch's updates in order; what it sends goes through the
    outbox it was given, so it is confirmed with the batch."""

    async def __call__(self, updates: Sequence[SessionUpdate]) -> None: ...


class NullSink:
    async def __call__(self, updates: Sequence[SessionUpdate]) -> None:
        return None


class SessionAgent:
    def __init__(self, settings, store: SessionStore, metrics: WorkerMetrics, sink: SessionSink, outbox: Outbox,
                 guard: StallGuard):
        self.length = settings.session_length
        self.ttl_s = settings.session_ttl_s
        self.take = (settings.batch_max, settings.batch_wait_s)
        self.topics = frozenset(settings.event_topics)
        self.deadletter = settings.topic_deadletter
        self.store = store
        self.metrics = metrics
        self.sink = sink
        self.outbox = outbox
        self.guard = guard
        self.changelog = store.changelog
        self.done: dict = {}  # TP -> last processed offset, for the lag gauge
        self.clock = 0.0      # newest event time seen: the TTL's clock
        self.seen_at: dict[bytes, float] = {}  # key -> last_seen, filled by saves and sweeps
        self.next_sweep = time.monotonic() + SWEEP_EVERY_S

    async def run(self, stream) -> None:
        async for batch in faust_internals.take_batches(stream, *self.take):
            try:
                oldest = min(event.message.timestamp for event in batch)
                self.metrics.batch_phase.labels("queued").observe(max(time.time() - oldest, 0.0))
                self.metrics.batch_events.observe(len(batch))
                await self.process(batch)
                if time.monotonic() >= self.next_sweep:
                    await self.evict_idle()
            except Exception as exc:  # returning would let Faust ack the batch: stop uncommitted
                log.critical("batch not confirmed, stopping without commit: %s", exc, exc_info=True)
                logging.shutdown()
                os._exit(CRASH_EXIT)

    async def process(self, batch) -> None:
        started = time.perf_counter()
        sessions: dict[bytes, tuple[Session, int]] = {}
        updates: list[SessionUpdate] = []
        for faust_event in batch:
            message = faust_event.message
            self.done[message.tp] = message.offset
            if not await self.store.ready(message.partition):
                continue  # revoked: its new owner reads it again from the last commit
            try:
                updates.append(self.fold(message, sessions))
            except RejectedEvent as rejected:
                await self.reject(message, rejected.reason)
            except Exception as exc:  # a bug or an odd input must not cost the rest of the batch
                log.exception("event %s:%d:%d failed", message.topic, message.partition, message.offset)
                await self.reject(message, "processing_error", [("exception", type(exc).__name__.encode())])
        self.count(updates)
        self.guard.check()
        packed = {key: session.pack() for key, (session, _) in sessions.items()}
        for key, (_, partition) in sessions.items():
            await self.outbox.put(Record("changelog", self.changelog, key, packed[key], partition))
        folded = time.perf_counter()
        if updates:
            await self.sink(updates)
        answered = time.perf_counter()
        await self.outbox.confirm()
        phases = self.metrics.batch_phase
        phases.labels("fold").observe(folded - started)
        phases.labels("answer").observe(answered - folded)
        phases.labels("confirm").observe(time.perf_counter() - answered)
        for key, (session, partition) in sessions.items():
            self.store.put(partition, key, packed[key])
            self.seen_at[key] = session.last_seen

    def fold(self, message, sessions: dict) -> SessionUpdate:
        event = decode(message.value)
        if message.key != user_key(event.user):
            raise RejectedEvent("key_mismatch")
        key = message.key
        session = sessions[key][0] if key in sessions else self.load(message.partition, key)
        at = source(message.topic, message.partition)
        if holds(session, at, message.offset):
            self.metrics.replayed.inc()
        else:
            session = apply(session, event, self.length, at, message.offset)
            sessions[key] = (session, message.partition)
            self.clock = max(self.clock, event.ts)
        return SessionUpdate(event.user, key, session, event, message.timestamp,
                             message.topic, message.partition, message.offset)

    def count(self, updates: Sequence[SessionUpdate]) -> None:
        for kind, count in Counter(update.event.type for update in updates).items():
            self.metrics.events.labels(kind).inc(count)

    def load(self, partition: int, key: bytes) -> Session | None:
        packed = self.store.get(partition, key)
        return Session.unpack(packed) if packed is not None else None

    async def reject(self, message, reason: str, extra: list[tuple[str, bytes]] = ()) -> None:
        await self.outbox.put(dead_letter(self.deadletter, message, reason, extra))
        self.metrics.deadletters.labels(reason).inc()

    async def evict_idle(self) -> None:
        """Tombstone the sessions idle longer than the TTL in event time, so neither this worker's
        memory nor a recovery keeps them."""
        self.next_sweep = time.monotonic() + SWEEP_EVERY_S
        horizon = self.clock - self.ttl_s
        held, idle = set(), []
        for n, (partition, key, packed) in enumerate(self.store.items()):
            held.add(key)
            if key not in self.seen_at:
                self.seen_at[key] = Session.unpack(packed).last_seen
            if self.seen_at[key] < horizon:
                idle.append((partition, key))
            if n % SWEEP_CHUNK == 0:
                await asyncio.sleep(0)
        self.seen_at = {key: seen for key, seen in self.seen_at.items() if key in held}  # revoked ones go
        for partition, key in idle:
            await self.outbox.put(Record("changelog", self.changelog, key, None, partition))
        await self.outbox.confirm()
        for partition, key in idle:
            self.store.delete(partition, key)
            self.seen_at.pop(key, None)
        self.metrics.evicted.inc(len(idle))

    async def refresh_gauges(self, consumer) -> None:
        assigned = {tp for tp in consumer.assignment() if tp.topic in self.topics}
        for tp in set(self.done) - assigned:
            del self.done[tp]
        lags = {}
        for tp in assigned:
            high = consumer.highwater(tp)
            try:
                position = self.done[tp] + 1 if tp in self.done else await consumer.position(tp)
            except IllegalStateError:  # revoked after assignment() was read: a gauge must not stop the worker
                continue
            if high is not None and position is not None:
                lags[tp] = max(high - position, 0)
        self.metrics.lag.clear()  # revoked partitions drop out
        for tp, lag in lags.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        self.metrics.sessions.set(len(self.store))
