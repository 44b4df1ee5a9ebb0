"""The fine-tune job's view of the event log: the events accepted since its last committed offsets.

Its own consumer group (default `shopguide-finetune`) holds those offsets. Partitions are
assigned by hand, not through a group join: one reader, no rebalance, and a run reads exactly up
to the end offsets it saw when it started, so later events wait for the next run. Offsets move
only when the caller commits (after a publish or a decided rejection).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs
from streams.events import RejectedEvent, decode

POLL_MS = 500


@dataclass
class Batch:
    events: list = field(default_factory=list)  # streams.events.Event, in log order per partition
    rejected: int = 0  # payloads the codec refused (the worker dead-letters them)
    ends: dict = field(default_factory=dict)  # TopicPartition -> the offset to commit after this batch


class EventLog:
    def __init__(self, settings: Settings, group: str):
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.settings = settings
        try:
            self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                          enable_auto_commit=False, auto_offset_reset="earliest",
                                          request_timeout_ms=30_000, **client_kwargs(settings))
        except KafkaError as exc:
            raise UserError(f"Kafka at {settings.bootstrap_servers}: {exc} (shopguide broker start)") from None

    def partitions(self) -> list:
        from kafka import TopicPartition

        found = []
        for topic in self.settings.event_topics:
            for number in sorted(self.consumer.partitions_for_topic(topic) or ()):
                found.append(TopicPartition(topic, number))
        return found

    def lag(self) -> int:
        """Events in the log not yet committed by this group."""
        partitions = self.partitions()
        if not partitions:
            return 0
        ends = self.consumer.end_offsets(partitions)
        return sum(end - self._committed(tp) for tp, end in ends.items())

    def read(self, progress=None) -> Batch:
        """Every event from the committed offsets up to the end offsets as of now."""
        partitions = self.partitions()
        batch = Batch()
        if not partitions:
            return batch
        self.consumer.assign(partitions)
        batch.ends = self.consumer.end_offsets(partitions)
        for tp in partitions:
            self.consumer.seek(tp, self._committed(tp))
        pending = {tp for tp in partitions if self.consumer.position(tp) < batch.ends[tp]}
        while pending:
            for tp, records in self.consumer.poll(timeout_ms=POLL_MS).items():
                for record in records:
                    if record.offset < batch.ends[tp]:
                        self._take(record.value, batch)
                        if progress is not None:
                            progress.update(1)
                if self.consumer.position(tp) >= batch.ends[tp]:
                    pending.discard(tp)
                    self.consumer.pause(tp)
        self.consumer.resume(*partitions)
        return batch

    def commit(self, batch: Batch) -> None:
        from kafka.structs import OffsetAndMetadata

        if batch.ends:
            self.consumer.commit({tp: OffsetAndMetadata(end, "", -1) for tp, end in batch.ends.items()})

    def close(self) -> None:
        self.consumer.close()

    def _committed(self, tp) -> int:
        committed = self.consumer.committed(tp)
        if committed is not None:
            return committed
        return self.consumer.beginning_offsets([tp])[tp]  # a new group starts at the oldest event

    @staticmethod
    def _take(payload: bytes, batch: Batch) -> None:
        try:
            batch.events.append(decode(payload))
        except RejectedEvent:
            batch.rejected += 1
