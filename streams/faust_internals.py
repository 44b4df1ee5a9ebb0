"""Every place the worker reaches past Faust's public API, gathered here (checked against
faust-streaming 0.11 and aiokafka 0.14: re-check on upgrades).

- `send`: straight to the aiokafka producer. Faust's `topic.send` (declares, futures, sensors,
  its one-at-a-time buffer that pauses consumption) cost more per message than the send itself.
- `serve_metrics_only`: drop Faust's built-in pages (/router, /table, the index), leaving the
  pages the app adds.
- `check_before_sends`: every request the main thread writes to a broker (the producer's sends
  above all) first asks the stall guard whether the worker may still write.
- `rewind_uncommitted`: a partition the group never committed is sought to its beginning
  whenever Faust seeks to the committed offsets (after a rebalance, and when a fetch returned
  while the flow was stopped). Faust drops records it fetched at such moments and relies on that
  seek to read them again; with no commit to seek to, the fetch position stayed past them, and a
  worker that took over a partition before its first owner's first commit skipped every event
  sent meanwhile (the chaos suite's scenario (c) under load: 776 of 2,966 events).
- `send_now`: close the producer's open batches and wake its sender, so that a batch's confirm
  does not wait out producer_linger_ms for records nothing else will join.
- `fetch_in_batches`: Faust builds its consumer with aiokafka's fetch_min_bytes=1, so every
  fetch returns as soon as one record is there; letting the broker wait a few milliseconds for
  more cuts fetch requests (worker and broker CPU) at moderate rates.
- `take_batches`: Faust's `Stream.take_events`, except that a batch's wait starts when its first
  event arrives, events keep arriving while the previous batch is processed (Faust holds them
  back, then waits the whole `within` again after it: events that came in during a 20 ms Triton
  call waited 20 ms plus another 10), and the caller acks each batch when it is done with it (the
  agent takes the next batch while the one before is still confirmed).
- `deliver_inline`: the consumer's fetch loop hands each message to the streams inside
  `wait_first(deliver(message), flow_suspended.wait())`, which makes four tasks and an
  `asyncio.wait` per message (43 us on uvloop; 17 % of the worker's CPU per event at 1,800/s) to
  cover the rare delivery that blocks. The delivery now runs at once; only one that blocks goes
  through `wait_first`.
"""
from __future__ import annotations

import asyncio
import inspect
import threading
import time
from functools import partial
from typing import AsyncIterator, Awaitable, Callable, Sequence

import faust
from aiokafka.conn import AIOKafkaConnection
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.services import WaitResults


async def send(app: faust.App, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
               headers: list[tuple[str, bytes]] | None = None) -> Awaitable:
    """Queue one record; returns the future of its delivery (RecordMetadata, or the broker's error)."""
    return await app.producer.send(topic, key, value, partition, None, headers)


def send_now(app: faust.App) -> None:
    """Send what the producer holds now instead of after its linger (aiokafka's accumulator: a closed
    batch takes no more records and is ready to drain; the sender sleeps on the waiter until then)."""
    accumulator = app.producer._producer._message_accumulator
    for batches in accumulator._batches.values():
        for batch in batches:
            batch._builder.close()
    if not accumulator._waiter_future.done():
        accumulator._waiter_future.set_result(None)


def serve_metrics_only(app: faust.App) -> None:
    app.web.blueprints._enabled.clear()


def fetch_in_batches(min_bytes: int, max_wait_ms: int) -> None:
    """Worker consumers made from now on fetch at least min_bytes or wait max_wait_ms (process-wide:
    one worker app per process)."""
    create = AIOKafkaConsumerThread.__dict__.get("_shopguide_create", AIOKafkaConsumerThread._create_worker_consumer)

    def tuned(thread, transport):
        consumer = create(thread, transport)
        consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = min_bytes, max_wait_ms  # read when it starts
        return consumer

    AIOKafkaConsumerThread._shopguide_create = create
    AIOKafkaConsumerThread._create_worker_consumer = tuned


