"""The storefront of `bench e2e` and the demo, on the real broker: its paced sends reach the event
topics keyed by user, and the watcher collects every recommendation sent after it started and
none from before."""
import time

import msgpack
import pytest

from console.bench_e2e import offer
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
    assert offer(settings, sent, rate=300.0) > 0
    got = clicks.until(lambda r: len(r) >= 48, 30) + searches.until(lambda r: len(r) >= 12, 30)
    events = [(record.key, decode(record.value)) for record in got]
    assert all(key == user_key(event.user) for key, event in events)
    received = [(str(e.user), e.items[0] if e.items else None, e.query) for _, e in events]
    assert sorted(received, key=repr) == sorted(sent, key=repr)
