"""The fine-tune job's view of the event log: a bounded window of events after its position.

A run reads each source partition ("topic:partition") from its position (trainer/runs.py: where
the last committed run stopped; before any, the consumer group's committed offset, else the
oldest event) up to the end its caller sets (the fold frontier, trainer/histories.py), and at
most `max_events` records in all: a backlog is caught up over several runs. Partitions are
assigned by hand: one reader, no rebalance. Payloads get the worker's checks (`accept`); the
ones it dead-letters are counted and skipped. The consumer group's offsets only mirror the run
log's position, for lag monitors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs
from streams.events import Event, RejectedEvent, decode, user_key
from streams.sessions import source

POLL_MS = 500


def accept(key: bytes | None, payload: bytes | None) -> Event:
    """The worker's checks of one record (streams.agents.SessionAgent.fold): the codec, then the
    key every event topic is partitioned by. Raises RejectedEvent where the worker dead-letters."""
    event = decode(payload)
    if key != user_key(event.user):
        raise RejectedEvent("key_mismatch")
    return event


@dataclass(frozen=True)
class Read:
    at: str  # source partition, "topic:partition"
    offset: int
    event: Event


@dataclass
class Window:
    starts: dict[str, int]  # per source partition, the first offset of the window
    ends: dict[str, int]  # ... and the offset after its last record
    events: list[Read] = field(default_factory=list)  # the accepted events, in log order per partition
    rejected: int = 0  # records the worker dead-letters
    full: bool = False  # stopped at max_events with more to read

    def spans(self) -> dict[str, list[int]]:
        """[start, end) of each partition the window moved, for the run record."""
        return {at: [self.starts[at], end] for at, end in self.ends.items() if end > self.starts[at]}


def read_range(consumer, starts: dict, ends: dict):
    """(partition, record) for every record from each partition's start offset up to its end,
    partitions interleaved as the consumer fetches them."""
    pending = {tp for tp in starts if ends[tp] > starts[tp]}
    consumer.assign(list(pending))
    consumer.resume(*pending)  # assigning the same partitions again keeps the earlier read's pauses
    for tp in pending:
        consumer.seek(tp, starts[tp])
    while pending:
        for tp, records in consumer.poll(timeout_ms=POLL_MS).items():
            for record in records:
                if record.offset < ends[tp]:
                    yield tp, record
            if consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
                consumer.pause(tp)


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

    def partitions(self) -> dict[str, object]:
        """Source partition name -> TopicPartition, for every event topic."""
        from kafka import TopicPartition

        return {source(topic, number): TopicPartition(topic, number) for topic in self.settings.event_topics
                for number in sorted(self.consumer.partitions_for_topic(topic) or ())}

    def starts(self, position: dict[str, int]) -> dict[str, int]:
        """Where the next window starts: the run log's position, else this group's committed
        offset, else the oldest event; never before the oldest event still kept."""
        partitions = self.partitions()
        oldest = self.consumer.beginning_offsets(list(partitions.values()))
        return {at: max(oldest[tp], position[at] if at in position else self.consumer.committed(tp) or 0)
                for at, tp in partitions.items()}

    def folded(self) -> dict[str, int]:
        """Per source partition, the workers' committed offset: every event below it is in a
        session the changelog has confirmed (or dead-lettered)."""
        from kafka import KafkaConsumer

        # Their group's offsets read by a consumer that never joins it (no subscribe).
        workers = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=self.settings.worker_id,
                                enable_auto_commit=False, **client_kwargs(self.settings))
        try:
            committed = {at: workers.committed(tp) for at, tp in self.partitions().items()}
        finally:
            workers.close()
        return {at: offset for at, offset in committed.items() if offset is not None}

    def lag(self, position: dict[str, int]) -> int:
        """Events in the log past the position."""
        partitions = self.partitions()
        if not partitions:
            return 0
        ends = self.consumer.end_offsets(list(partitions.values()))
        starts = self.starts(position)
        return sum(max(0, ends[tp] - starts[at]) for at, tp in partitions.items())

    def read(self, starts: dict[str, int], ends: dict[str, int], max_events: int, progress=None) -> Window:
        """The records from `starts` up to `ends`, at most `max_events` of them."""
        partitions = self.partitions()
        window = Window(dict(starts), dict(starts))
        by_tp = {tp: at for at, tp in partitions.items()}
        taken = 0
        for tp, record in read_range(self.consumer, {tp: starts[at] for at, tp in partitions.items()},
                                     {tp: ends[at] for at, tp in partitions.items()}):
            if taken == max_events:
                window.full = True
                break
            self._take(by_tp[tp], record, window)
            taken += 1
            if progress is not None:
                progress.update(1)
        else:
            window.ends.update(ends)
        return window

    def commit(self, ends: dict[str, int]) -> None:
        from kafka.structs import OffsetAndMetadata

        partitions = self.partitions()
        offsets = {partitions[at]: OffsetAndMetadata(end, "", -1) for at, end in ends.items() if at in partitions}
        if offsets:
            self.consumer.commit(offsets)

    def close(self) -> None:
        self.consumer.close()

    @staticmethod
    def _take(at: str, record, window: Window) -> None:
        window.ends[at] = record.offset + 1
        try:
            window.events.append(Read(at, record.offset, accept(record.key, record.value)))
        except RejectedEvent:
            window.rejected += 1
