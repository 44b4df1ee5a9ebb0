"""Produce events into the event topics: from data sets (replay) or one at a time (tests, tools)."""
from __future__ import annotations

from streams.events import Event, encode, topic_for, user_key


def publish(producer, settings, event: Event):
    """Send one event, keyed by user, to its topic; returns kafka-python's future."""
    return producer.send(topic_for(event.type, settings), key=user_key(event.user), value=encode(event))
