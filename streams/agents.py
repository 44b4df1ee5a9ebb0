"""The session agent: decode, validate, dead-letter or fold into the user's session, hand on.

Events arrive in batches (`faust_internals.take_batches`: up to SHOPGUIDE_BATCH_MAX, each at most
SHOPGUIDE_BATCH_WAIT after its first event arrived); sessions live in a SessionStore (this worker's
partitions, recovered in bulk from the changelog). Each batch is folded into its sessions, asks
the sink (the recommender) for its answers, then queues every touched session's changelog record
once and one recommendation per accepted event in the same outbox, and waits until Kafka has
confirmed all of it; only then are the sessions stored and the batch's events acked. Two batches
are in flight at most: the next is folded, and asks the model once the call before has returned,
while the one before is sent and confirmed; it is sent only after it, so records and acks keep the
events' order. A batch that
cannot be confirmed ends the process (no ack, no commit): after the restart its events are read
again, and sessions skip the events they already hold (`sessions.holds`), so each event is folded
in once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
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
    For each batch, `answer` is awaited with the batch's updates in order (it may run while the batch
    before is still delivered and confirmed), then `deliver` with its result, after the batch before
    was confirmed; what it sends goes through the outbox it was given, so it is confirmed with the batch."""

    async def answer(self, updates: Sequence[SessionUpdate]) -> object: ...

    async def deliver(self, updates: Sequence[SessionUpdate], answers: object) -> None: ...


class NullSink:
    async def answer(self, updates: Sequence[SessionUpdate]) -> None:
        return None

    async def deliver(self, updates: Sequence[SessionUpdate], answers: None) -> None:
        return None


@dataclass(slots=True)
class Folded:
    """A batch folded into its sessions, not yet sent nor confirmed."""
    events: Sequence            # the batch's Faust events, acked once it is confirmed
    updates: list[SessionUpdate] = field(default_factory=list)
    sessions: dict = field(default_factory=dict)  # key -> (the newest session, its partition)
    packed: dict = field(default_factory=dict)    # key -> that session packed, for the changelog and the store
    dead_letters: list[Record] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # its model call is over: the next may ask


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
        self.unconfirmed: dict[bytes, Session] = {}  # sessions folded by a batch still in flight

    async def run(self, stream) -> None:
        """Two batches in flight at most: while one is sent and confirmed, the next is folded and asks
        Triton (once the call before has returned: two calls at once only queue in Triton); it is
        sent only once the one before was confirmed."""
        behind: asyncio.Task | None = None
        asking: asyncio.Event | None = None
        try:
            async for batch in faust_internals.take_batches(stream, *self.take):
                oldest = min(event.message.timestamp for event in batch)
                self.metrics.batch_phase.labels("queued").observe(max(time.time() - oldest, 0.0))
                self.metrics.batch_events.observe(len(batch))
                folded = await self.crash_on_failure(self.fold_batch(batch))
                ahead = asyncio.ensure_future(self.crash_on_failure(self.complete(folded, behind, stream, asking)))
                asking = folded.answered
                if behind is not None:
                    await behind
                behind = ahead
                if time.monotonic() >= self.next_sweep:
                    await behind
                    await self.crash_on_failure(self.evict_idle())
            if behind is not None:
                await behind
        finally:
            if behind is not None and not behind.done():
                behind.cancel()  # stopping: its events were not acked and are read again

    @staticmethod
    async def crash_on_failure(step):
        try:
            return await step
        except Exception as exc:  # going on would ack later batches past this one: stop uncommitted
            log.critical("batch not confirmed, stopping without commit: %s", exc, exc_info=True)
            logging.shutdown()
            os._exit(CRASH_EXIT)

    async def process(self, batch) -> None:
        """One batch from fold to confirm, with nothing else in flight."""
        await self.complete(await self.fold_batch(batch))

    async def fold_batch(self, batch) -> Folded:
        started = time.perf_counter()
        folded = Folded(batch)
        for faust_event in batch:
            message = faust_event.message
            self.done[message.tp] = message.offset
            if not await self.store.ready(message.partition):
                continue  # revoked: its new owner reads it again from the last commit
            try:
                folded.updates.append(self.fold(message, folded.sessions))
            except RejectedEvent as rejected:
                self.reject(folded, message, rejected.reason)
            except Exception as exc:  # a bug or an odd input must not cost the rest of the batch
                log.exception("event %s:%d:%d failed", message.topic, message.partition, message.offset)
                self.reject(folded, message, "processing_error", [("exception", type(exc).__name__.encode())])
        self.count(folded.updates)
        self.guard.check()
        for key, (session, _) in folded.sessions.items():
            folded.packed[key] = session.pack()
            self.unconfirmed[key] = session
        self.metrics.batch_phase.labels("fold").observe(time.perf_counter() - started)
        return folded

    async def complete(self, folded: Folded, behind: asyncio.Future | None = None, stream=None,
                       asking: asyncio.Event | None = None) -> None:
        """Answer `folded` once the batch before has its answers (`asking` set), wait for that batch
        (`behind`) to be confirmed, send, confirm; then store its sessions and ack its events (on
        `stream`)."""
        phases = self.metrics.batch_phase
        started = time.perf_counter()
        try:
            if asking is not None:
                await asking.wait()
            answers = await self.sink.answer(folded.updates) if folded.updates else None
        finally:
            folded.answered.set()
        answered = time.perf_counter()
        if behind is not None:
            await behind
        waited = time.perf_counter()
        for record in folded.dead_letters:
            await self.outbox.put(record)
        for key, (_, partition) in folded.sessions.items():
            await self.outbox.put(Record("changelog", self.changelog, key, folded.packed[key], partition))
        if folded.updates:
            await self.sink.deliver(folded.updates, answers)
        sent = time.perf_counter()
        await self.outbox.confirm()
        for phase, seconds in (("answer", answered - started), ("wait", waited - answered), ("send", sent - waited),
                               ("confirm", time.perf_counter() - sent)):
            phases.labels(phase).observe(seconds)
        for key, (session, partition) in folded.sessions.items():
            self.store.put(partition, key, folded.packed[key])
            self.seen_at[key] = session.last_seen
            if self.unconfirmed.get(key) is session:
                del self.unconfirmed[key]
        if stream is not None:
            await faust_internals.ack(stream, folded.events)

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
        if key in self.unconfirmed:
            return self.unconfirmed[key]
        packed = self.store.get(partition, key)
        return Session.unpack(packed) if packed is not None else None

    def reject(self, folded: Folded, message, reason: str, extra: list[tuple[str, bytes]] = ()) -> None:
        folded.dead_letters.append(dead_letter(self.deadletter, message, reason, extra))
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
