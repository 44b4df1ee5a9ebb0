"""Event in, recommendation out, on the real broker, worker and Triton: one recommendation per
accepted event, nothing just bought, and popularity standing in while Triton is down."""
import time

import msgpack
import pytest

from serving.triton import LocalTriton
from streams.events import Event
from streams.replay import publish
from tests.fixtures.worker import all_partitions, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.triton]
USERS = [f"u{n}" for n in range(8)]


def toys_items(path, count: int) -> list[str]:
    """Items the tiny model knows (the Toys slice it was trained on)."""
    items = []
    for line in path.read_text().splitlines():
        items.extend(tok for tok in line.split()[1:] if tok not in items)
        if len(items) >= count:
            return items[:count]
    return items


def send_round(producer, settings, items, round_: int) -> int:
    """One click per user, and a purchase of that same item by the first user: returns events sent."""
    for n, user in enumerate(USERS):
        publish(producer, settings, Event("click", user, "s", 1.7e9 + round_, items=(items[(round_ + n) % len(items)],)))
    publish(producer, settings, Event("purchase", USERS[0], "s", 1.7e9 + round_ + 0.5, items=(items[round_ % len(items)],)))
    producer.flush()
    return len(USERS) + 1


def decoded(records) -> list[dict]:
    return [msgpack.unpackb(record.value, raw=False) for record in records]


def test_every_event_gets_one_recommendation_across_a_triton_outage(
        kafka_settings, start_worker, producer, topic_reader, triton, toys_slice):
    settings = kafka_settings(triton_grpc=triton.url, triton_timeout_s=2.0)
    items = toys_items(toys_slice, 40)
    recommendations = topic_reader(settings.topic_recommendations)
    worker = start_worker(settings)
    wait_for(lambda: worker.assigned() == all_partitions(settings), what="worker assigned")

    sent, round_, phases = 0, 0, {}
    for phase in ("before", "outage", "after"):
        if phase == "outage":
            LocalTriton(triton.settings).stop()
        if phase == "after":
            LocalTriton(triton.settings).start()
        first = sent
        # Keep the traffic going (a second apart, up to a minute after Triton is back) until the
        # phase has shown what it should: the worker retries Triton on its own schedule.
        for attempt in range(60 if phase == "after" else 3):
            sent += send_round(producer, settings, items, round_)
            round_ += 1
            recommendations.until(lambda r: len(r) >= sent, what=f"{sent} recommendations ({phase})")
            phases[phase] = [r["source"] for r in decoded(recommendations.records[first:sent])]
            if phase == "after" and phases[phase][-1] == "model":
                break
            time.sleep(1.0 if phase == "after" else 0)

    records = decoded(recommendations.records)
    assert len(records) == sent == worker.value("shopguide_events_consumed_total", type="click") + \
        worker.value("shopguide_events_consumed_total", type="purchase")
    assert len({r["event_offset"] for r in records}) == sent, "an event got two recommendations"
    assert set(phases["before"]) == {"model"}
    assert set(phases["outage"]) == {"fallback"}
    assert phases["after"][-1] == "model", "model answers did not resume after Triton came back"
    for record in records:
        # popularity knows only the few items this test has shown it, the model the whole catalogue
        full = settings.recommend_k if record["source"] == "model" else 1
        assert full <= len(record["items"]) <= settings.recommend_k
        assert len(set(record["items"])) == len(record["items"])
        assert (record["model_version"] is None) == (record["source"] == "fallback")
    bought = set()
    for record in sorted((r for r in records if r["user"] == USERS[0]), key=lambda r: r["event_time"]):
        if record["event_type"] == "purchase":
            bought.add(items[round(record["event_time"] - 1.7e9 - 0.5) % len(items)])
        assert not bought & set(record["items"]), "recommended an item the shopper bought"
