"""Random bytes and random maps mixed with valid events, through the real broker and worker:
every valid event updates its user's session once, every invalid payload lands in the
dead-letter topic once with its original bytes and a reason; nothing is lost or duplicated."""
import dataclasses
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import TYPES, user_key
from streams.replay import publish
from tests.fixtures.events import junk_payloads, valid_events
from tests.fixtures.worker import all_partitions, changelog, latest_sessions, wait_for

pytestmark = pytest.mark.kafka
USERS = [f"p{n}" for n in range(4)]
payloads = st.lists(st.one_of(valid_events(users=st.sampled_from(USERS)), junk_payloads), min_size=1, max_size=25)


@pytest.fixture
def pipeline(kafka_settings, start_worker, topic_reader):
    config = kafka_settings()
    worker = start_worker(config)
    wait_for(lambda: worker.assigned() == all_partitions(config), what="worker assigned")
    return config, topic_reader(changelog(config)), topic_reader(config.topic_deadletter)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=payloads, topic_index=st.integers(0, 2))
def test_nothing_lost_nothing_duplicated(pipeline, producer, batch, topic_index):
    config, sessions, deadletters = pipeline
    example = uuid.uuid4().hex[:8]
    users = {user: f"{example}-{user}" for user in USERS}  # fresh sessions for every example
    expected = Counter()
    junk = {}
    for number, item in enumerate(batch):
        if isinstance(item, bytes):
            key = f"junk-{example}-{number}".encode()
            junk[key] = item
            producer.send(config.event_topics[(topic_index + number) % 3], key=key, value=item)
        else:
            event = dataclasses.replace(item, user=users[item.user])
            publish(producer, config, event)
            expected[(user_key(event.user), event.type)] += 1
    producer.flush()

    mine = lambda records: [r for r in records if r.key in junk]  # noqa: E731
    deadletters.until(lambda records: len(mine(records)) >= len(junk), what="every junk payload dead-lettered")
    touched = {key for key, _ in expected}
    sessions.until(lambda records: all(latest_sessions(records).get(key) is not None
                                       and latest_sessions(records)[key].events
                                       >= sum(n for (k, _), n in expected.items() if k == key) for key in touched),
                   what="every valid event applied")

    dead = mine(deadletters.records)
    assert sorted(r.key for r in dead) == sorted(junk)  # each exactly once
    for record in dead:
        headers = dict(record.headers)
        assert record.value == junk[record.key]
        assert headers["reason"] and headers["source_topic"].decode() in config.event_topics
    latest = latest_sessions(sessions.records)
    for key in touched:
        assert {kind: latest[key].counts[kind] for kind in TYPES} == {kind: expected[(key, kind)] for kind in TYPES}
