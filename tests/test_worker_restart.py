"""A user's session survives a worker restart: the new worker recovers it from the changelog."""
import pytest

from streams.events import Event, user_key
from streams.replay import publish
from tests.fixtures.worker import all_partitions, changelog, latest_sessions, wait_for

pytestmark = pytest.mark.kafka
USERS = [f"u{n}" for n in range(6)]


def clicks(round_: int) -> list[Event]:
    return [Event("click", user, "s", 1.7e9 + round_, items=(f"{user}-i{round_}",)) for user in USERS]


def test_state_survives_restart(kafka_settings, start_worker, producer, topic_reader):
    settings = kafka_settings()
    sessions = topic_reader(changelog(settings))

    first = start_worker(settings)
    wait_for(lambda: first.assigned() == all_partitions(settings), what="first worker assigned")
    for round_ in range(3):
        for event in clicks(round_):
            publish(producer, settings, event)
    producer.flush()
    sessions.until(lambda r: all(s.events == 3 for s in latest_sessions(r).values()) and len(latest_sessions(r)) == 6,
                   what="three clicks per user in the changelog")
    assert first.stop() == 0

    second = start_worker(settings)
    wait_for(lambda: second.assigned() == all_partitions(settings), what="second worker assigned")
    assert second.value("shopguide_session_table_size") == len(USERS)
    for event in clicks(3):
        publish(producer, settings, event)
    producer.flush()
    sessions.until(lambda r: all(s.events == 4 for s in latest_sessions(r).values()),
                   what="fourth click applied on top of the recovered sessions")
    for user in USERS:
        assert latest_sessions(sessions.records)[user_key(user)].items == tuple(f"{user}-i{n}" for n in range(4))
    assert second.value("shopguide_events_consumed_total", type="click") == len(USERS)
