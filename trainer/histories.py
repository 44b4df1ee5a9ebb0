"""Each user's history for a fine-tune run, from the workers' session changelog.

The changelog (streams.topics.changelog_topic) holds every user's newest session: its recent
items and, in `applied`, the newest offset of each source partition folded in. A run reads it to
its end, then reads its window of events (trainer/eventlog.py) up to the fold frontier: per
source partition, the furthest offset the sessions or the workers' committed offsets vouch for.
No session then holds an event past the window (unless --max-events cut the window short), so a
user's history before the window is the session's items less those of the window's events that
the session holds (`applied` says which): no new item is counted twice, none before the window
is lost (up to the session's length). A session that holds events past a cut window cannot be
split so: that user's new events are trained without context, and its items are no rehearsal.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs
from streams.events import user_key
from streams.sessions import Session
from streams.topics import changelog_topic
from trainer.eventlog import Read, Window, read_range
from trainer.finetune import Histories


@dataclass
class Snapshot:
    sessions: dict[bytes, Session]  # user key -> newest session

    def frontier(self) -> dict[str, int]:
        """Per source partition, the offset after the newest event any session holds."""
        frontier: dict[str, int] = {}
        for session in self.sessions.values():
            for at, offset in session.applied.items():
                frontier[at] = max(frontier.get(at, 0), offset + 1)
        return frontier


def read_snapshot(settings: Settings) -> Snapshot:
    """Every user's newest session, the changelog read up to the end offsets seen at the start."""
    from kafka import KafkaConsumer, TopicPartition

    topic = changelog_topic(settings)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             auto_offset_reset="earliest", **client_kwargs(settings))
    sessions: dict[bytes, Session] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        starts, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        for _, record in read_range(consumer, starts, ends):
            if record.value is None:  # evicted
                sessions.pop(record.key, None)
            else:
                sessions[record.key] = _unpack(topic, record)
    finally:
        consumer.close()
    return Snapshot(sessions)


def fold_frontier(starts: dict[str, int], folded: dict[str, int], snapshot: Snapshot) -> dict[str, int]:
    """Where a window may end: as far as sessions hold events or the workers committed (read
    before the snapshot, so it holds every event below), never before the start."""
    held = snapshot.frontier()
    return {at: max(start, folded.get(at, 0), held.get(at, 0)) for at, start in starts.items()}


def histories(snapshot: Snapshot, window: Window, max_len: int) -> Histories:
    """The context of the window's users (their items before it) and, for the others, their
    sessions' items (rehearsal), keyed as trainer.finetune.user_sequences keys users."""
    reads: dict[bytes, list[Read]] = defaultdict(list)
    for read in window.events:
        reads[user_key(read.event.user)].append(read)
    items = {}
    for key, session in snapshot.sessions.items():
        if key not in reads and session.items and not past(session, window.ends):
            items[key.decode(errors="replace")] = [str(item) for item in session.items]
    for key, theirs in reads.items():
        if context := before(snapshot.sessions.get(key), theirs, window.ends):
            items[str(theirs[0].event.user)] = context
    return Histories(items, max_len=max_len)


def before(session: Session | None, reads: list[Read], ends: dict[str, int]) -> list[str] | None:
    """`session`'s items before the window, given its user's events in the window; None when
    the session holds events past the window."""
    if session is None:
        return []
    if past(session, ends):
        return None
    held = Counter(item for read in reads if read.offset <= session.applied.get(read.at, -1)
                   for item in read.event.items)
    kept = []
    for item in reversed(session.items):  # the window's items are the newest; across topics they
        if held[item] > 0:                # may interleave with older ones, so drop by value
            held[item] -= 1
        else:
            kept.append(str(item))
    return kept[::-1]


def past(session: Session, ends: dict[str, int]) -> bool:
    """Whether `session` holds an event at or after the window's end."""
    return any(offset >= ends[at] for at, offset in session.applied.items() if at in ends)


def _unpack(topic: str, record) -> Session:
    try:
        return Session.unpack(record.value)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{topic} partition {record.partition} offset {record.offset}: not a session record "
                        f"this version reads ({exc})") from None
