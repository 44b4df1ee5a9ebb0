"""Read recommendations off the storefront topic in the background, as a storefront would, and
measure each one's latency: its arrival here minus its event's Kafka timestamp."""
from __future__ import annotations

import threading
import time

import msgpack


def tail_consumer(settings, topics: list[str], timeout_s: float = 30.0):
    """A consumer holding every partition of `topics` from their current ends: assigned, not a
    group member, so it reads from the moment it returns, without waiting for a group
    coordinator (which a broker restarted on old data may take a while to offer)."""
    from kafka import KafkaConsumer, TopicPartition

    from shopguide.kafka_security import client_kwargs

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             fetch_max_wait_ms=10, **client_kwargs(settings))
    deadline = time.monotonic() + timeout_s
    partitions = []
    for topic in topics:
        while not (numbers := consumer.partitions_for_topic(topic)) and time.monotonic() < deadline:
            time.sleep(0.2)
        partitions += [TopicPartition(topic, n) for n in numbers or ()]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for partition in partitions:
        consumer.position(partition)  # fixes the end now, before anything is sent
    return consumer


class RecommendationWatcher:
    """Collects every recommendation pushed after it started; `on_record` sees each as it lands."""

    def __init__(self, settings, on_record=None):
        self.records: list[dict] = []
        self.latencies: list[float] = []
        self.first_arrival: float | None = None  # time.monotonic() of the first record
        self.on_record = on_record
        self.consumer = tail_consumer(settings, [settings.topic_recommendations])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RecommendationWatcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for batch in self.consumer.poll(timeout_ms=100).values():
                arrived = time.time()
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
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()
