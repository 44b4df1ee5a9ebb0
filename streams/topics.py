"""Create the pipeline's topics (event topics, dead letters, recommendations, the session changelog,
the catalogue) when missing, so workers and producers agree on the partition count instead of
relying on broker auto-creation."""
from __future__ import annotations

import dataclasses

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs


def pipeline_topics(settings: Settings) -> list[str]:
    return [*settings.event_topics, settings.topic_deadletter, settings.topic_recommendations,
            changelog_topic(settings), settings.topic_catalog]


COMPACTED = {"cleanup.policy": "compact"}  # a changelog keeps each user's newest session
# The catalogue keeps each item's newest record, tombstones too: a delisting is only known by its
# tombstone, which compaction would otherwise drop after a day (Kafka's delete.retention.ms).
# A century, not Long.MAX: Kafka adds it to the clock.
KEEPS_TOMBSTONES = {**COMPACTED, "delete.retention.ms": str(100 * 365 * 86400 * 1000)}


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    if name == settings.topic_catalog:
        return KEEPS_TOMBSTONES
    return COMPACTED if name == changelog_topic(settings) else {}


def ensure_topics(settings: Settings, names: list[str] | None = None) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    names = names or pipeline_topics(settings)
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, bootstrap_timeout_ms=10000,
                                 **client_kwargs(settings))
    except KafkaError as exc:
        raise UserError(f"cannot reach Kafka at {settings.bootstrap_servers} ({exc}); "
                        "start one with `shopguide broker start`") from None
    try:
        missing = set(names) - set(admin.list_topics())
        for name in sorted(missing):
            try:
                admin.create_topics([NewTopic(name, settings.partitions, settings.replication,
                                              topic_configs=topic_configs(settings, name))])
            except TopicAlreadyExistsError:  # another worker won the race
                pass
    finally:
        admin.close()


def delete_topics(settings: Settings, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix` (a benchmark's own pipeline)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, bootstrap_timeout_ms=10000,
                             **client_kwargs(settings))
    try:
        names = [name for name in admin.list_topics() if name.startswith(prefix)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()


def own_pipeline(settings: Settings, run: str) -> Settings:
    """`settings` with app id `run` and every topic named `run.<topic>`: a benchmark's pipeline,
    apart from the shop's, which delete_topics(settings, run) removes."""
    topics = {f.name: f"{run}.{getattr(settings, f.name)}" for f in dataclasses.fields(Settings)
              if f.name.startswith("topic_")}
    return dataclasses.replace(settings, worker_id=run, **topics)


def changelog_topic(settings: Settings) -> str:
    """The session changelog (the name Faust gave the user_sessions table's changelog before)."""
    return f"{settings.worker_id}-user_sessions-changelog"


def read_sessions(settings: Settings, timeout_ms: int = 3000) -> dict:
    """Every user's newest session in the changelog: user key -> Session."""
    from kafka import KafkaConsumer

    from streams.sessions import Session

    consumer = KafkaConsumer(changelog_topic(settings), bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=timeout_ms,
                             **client_kwargs(settings))
    try:
        return {record.key: Session.unpack(record.value) for record in consumer if record.value is not None}
    finally:
        consumer.close()