def check_before_sends(check: Callable[[], None]) -> None:
    """Call `check` before each request written from the main thread (process-wide: one worker app
    per process). The consumer thread's heartbeats and commits pass unchecked: a busy main loop
    does not cost the group membership they keep."""
    send = AIOKafkaConnection.__dict__.get("_shopguide_send", AIOKafkaConnection.send)
    main = threading.main_thread()

    def checked(connection, request, expect_response=True):
        if threading.current_thread() is main:
            check()
        return send(connection, request, expect_response)

    AIOKafkaConnection._shopguide_send = send
    AIOKafkaConnection.send = checked


def rewind_uncommitted() -> None:
    """Seek partitions without a committed offset to their beginning on every seek to committed
    offsets (process-wide). Replayed events are not applied twice: sessions skip what they hold."""
    seek = AIOKafkaConsumerThread.__dict__.get("_shopguide_seek", AIOKafkaConsumerThread.seek_to_committed)

    async def seek_to_committed(thread):
        committed = await seek(thread)
        unset = [tp for tp, offset in committed.items() if offset is None or offset <= 0]  # aiokafka left these
        if unset:
            await thread.seek_to_beginning(*unset)
        return committed

    AIOKafkaConsumerThread._shopguide_seek = seek
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed


def deliver_inline() -> None:
    """Consumers' `wait_first(coroutine, *coroutines)` (no timeout) runs the first coroutine at once
    and, when it finishes without blocking, returns it as the only winner and closes the others
    unstarted; one that blocks goes on inside Faust's `wait_first`, racing the others as before
    (the winner is then a wrapper of it). Process-wide."""
    wait_first = Consumer.__dict__.get("_shopguide_wait_first", Consumer.wait_first)

    async def inline_wait_first(consumer, *coros, timeout=None):
        if timeout is not None or not coros or not all(inspect.iscoroutine(coro) for coro in coros):
            return await wait_first(consumer, *coros, timeout=timeout)
        first, others = coros[0], coros[1:]
        try:
            blocked_on = first.send(None)
        except StopIteration as done:
            return WaitResults([first], [done.value], False)
        finally:
            if first.cr_frame is None:  # finished or failed: the others never run
                for other in others:
                    other.close()
        return await wait_first(consumer, Resumed(first, blocked_on), *others)

    Consumer._shopguide_wait_first = wait_first
    Consumer.wait_first = inline_wait_first


class Resumed:
    """The rest of a coroutine that was run by hand until it blocked, yielding `blocked_on` (what a
    task would have been handed): awaiting this goes on from there, as `yield from` would."""

    def __init__(self, coro, blocked_on):
        self.coro = coro
        self.blocked_on = blocked_on

    def __await__(self):
        yielded = self.blocked_on
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # the task's cancellation reaches the coroutine
                step = partial(self.coro.throw, exc)
            else:
                step = partial(self.coro.send, sent)
            try:
                yielded = step()
            except StopIteration as done:
                return done.value


async def take_batches(stream, max_: int, within: float) -> AsyncIterator[Sequence]:
    """Batches of the stream's events: up to `max_` each, handed over `within` seconds after the
    batch's first event arrived, or sooner when full. The caller acks each batch (`ack`) once it is
    done with it, which may be after it asked for the next (Faust's take_events acks a batch then)."""
    events: list = []
    first_at = 0.0
    arrived, full, room = asyncio.Event(), asyncio.Event(), asyncio.Event()
    room.set()

    async def add(value):
        nonlocal first_at
        while len(events) >= max_ and not stream.should_stop:  # never more than max_: wait for the batch to go
            await stream.wait(room)
        events.append(stream.current_event)
        if len(events) == 1:
            first_at = time.monotonic()
            arrived.set()
        if len(events) >= max_:
            room.clear()
            full.set()
        return value

    acks = stream.enable_acks
    stream.enable_acks = False  # the caller acks, after the batch was processed
    stream.add_processor(add)
    stream._enable_passive(stream.channel.__aiter__())
    try:
        while not stream.should_stop:
            if not events:
                await stream.wait_for_stopped(arrived, timeout=within)
            left = first_at + within - time.monotonic()
            if events and left > 0:
                await stream.wait_for_stopped(full, timeout=left)
            if not events:
                continue
            batch = events[:]
            events.clear()
            arrived.clear()
            full.clear()
            room.set()
            yield batch
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)


async def ack(stream, events: Sequence) -> None:
    """Ack a batch from take_batches: Faust commits an offset once it and every one before it was acked."""
    for event in events:
        await stream.ack(event)
