"""Read recommendations off the storefront topic in the background, as a storefront would, and
measure each one's latency: its arrival here minus its event's Kafka timestamp."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import msgpack


class TopicTail:
    """Every record sent to `topics` after `start()` returned, handed to `on_batch(records,
    arrived)` as each fetch lands (arrived: time.time()). It holds every partition, in no consumer
    group, so it reads from the moment it starts without waiting for a group
    coordinator (which a broker restarted on old data may take a while to offer).

    aiokafka on an event loop of its own thread: about a third of kafka-python's CPU per record,
    which a benchmark's measuring process would otherwise take from the pipeline it measures."""

    def __init__(self, settings, topics: list[str], on_batch, timeout_s: float = 30.0):
        self.settings, self.topics, self.on_batch, self.timeout_s = settings, topics, on_batch, timeout_s
        self._stop = threading.Event()
        self._tailing = concurrent.futures.Future()  # done once the ends are fixed (or that failed)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "TopicTail":
        """Returns once the topics' ends are fixed: everything sent from now on is handed on."""
        self._thread.start()
        self._tailing.result(self.timeout_s + 10)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    async def _run(self) -> None:
        try:
            consumer = await self._tail()
        except BaseException as exc:
            self._tailing.set_exception(exc)
            return
        self._tailing.set_result(None)
        try:
            while not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    self.on_batch(records, time.time())
        finally:
            await consumer.stop()

    async def _tail(self):
        from aiokafka import AIOKafkaConsumer

        from shopguide.kafka_security import client_kwargs

        # No group: a subscription is then every partition of the topics, assigned here.
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False,
                                    auto_offset_reset="latest", fetch_max_wait_ms=10, **client_kwargs(self.settings))
        await consumer.start()
        try:
            consumer.subscribe(self.topics)
            deadline = time.monotonic() + self.timeout_s
            while {tp.topic for tp in consumer.assignment()} != set(self.topics) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            partitions = sorted(consumer.assignment())
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)  # fixes the end now, before anything is sent
        except BaseException:
            await consumer.stop()
            raise
        return consumer


class RecommendationWatcher:
    """Collects every recommendation pushed after it started; `on_record` sees each as it lands."""

    def __init__(self, settings, on_record=None):
        self.records: list[dict] = []
        self.latencies: list[float] = []
        self.first_arrival: float | None = None  # time.monotonic() of the first record
        self.on_record = on_record
        self.tail = TopicTail(settings, [settings.topic_recommendations], self._collect)

    def start(self) -> "RecommendationWatcher":
        self.tail.start()
        return self

    def _collect(self, batch, arrived: float) -> None:
        if self.first_arrival is None:
            self.first_arrival = time.monotonic()
        for message in batch:
            record = msgpack.unpackb(message.value, raw=False)
            self.records.append(record)
            self.latencies.append(arrived - record["produced_time"])
            if self.on_record:
                self.on_record(record)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.records) >= count

    def stop(self) -> None:
        self.tail.stop()
