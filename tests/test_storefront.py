"""The storefront of `bench e2e` and the demo, on the real broker: its paced sends reach the event
topics keyed by user, and the watcher collects every recommendation sent after it started and
none from before."""
import time

import msgpack
import pytest

from console.storefront import offer
from streams.events import decode, user_key
from streams.topics import ensure_topics
from streams.watch import RecommendationWatcher

pytestmark = pytest.mark.kafka


def recommendation(user: str) -> bytes:
    return msgpack.packb({"user": user, "items": ["1", "2"], "produced_time": time.time()})


def test_the_watcher_collects_what_was_sent_after_it_started(kafka_settings, producer):
    settings = kafka_settings()
    ensure_topics(settings, [settings.topic_recommendations])
    topic = settings.topic_recommendations
    for n in range(5):
        producer.send(topic, key=b"before", value=recommendation(f"before{n}"))
    producer.flush()
    seen = []
    watcher = RecommendationWatcher(settings, on_record=seen.append).start()
    try:
        for n in range(40):
            producer.send(topic, key=f"u{n}".encode(), value=recommendation(f"u{n}"))
        producer.flush()
        assert watcher.wait_for(40, 30)
        time.sleep(0.5)  # nothing more arrives
        assert sorted(r["user"] for r in watcher.records) == sorted(f"u{n}" for n in range(40))
        assert seen == watcher.records and watcher.first_arrival is not None
        assert len(watcher.latencies) == 40 and all(0 <= latency < 30 for latency in watcher.latencies)
    finally:
        watcher.stop()


def test_the_storefront_sends_each_click_and_search_to_its_topic_keyed_by_user(kafka_settings, topic_reader):
    settings = kafka_settings()
    ensure_topics(settings)
    sent = [(f"u{n % 7}", str(n), None) if n % 5 else (f"u{n % 7}", None, f"query {n}") for n in range(60)]
    clicks, searches = topic_reader(settings.topic_clicks), topic_reader(settings.topic_searches)
    offered = offer(settings, sent, rate=300.0)
    assert 250 < offered.rate < 350 and offered.cpu_s > 0
    got = clicks.until(lambda r: len(r) >= 48, 30) + searches.until(lambda r: len(r) >= 12, 30)
    events = [(record.key, decode(record.value)) for record in got]
    assert all(key == user_key(event.user) for key, event in events)
    received = [(str(e.user), e.items[0] if e.items else None, e.query) for _, e in events]
    assert sorted(received, key=repr) == sorted(sent, key=repr)
    # stamped with the moment it was due, in the payload and as the Kafka timestamp latency counts from
    assert all(abs(record.timestamp - decode(record.value).ts * 1000) <= 1 for record in got)
    due = sorted(decode(record.value).ts for record in got)
    assert all(abs(b - a - 1 / 300.0) < 1e-6 for a, b in zip(due, due[1:]))


def test_a_burst_larger_than_a_record_batch_arrives_whole(kafka_settings, topic_reader):
    settings = kafka_settings()
    ensure_topics(settings)
    sent = [(f"u{n % 3}", str(n), None) for n in range(2000)]  # ~70 bytes each: several 16 KiB batches per tick
    clicks = topic_reader(settings.topic_clicks)
    offer(settings, sent, rate=1_000_000.0)  # all due at the first tick
    got = clicks.until(lambda r: len(r) >= 2000, 30)
    by_user = {}
    for record in got:
        event = decode(record.value)
        by_user.setdefault(event.user, []).append(int(event.items[0]))
    assert sum(map(len, by_user.values())) == 2000
    assert all(items == sorted(items) for items in by_user.values())  # each user's events in order
