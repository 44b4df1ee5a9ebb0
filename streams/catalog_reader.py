"""The whole catalogue topic for a process outside the workers (kafka-python): every partition from
its beginning, in no consumer group, then followed.

`caught_up` says when the reader has reached the ends the topic had when it started, so a caller can
act on the whole catalogue at once rather than on its first records. Records that fail validation
(streams.catalog_schema) are skipped and counted: the workers dead-letter them (streams/catalog.py).
"""
from __future__ import annotations

from collections import Counter

from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs
from streams.catalog_schema import CatalogItem, decode
from streams.events import RejectedEvent


class CatalogReader:
    def __init__(self, settings, progress: bool = True):
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError
        from tqdm import tqdm

        from streams.topics import ensure_topics

        topic = settings.topic_catalog
        ensure_topics(settings, [topic])
        try:
            self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                          enable_auto_commit=False, **client_kwargs(settings))
            self.partitions = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
            self.consumer.assign(self.partitions)
            self.consumer.seek_to_beginning(*self.partitions)
            self.ends = self.consumer.end_offsets(self.partitions)
        except KafkaError as exc:
            raise UserError(f"cannot read {topic} from Kafka at {settings.bootstrap_servers} ({exc})") from None
        self.pending = {tp for tp in self.partitions if self.ends[tp] > 0}
        self.rejected: Counter[str] = Counter()
        self.bar = tqdm(total=sum(self.ends.values()), desc=f"read {topic}", unit=" records",
                        disable=not progress or not self.pending)

    def poll(self, timeout_ms: int) -> list[tuple[str, CatalogItem | None]]:
        """The records fetched, in order per partition: (item id, its record, or None for a tombstone)."""
        found = []
        for records in self.consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                try:
                    found.append(decode(record.key, record.value))
                except RejectedEvent as rejection:
                    self.rejected[rejection.reason] += 1
            if self.pending:
                self.bar.update(len(records))
        return found

    def caught_up(self) -> bool:
        """Whether every record the topic held at the start has been read."""
        for tp in list(self.pending):
            if self.consumer.position(tp) >= self.ends[tp]:
                self.pending.discard(tp)
        if not self.pending and not self.bar.disable:
            self.bar.close()
            self.bar.disable = True
        return not self.pending

    def close(self) -> None:
        self.bar.close()
        self.consumer.close()


def listed_items(settings, progress: bool = True) -> dict[str, CatalogItem]:
    """Every listed item's newest record, as the topic holds them now."""
    reader = CatalogReader(settings, progress)
    listed = {}
    try:
        while not reader.caught_up():
            for item, record in reader.poll(500):
                if record is None:
                    listed.pop(item, None)
                else:
                    listed[item] = record
    finally:
        reader.close()
    return listed
