"""Check what a pipeline left in Kafka against what it promises (the chaos suite's checker).

Reads one pipeline's event topics, recommendations, dead letters and session changelog and counts:
- accepted events (those `decode` accepts, keyed by their user) with no recommendation (lost),
  and extra recommendations for the same event (duplicates: allowed after a crash, counted);
- users whose newest session is not the fold of their accepted events, each once (mismatches);
- rejected payloads not in the dead-letter topic with their reason.

A user's events on different topics interleave in an order Kafka does not record, so a session
is compared on what does not depend on that order (`session_differences`).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import msgpack

from shopguide.config import Settings
from streams.events import MAX_PAYLOAD_BYTES, Event, RejectedEvent, decode, user_key
from streams.sessions import MAX_PURCHASED, MAX_SEARCHES, Session, source
from streams.topics import changelog_topic

Position = tuple[str, int, int]  # topic, partition, offset
EXAMPLES = 5  # problems of each kind quoted in the report


@dataclass(frozen=True)
class Accepted:
    topic: str
    partition: int
    offset: int
    event: Event


@dataclass
class Audit:
    records: int = 0            # on the event topics
    accepted: int = 0
    rejected: int = 0
    dead_lettered: int = 0      # rejected payloads found in the dead-letter topic with their reason
    lost: int = 0               # accepted events without a recommendation
    duplicates: int = 0         # recommendations beyond the first for an event
    mismatches: int = 0         # users whose session is not the fold of their accepted events
    differing: Counter = field(default_factory=Counter)  # mismatched users per session field
    examples: list[str] = field(default_factory=list)

    @property
    def missing_dead_letters(self) -> int:
        return self.rejected - self.dead_lettered

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.mismatches == 0 and self.missing_dead_letters == 0


def classify(records) -> tuple[list[Accepted], dict[Position, tuple[str, bytes]]]:
    """Event-topic records as the worker must see them: accepted events, and per rejected record
    its reason and payload."""
    accepted, rejected = [], {}
    for record in records:
        try:
            event = decode(record.value)
            if record.key != user_key(event.user):
                raise RejectedEvent("key_mismatch")
        except RejectedEvent as rejection:
            rejected[(record.topic, record.partition, record.offset)] = (rejection.reason, record.value or b"")
            continue
        accepted.append(Accepted(record.topic, record.partition, record.offset, event))
    return accepted, rejected


def answered(recommendations: Iterable[bytes]) -> Counter:
    """Recommendations per event position (their `event_offset`, "topic:partition:offset")."""
    counts = Counter()
    for value in recommendations:
        topic, partition, offset = msgpack.unpackb(value, raw=False)["event_offset"].rsplit(":", 2)
        counts[(topic, int(partition), int(offset))] += 1
    return counts


def dead_lettered(rejected: dict[Position, tuple[str, bytes]], records) -> set[Position]:
    """Rejected positions found in dead-letter `records` with their reason and payload (or, with a
    `truncated` header, the payload's start)."""
    found = set()
    for record in records:
        headers = {name: value.decode() for name, value in record.headers or ()}
        try:
            at = (headers["source_topic"], int(headers["source_partition"]), int(headers["source_offset"]))
        except (KeyError, ValueError):
            continue
        if at not in rejected:
            continue
        reason, payload = rejected[at]
        value = record.value or b""
        whole = value == payload or ("truncated" in headers and len(value) <= MAX_PAYLOAD_BYTES
                                     and payload.startswith(value))
        if headers.get("reason") == reason and whole:
            found.add(at)
    return found


def newest_sessions(records) -> dict[bytes, Session | None]:
    """The newest changelog record per key; None where it is a tombstone."""
    newest = {record.key: record.value for record in records}
    return {key: Session.unpack(value) if value is not None else None for key, value in newest.items()}


def session_differences(events: Sequence[Accepted], session: Session | None, length: int) -> list[str]:
    """How `session` differs from the fold of one user's accepted `events`, each once, in any order
    across topics: counts per type, items (a multiset), searches, purchased items, event time,
    the newest offset applied per source partition, and, when all events came from one topic
    (so their order is known), the exact item sequence. Empty when they agree."""
    if not events:
        return [] if session is None else ["a session but no accepted events"]
    if session is None:
        return [f"no session for {len(events)} accepted events"]
    found, expected = _observed(session), _expected(events)
    differences = [f"{name}: expected {expected[name]}, found {found[name]}"
                   for name in ("counts", "applied", "last_seen") if found[name] != expected[name]]
    for name, bound in (("items", length), ("searches", MAX_SEARCHES)):
        if not _tail_of(found[name], expected[name], bound):
            differences.append(f"{name}: expected {_show(expected[name], bound)}, found {sorted(found[name].elements())}")
    if not _purchased_ok(session.purchased, expected["purchased"]):
        differences.append(f"purchased: expected {sorted(expected['purchased'], key=str)}, found {list(session.purchased)}")
    if len({a.topic for a in events}) == 1:
        ordered = [item for a in sorted(events, key=lambda a: (a.partition, a.offset)) for item in a.event.items]
        sequence = tuple(ordered[-length:]) if length > 0 else ()
        if session.items != sequence:
            differences.append(f"item sequence: expected {list(sequence)}, found {list(session.items)}")
    return differences


def _expected(events: Sequence[Accepted]) -> dict:
    applied = {}
    for a in events:
        at = source(a.topic, a.partition)
        applied[at] = max(applied.get(at, -1), a.offset)
    return {"counts": dict(Counter(a.event.type for a in events)),
            "items": Counter(item for a in events for item in a.event.items),
            "searches": Counter(a.event.query for a in events if a.event.type == "search"),
            "purchased": {item for a in events if a.event.type == "purchase" for item in a.event.items},
            "applied": applied, "last_seen": max(a.event.ts for a in events)}


def _observed(session: Session) -> dict:
    return {"counts": {kind: n for kind, n in session.counts.items() if n},
            "items": Counter(session.items), "searches": Counter(session.searches),
            "applied": dict(session.applied), "last_seen": session.last_seen}


def _tail_of(found: Counter, expected: Counter, bound: int) -> bool:
    """All of `expected` when it fits in `bound`; else `bound` of them (which ones depends on order)."""
    if expected.total() <= bound:
        return found == expected
    return found.total() == bound and found <= expected


def _purchased_ok(purchased: tuple, expected: set) -> bool:
    if len(set(purchased)) != len(purchased):
        return False
    if len(expected) <= MAX_PURCHASED:
        return set(purchased) == expected
    return len(purchased) == MAX_PURCHASED and set(purchased) <= expected


def _show(expected: Counter, bound: int) -> str:
    shown = sorted(expected.elements(), key=str)
    return str(shown) if len(shown) <= bound else f"{bound} of {shown}"


def check(events, recommendations, deadletters, changelog, length: int) -> Audit:
    """The audit of one pipeline from its topics' records (kafka-python ConsumerRecords)."""
    accepted, rejected = classify(events)
    audit = Audit(records=len(events), accepted=len(accepted), rejected=len(rejected))
    counts = answered(r.value for r in recommendations)
    per_event = [counts[(a.topic, a.partition, a.offset)] for a in accepted]
    lost = [a for a, n in zip(accepted, per_event) if n == 0]
    audit.lost = len(lost)
    audit.duplicates = sum(n - 1 for n in per_event if n > 1)
    audit.examples += [f"lost: {a.topic}:{a.partition}:{a.offset} ({a.event.type} of {a.event.user})"
                       for a in lost[:EXAMPLES]]
    found = dead_lettered(rejected, deadletters)
    audit.dead_lettered = len(found)
    audit.examples += [f"not dead-lettered: {t}:{p}:{o} ({rejected[(t, p, o)][0]})"
                       for t, p, o in sorted(set(rejected) - found)[:EXAMPLES]]
    by_user = defaultdict(list)
    for a in accepted:
        by_user[user_key(a.event.user)].append(a)
    sessions = newest_sessions(changelog)
    for key in sorted(set(by_user) | set(sessions)):
        differences = session_differences(by_user.get(key, []), sessions.get(key), length)
        if differences:
            audit.mismatches += 1
            audit.differing.update(d.split(":")[0] for d in differences)
            if audit.mismatches <= EXAMPLES:
                shown = "; ".join(d if len(d) <= 160 else d[:157] + "..." for d in differences)
                audit.examples.append(f"session of {key.decode(errors='replace')}: {shown}")
    if audit.mismatches:
        fields = ", ".join(f"{name} {n}" for name, n in audit.differing.most_common())
        audit.examples.insert(0, f"{audit.mismatches} sessions differ; users per field: {fields}")
    return audit


def audit(settings: Settings) -> Audit:
    """Read the pipeline's topics from Kafka to their ends and check them."""
    def read(*topics: str) -> list:
        return read_topics(settings.bootstrap_servers, topics)
    return check(read(*settings.event_topics), read(settings.topic_recommendations),
                 read(settings.topic_deadletter), read(changelog_topic(settings)), settings.session_length)


def read_topics(bootstrap_servers: str, topics: Sequence[str], timeout_s: float = 120.0) -> list:
    """Every committed record of `topics` (missing ones count as empty), up to their end offsets
    at the time of the call."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.worker_process import wait_for

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        records = []

        def at_end() -> bool:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            return all(consumer.position(tp) >= end for tp, end in ends.items())
        wait_for(at_end, timeout_s, f"reading {', '.join(topics)} to the end")
        return records
    finally:
        consumer.close()


def lag(settings: Settings) -> int:
    """Events on the event topics beyond what the pipeline's worker group has committed."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        partitions = [TopicPartition(topic, p) for topic in settings.event_topics
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets({settings.worker_id: partitions}).get(settings.worker_id, {})
        return sum(max(end - _offset(committed.get(tp)), 0) for tp, end in ends.items())
    finally:
        admin.close()
        consumer.close()


def _offset(committed) -> int:
    return committed.offset if committed is not None and committed.offset >= 0 else 0


def wait_caught_up(settings: Settings, timeout_s: float) -> bool:
    """Until the worker group has committed every event (lag 0); False if not within `timeout_s`."""
    from kafka.errors import KafkaError

    from streams.worker_process import wait_for

    def caught_up() -> bool:
        try:
            return lag(settings) == 0
        except (KafkaError, OSError):  # the broker is still coming back
            return False
    try:
        wait_for(caught_up, timeout_s, "worker group caught up")
        return True
    except TimeoutError:
        return False
