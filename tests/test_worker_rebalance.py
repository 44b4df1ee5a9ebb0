"""When a second worker joins, partitions and the sessions in them move to it."""
import pytest

from shopguide.process import free_port
from streams.events import Event
from streams.replay import publish
from tests.fixtures.worker import all_partitions, changelog, latest_sessions, wait_for

pytestmark = pytest.mark.kafka
USERS = [f"user-{n}" for n in range(24)]  # enough keys that every partition gets some


def publish_round(producer, settings, round_: int) -> None:
    for user in USERS:
        publish(producer, settings, Event("click", user, "s", 1.7e9 + round_, items=(round_,)))
    producer.flush()


def test_sessions_move_with_their_partition(kafka_settings, start_worker, producer, topic_reader, tmp_path):
    settings = kafka_settings()
    sessions = topic_reader(changelog(settings))
    first = start_worker(settings)
    wait_for(lambda: first.assigned() == all_partitions(settings), what="first worker assigned")
    publish_round(producer, settings, 0)
    sessions.until(lambda r: len(latest_sessions(r)) == len(USERS), what="every user has a session")

    second = start_worker(settings.__class__(**{**settings.__dict__, "worker_port": free_port(),
                                                "home": tmp_path / "second"}))
    wait_for(lambda: (a := first.assigned()) and (b := second.assigned()) and not a & b
             and a | b == all_partitions(settings), what="partitions split between the two workers")
    wait_for(lambda: second.value("shopguide_session_table_size") > 0, what="second worker recovered sessions")
    publish_round(producer, settings, 1)

    sessions.until(lambda r: all(s.events == 2 for s in latest_sessions(r).values()),
                   what="second click applied on top of the first, on whichever worker holds the user")
    assert all(s.items == (0, 1) for s in latest_sessions(sessions.records).values())
    assert second.value("shopguide_events_consumed_total") > 0
    # A partition that moves again before its offsets were committed is read again by its new
    # owner (at least once); what must hold is that no event is applied twice.
    assert applied(first) + applied(second) == 2 * len(USERS)
    assert applied(first) >= len(USERS)


def applied(worker) -> float:
    return worker.value("shopguide_events_consumed_total") - worker.value("shopguide_events_already_applied_total")
