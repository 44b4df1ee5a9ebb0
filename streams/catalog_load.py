"""Produce the catalogue topic: every item of a file (`shopguide catalog load`), or one item's
stock or listing (`shopguide catalog set`).

Rows are checked by the workers' own validation (streams.catalog_schema) before they are sent: a
bad row is skipped and counted, never sent. Records are keyed by item id and partitioned by the
Java client's default (murmur2 of the key), as every producer of the topic must be, so each item's
records stay in order in one partition; `set` reads the item's newest record back from that
partition to change only its stock.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from shopguide.catalogue import count_rows, item_rows
from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs
from streams.catalog_schema import VERSION, CatalogItem, decode, encode, from_wire, item_key
from streams.events import RejectedEvent
from streams.replay import make_producer

EXAMPLES = 5  # skipped rows named in the report
STATES = ("in_stock", "out_of_stock", "delisted")


@dataclass
class Loaded:
    sent: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    examples: list[str] = field(default_factory=list)  # "line N: reason" of the first skipped rows

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"line {line}: {reason}")

    def summary(self) -> str:
        if not self.skipped:
            return "no row skipped"
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
        return f"skipped {sum(self.skipped.values())} rows ({reasons}; {', '.join(self.examples)})"


def load(settings, path, progress: bool = True) -> Loaded:
    """Send every good row of `path` to the catalogue topic; all sends are confirmed on return."""
    from tqdm import tqdm

    from streams.topics import ensure_topics

    rows = item_rows(path)  # checks the file's header before anything is sent
    ensure_topics(settings)
    loaded, failures = Loaded(), []
    producer = make_producer(settings)
    try:
        for row in tqdm(rows, total=count_rows(path), unit=" items", disable=not progress, smoothing=0.1):
            record, reason = _record(row)
            if record is None:
                loaded.skip(row.line, reason)
                continue
            producer.send(settings.topic_catalog, key=item_key(record.item), value=encode(record)) \
                .add_errback(failures.append)
            loaded.sent += 1
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise UserError(f"{len(failures)} of {loaded.sent} records were not accepted by Kafka: {failures[0]}")
    if not loaded.sent and loaded.skipped:
        raise UserError(f"{path}: no row could be read: {loaded.summary()}")
    return loaded


def _record(row) -> tuple[CatalogItem | None, str | None]:
    if row.fields is None:
        return None, row.problem
    try:
        return from_wire({"v": VERSION, **row.fields}), None
    except RejectedEvent as rejected:
        return None, rejected.reason


def set_state(settings, item: str, state: str) -> None:
    """Mark `item` in stock, out of stock (its newest record with only `in_stock` changed) or
    delisted (a tombstone)."""
    from streams.topics import ensure_topics

    ensure_topics(settings)
    value = None
    if state != "delisted":
        record = newest(settings, item)
        if record is None:
            raise UserError(f"item {item!r} is not in {settings.topic_catalog} (delisted or never loaded): "
                            "load it with `shopguide catalog load` first")
        value = encode(dataclasses.replace(record, in_stock=state == "in_stock"))
    producer = make_producer(settings, linger_ms=0)
    try:
        producer.send(settings.topic_catalog, key=item_key(item), value=value).get(timeout=30)
    finally:
        producer.close()


def newest(settings, item: str) -> CatalogItem | None:
    """The item's newest record in its partition of the catalogue topic; None if none or a tombstone."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.partitioner.default import murmur2

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             **client_kwargs(settings))
    try:
        partitions = sorted(consumer.partitions_for_topic(settings.topic_catalog) or ())
        key = item_key(item)
        tp = TopicPartition(settings.topic_catalog, partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)])
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end, found = consumer.end_offsets([tp])[tp], None
        while consumer.position(tp) < end:
            for record in consumer.poll(timeout_ms=1000).get(tp, ()):
                if record.key == key:
                    found = record.value
    finally:
        consumer.close()
    try:
        return decode(key, found)[1] if found is not None else None
    except RejectedEvent as rejected:
        raise UserError(f"item {item!r}: its newest record in {settings.topic_catalog} is invalid "
                        f"({rejected.reason}); load it again") from None
