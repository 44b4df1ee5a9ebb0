"""Read recommendations off the storefront topic in the background, as a storefront would, and
measure each one's latency: its arrival here minus its event's Kafka timestamp."""
from __future__ import annotations

import threading
import time
import uuid

import msgpack


class RecommendationWatcher:
    """Collects every recommendation pushed after it started; `on_record` sees each as it lands."""

    def __init__(self, settings, on_record=None):
        from kafka import KafkaConsumer

        from shopguide.kafka_security import client_kwargs

        self.records: list[dict] = []
        self.latencies: list[float] = []
        self.first_arrival: float | None = None  # time.monotonic() of the first record
        self.on_record = on_record
        self.consumer = KafkaConsumer(settings.topic_recommendations, bootstrap_servers=settings.bootstrap_servers,
                                      group_id=f"watch-{uuid.uuid4().hex[:8]}", auto_offset_reset="latest",
                                      enable_auto_commit=False, fetch_max_wait_ms=10, **client_kwargs(settings))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout_s: float = 30.0) -> "RecommendationWatcher":
        """Start once the consumer holds its partitions, so nothing pushed after this is missed."""
        deadline = time.monotonic() + timeout_s
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=200)
        for partition in self.consumer.assignment():
            self.consumer.position(partition)  # fixes "latest" now, before any event is sent
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
