"""Session state: the pure fold of events into a bounded, serialisable record."""
from dataclasses import replace
from functools import reduce

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.events import Event
from streams.sessions import MAX_PURCHASED, MAX_SEARCHES, RECORD_VERSION, Session, apply, holds, steering_query
from tests.fixtures.events import valid_events


def click(item, ts=100.0, session="s1"):
    return Event("click", "u", session, 1e9 + ts, items=(item,))


def test_items_keep_the_most_recent_in_order():
    session = reduce(lambda s, i: apply(s, click(i, ts=i), length=3), range(5), None)
    assert session.items == (2, 3, 4)
    assert session.counts["click"] == 5
    assert session.last_seen == 1e9 + 4


def test_purchase_records_items_once_and_moves_repeats_to_the_end():
    first = apply(None, Event("purchase", "u", "s", 1e9, items=("a", "b", "a")), length=10)
    again = apply(first, Event("purchase", "u", "s", 1e9 + 1, items=("a",)), length=10)
    assert first.purchased == ("a", "b")
    assert again.purchased == ("b", "a")
    assert again.items == ("a", "b", "a", "a")


def test_searches_are_bounded_and_do_not_enter_the_item_sequence():
    searches = [Event("search", "u", "s", 1e9 + n, query=f"q{n}", shown=(1, 2)) for n in range(MAX_SEARCHES + 2)]
    session = reduce(lambda s, e: apply(s, e, length=5), searches, None)
    assert session.searches == tuple(f"q{n}" for n in range(2, MAX_SEARCHES + 2))
    assert session.items == ()


def test_late_event_counts_but_does_not_move_last_seen_back():
    session = apply(apply(None, click(1, ts=50, session="new"), 5), click(2, ts=10, session="old"), 5)
    assert session.last_seen == 1e9 + 50
    assert session.session == "new"
    assert session.items == (1, 2)


@given(st.lists(valid_events(), max_size=30), st.integers(0, 8))
def test_state_is_bounded_and_survives_pack_unpack(events, length):
    session = reduce(lambda s, e: apply(s, e, length), events, None) or Session()
    assert len(session.items) <= length
    assert len(session.searches) <= MAX_SEARCHES
    assert len(session.purchased) <= MAX_PURCHASED
    assert session.events == len(events)
    assert Session.unpack(session.pack()) == session


@given(st.lists(valid_events(), min_size=1, max_size=20), st.integers(0, 19))
def test_folding_a_replayed_event_again_changes_nothing(events, replay_from):
    """A crash replays a tail of the partition: events the session holds are skipped."""
    def fold(session, numbered):
        offset, event = numbered
        return session if holds(session, "t:0", offset) else apply(session, event, 50, "t:0", offset)
    numbered = list(enumerate(events))
    once = reduce(fold, numbered, None)
    replayed = reduce(fold, numbered[min(replay_from, len(events) - 1):], once)
    assert replayed == once
    assert once.applied == {"t:0": len(events) - 1}


def test_packed_record_carries_its_version_and_old_records_still_read():
    session = apply(None, click("a"), 5, "t:1", 7)
    assert msgpack.unpackb(session.pack())["v"] == RECORD_VERSION
    legacy = msgpack.packb([["a"], [], [], session.counts, 1e9 + 100, "s1"])
    assert Session.unpack(legacy) == replace(session, applied={})
    with pytest.raises(ValueError, match="version 99"):
        Session.unpack(msgpack.packb({"v": 99}))


def search(query, ts, session="s1"):
    return Event("search", "u", session, 1e9 + ts, query=query)


def fold(events, session=None):
    return reduce(lambda s, e: apply(s, e, length=5), events, session)


def test_a_query_steers_its_own_event_and_the_next_n_events():
    searched = fold([click("a", ts=0), search("red car", ts=1)])
    assert steering_query(searched, max_events=2, max_age_s=60) == "red car"
    later = [fold([click(item, ts=2 + n) for n, item in enumerate("bc"[:count])], searched) for count in (1, 2)]
    assert [steering_query(s, 2, 60) for s in later] == ["red car", "red car"]
    assert steering_query(fold([click("d", ts=5)], later[1]), 2, 60) == ""
    assert steering_query(searched, max_events=0, max_age_s=60) == "red car"


def test_a_query_stops_steering_after_its_time_and_a_new_search_replaces_it():
    searched = fold([search("kite", ts=0)])
    assert steering_query(fold([click("a", ts=60)], searched), 5, 60) == "kite"
    assert steering_query(fold([click("a", ts=61)], searched), 5, 60) == ""
    assert steering_query(fold([click("a", ts=30), search("doll", ts=100)], searched), 5, 60) == "doll"
    assert steering_query(fold([click("a", ts=0)]), 5, 60) == ""


def test_a_record_written_before_queries_steered_loads_and_steers_nothing():
    session = fold([search("kite", ts=0)])
    assert Session.unpack(session.pack()) == session
    record = msgpack.unpackb(session.pack())
    del record["searched_at"], record["searched_events"]
    old = Session.unpack(msgpack.packb(record))
    assert old.searches == ("kite",) and steering_query(old, 5, 60) == ""
