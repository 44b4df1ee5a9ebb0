"""The chaos checker without a broker: a session folded from a user's events, each once, in any
cross-topic order, passes; one folded twice, missed, reordered within a topic or stale does not."""
import random
from dataclasses import dataclass

import msgpack

from streams.audit import Accepted, check, classify, dead_lettered, session_differences
from streams.events import Event, encode, user_key
from streams.sessions import Session, apply, source

LENGTH = 5


def history() -> list[Accepted]:
    """One user's events on three topics, offsets per topic partition increasing."""
    events = [("clicks", Event("click", "u", "s", 1.7e9 + 1, items=("a",))),
              ("searches", Event("search", "u", "s", 1.7e9 + 2, query="lego")),
              ("purchases", Event("add_to_cart", "u", "s", 1.7e9 + 3, items=("b",))),
              ("clicks", Event("click", "u", "s", 1.7e9 + 4, items=("c",))),
              ("purchases", Event("purchase", "u", "s", 1.7e9 + 5, items=("a", "b"))),
              ("searches", Event("search", "u", "s", 1.7e9 + 6, query="lego"))]
    offsets = {}
    accepted = []
    for topic, event in events:
        offsets[topic] = offsets.get(topic, 10) + 1
        accepted.append(Accepted(topic, 2, offsets[topic], event))
    return accepted


def fold(accepted, length: int = LENGTH) -> Session | None:
    session = None
    for a in accepted:
        session = apply(session, a.event, length, source(a.topic, a.partition), a.offset)
    return session


def interleavings(accepted, count: int = 20):
    """Orders that keep each topic's own order (what the worker may see)."""
    rng = random.Random(0)
    for _ in range(count):
        queues = {t: [a for a in accepted if a.topic == t] for t in dict.fromkeys(a.topic for a in accepted)}
        order = []
        while any(queues.values()):
            order.append(queues[rng.choice([t for t, q in queues.items() if q])].pop(0))
        yield order


def test_any_cross_topic_order_of_the_same_events_matches():
    accepted = history()
    for order in interleavings(accepted):
        assert session_differences(accepted, fold(order), LENGTH) == []


def test_an_event_folded_twice_is_a_mismatch():
    accepted = history()
    twice = fold(accepted[:4] + accepted[3:])
    assert any(d.startswith("counts") for d in session_differences(accepted, twice, LENGTH))


def test_a_replay_the_session_already_holds_is_recorded_once():
    accepted = history()
    assert session_differences(accepted, fold(accepted), LENGTH) == []
    assert session_differences(accepted[:-1], fold(accepted), LENGTH)


def test_a_missed_event_is_a_mismatch():
    accepted = history()
    differences = session_differences(accepted, fold(accepted[:2] + accepted[3:]), LENGTH)
    assert {d.split(":")[0] for d in differences} == {"counts", "items"}  # the newest offsets are still there


def test_applied_must_name_the_newest_offset_per_source_partition():
    accepted = history()
    session = fold(accepted)
    stale = Session(session.items, session.searches, session.purchased, session.counts, session.last_seen,
                    session.session, {**session.applied, source("clicks", 2): 11})
    assert [d.split(":")[0] for d in session_differences(accepted, stale, LENGTH)] == ["applied"]


def test_one_topic_users_are_held_to_the_exact_sequence():
    clicks = [Accepted("clicks", 0, n, Event("click", "u", "s", 1.7e9 + n, items=(f"i{n}",))) for n in range(3)]
    swapped = fold([clicks[1], clicks[0], clicks[2]])
    assert session_differences(clicks, fold(clicks), LENGTH) == []
    assert [d.split(":")[0] for d in session_differences(clicks, swapped, LENGTH)] == ["item sequence"]


def test_more_items_than_the_session_keeps_compare_the_kept_tail():
    clicks = [Accepted("clicks", 0, n, Event("click", "u", "s", 1.7e9 + n, items=(f"i{n}",))) for n in range(9)]
    searches = [Accepted("searches", 0, 0, Event("search", "u", "s", 1.7e9, query="q"))]
    assert session_differences(clicks + searches, fold(searches + clicks), LENGTH) == []
    twice = fold(searches + clicks + clicks[-1:])  # the last click's item twice in the tail
    assert any(d.startswith("items") for d in session_differences(clicks + searches, twice, LENGTH))


def test_no_session_and_a_session_without_events():
    accepted = history()
    assert session_differences([], None, LENGTH) == []
    assert session_differences(accepted, None, LENGTH) == ["no session for 6 accepted events"]
    assert session_differences([], fold(accepted), LENGTH) == ["a session but no accepted events"]


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list = None


def test_classify_mirrors_the_worker():
    good = Event("click", "u1", "s", 1.7e9, items=("a",))
    records = [Record("clicks", 0, 0, user_key("u1"), encode(good)),
               Record("clicks", 0, 1, user_key("u2"), encode(good)),
               Record("clicks", 0, 2, user_key("u1"), b"\xc1"),
               Record("clicks", 0, 3, user_key("u1"), b"x" * 70_000),
               Record("clicks", 0, 4, user_key("u1"), None)]
    accepted, rejected = classify(records)
    assert [a.offset for a in accepted] == [0]
    assert {offset: reason for (_, _, offset), (reason, _) in rejected.items()} == {
        1: "key_mismatch", 2: "malformed_msgpack", 3: "too_large", 4: "empty"}


def dead_letter(reason: str, offset: int, value: bytes, *extra, topic: str = "clicks") -> Record:
    headers = [("reason", reason.encode()), ("source_topic", topic.encode()), ("source_partition", b"0"),
               ("source_offset", str(offset).encode()), *extra]
    return Record("dead", 0, offset, b"u1", value, headers)


def test_dead_letters_match_by_source_reason_and_payload():
    big = b"x" * 1_000_500
    rejected = {("clicks", 0, 1): ("malformed_msgpack", b"\xc1"), ("clicks", 0, 2): ("too_large", big),
                ("clicks", 0, 3): ("empty", b""), ("clicks", 0, 4): ("too_large", big)}
    records = [dead_letter("malformed_msgpack", 1, b"\xc1"),
               dead_letter("too_large", 2, big[:65536], ("truncated", b"1")),
               dead_letter("bad_field:v", 3, b""),  # wrong reason
               dead_letter("too_large", 4, big[:65536])]  # cut short without saying so
    assert dead_lettered(rejected, records) == {("clicks", 0, 1), ("clicks", 0, 2)}


def recommendation(topic: str, partition: int, offset: int) -> Record:
    value = msgpack.packb({"event_offset": f"{topic}:{partition}:{offset}"})
    return Record("recs", 0, 0, b"u", value)


def test_check_counts_lost_duplicates_and_mismatches():
    events = [Event("click", "u1", "s", 1.7e9 + n, items=(f"i{n}",)) for n in range(3)]
    records = [Record("shop.clicks", 0, n, user_key("u1"), encode(e)) for n, e in enumerate(events)]
    records.append(Record("shop.clicks", 0, 3, user_key("u1"), b"\xc1"))
    accepted, _ = classify(records)
    session = fold(accepted[:2])  # the third event never reached the session
    changelog = [Record("cl", 1, 0, user_key("u1"), session.pack()),
                 Record("cl", 1, 1, user_key("gone"), fold(accepted).pack()),
                 Record("cl", 1, 2, user_key("gone"), None)]
    recommendations = [recommendation("shop.clicks", 0, 0), recommendation("shop.clicks", 0, 0),
                       recommendation("shop.clicks", 0, 1)]
    deadletters = [dead_letter("malformed_msgpack", 3, b"\xc1", topic="shop.clicks")]
    audit = check(records, recommendations, deadletters, changelog, LENGTH)
    assert (audit.records, audit.accepted, audit.rejected, audit.dead_lettered) == (4, 3, 1, 1)
    assert (audit.lost, audit.duplicates, audit.mismatches) == (1, 1, 1)
    assert not audit.ok
