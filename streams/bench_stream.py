"""`shopguide bench stream`: the same events through (a) the fastest Faust pass-through agent and
(b) the session agent, one after the other on one broker; events/s of each and their ratio.

Rates are measured on the broker's own clock: from the first to the last record each pipeline
wrote (the pass-through's output topic; the session agent's changelog), so start-up and group
joins are left out of both alike.
"""
from __future__ import annotations

import dataclasses
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import faust

from shopguide.config import Settings
from shopguide.kafka_security import client_kwargs
from streams import faust_internals
from streams.events import Event

USERS = 20_000
ITEMS = 50_000


def synthetic_events(count: int, seed: int = 7):
    """A click-heavy mix like a storefront's: 80% clicks, 10% searches, 5% carts, 5% purchases."""
    rng = random.Random(seed)
    start = time.time()
    for n in range(count):
        user, ts, roll = f"u{rng.randrange(USERS)}", start + n * 0.001, rng.random()
        if roll < 0.8:
            yield Event("click", user, user, ts, items=(rng.randrange(ITEMS),))
        elif roll < 0.9:
            yield Event("search", user, user, ts, query=f"query {rng.randrange(500)}")
        elif roll < 0.95:
            yield Event("add_to_cart", user, user, ts, items=(rng.randrange(ITEMS),))
        else:
            yield Event("purchase", user, user, ts, items=(rng.randrange(ITEMS), rng.randrange(ITEMS)), value=25.0)


def passthrough_topic(settings: Settings) -> str:
    return f"{settings.worker_id}-passthrough"


def create_passthrough_app(settings: Settings) -> faust.App:
    """Consume and produce, nothing else: the framework's own ceiling on this machine."""
    from streams.app import faust_config

    config = faust_config(settings)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.worker_id, **{**config, "web_enabled": False})
    source = app.topic(*settings.event_topics, key_serializer="raw", value_serializer="raw")
    sink = app.topic(passthrough_topic(settings), key_serializer="raw", value_serializer="raw",
                     partitions=settings.partitions)

    @app.agent(source, name="passthrough")
    async def passthrough(stream):
        async for batch in faust_internals.take_batches(stream, settings.batch_max, settings.batch_wait_s):
            for event in batch:
                sink.send_soon(key=event.message.key, value=event.message.value)
            await faust_internals.ack(stream, batch)

    return app


def run_stream_bench(settings: Settings, count: int, bootstrap_given: bool, profile_dir: Path | None) -> dict:
    from streams.broker import bench_broker

    with tempfile.TemporaryDirectory(prefix="shopguide-bench-") as home, \
            bench_broker(settings, Path(home), bootstrap_given) as settings:
        return _measure(settings, count, Path(home), profile_dir)


def _measure(settings: Settings, count: int, home: Path, profile_dir: Path | None) -> dict:
    from shopguide.process import free_port
    from streams.topics import changelog_topic

    suffix = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        settings, home=home, topic_clicks=f"bench.clicks-{suffix}", topic_searches=f"bench.searches-{suffix}",
        topic_purchases=f"bench.purchases-{suffix}", topic_deadletter=f"bench.deadletter-{suffix}")
    _produce(settings, count)
    results = {"passthrough": run_passthrough(dataclasses.replace(settings, worker_id=f"bench-passthrough-{suffix}"),
                                              count, profile_dir)}
    sessions = dataclasses.replace(settings, worker_id=f"bench-sessions-{suffix}", worker_port=free_port())
    print("(b) session agent")
    results["sessions"] = _run(sessions, ("-m", "console.cli", "worker"), changelog_topic(sessions),
                               count, home, profile_dir, "sessions", consumed=True)
    return results


def measure_passthrough(settings: Settings, count: int, as_worker: bool = False) -> float:
    """Pass-through events/s over `count` synthetic events, produced first into `settings`' own
    event topics (the caller names and deletes them) on its broker. `as_worker`: with the session
    worker's hand-off from the consumer to the streams (faust_internals.deliver_inline), not Faust's."""
    _produce(settings, count)
    return run_passthrough(settings, count, as_worker=as_worker)


def _produce(settings: Settings, count: int) -> None:
    from streams.replay import produce
    from streams.topics import ensure_topics

    ensure_topics(settings)
    print(f"producing {count:,} events")
    produce(settings, synthetic_events(count), total=count)


AS_WORKER = "--hand-off-as-worker"


def run_passthrough(settings: Settings, count: int, profile_dir: Path | None = None, as_worker: bool = False) -> float:
    """Events/s of the pass-through agent over the `count` events in `settings`' event topics."""
    from streams.topics import ensure_topics

    ensure_topics(settings, [passthrough_topic(settings)])
    print("(a) pass-through agent" + (", the worker's hand-off" if as_worker else ""))
    command = ("-m", "streams.bench_stream", *([AS_WORKER] if as_worker else []))
    return _run(settings, command, passthrough_topic(settings), count, Path(settings.home), profile_dir, "passthrough")


def _run(settings, command, output_topic, count, home, profile_dir, name, consumed=False) -> float:
    from streams.worker_process import WorkerProcess, wait_for

    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        command = ("-m", "cProfile", "-o", str(profile_dir / f"{name}.prof"), *command)
    worker = WorkerProcess(settings, home / f"{name}.log", command=command)
    try:
        if consumed:
            done = lambda: worker.value("shopguide_events_consumed_total") >= count  # noqa: E731
        else:
            done = lambda: _written(settings, output_topic) >= count  # noqa: E731
        wait_for(lambda: done() or worker.check_alive(), 900, f"{name} taking {count} events")
    finally:
        worker.stop()
    first, last = _time_span(settings, output_topic)
    rate = count / max(last - first, 1e-3)
    print(f"    {count:,} events in {last - first:.2f} s: {rate:,.0f} events/s")
    return rate


def _written(settings, topic) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             **client_kwargs(settings))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values()) if partitions else 0
    finally:
        consumer.close()


def _time_span(settings, topic) -> tuple[float, float]:
    """Broker timestamps (s) of the first and the last record in `topic`."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                             **client_kwargs(settings))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
        stamps = []
        for tp in partitions:
            for offset in {0, ends[tp] - 1} if ends[tp] else ():
                consumer.assign([tp])
                consumer.seek(tp, offset)
                records = consumer.poll(timeout_ms=5000, max_records=1).get(tp, [])
                stamps.extend(record.timestamp / 1000.0 for record in records)
        return min(stamps), max(stamps)
    finally:
        consumer.close()


def print_profiles(directory: Path, top: int = 18) -> None:
    import pstats

    for name in ("passthrough", "sessions"):
        print(f"\n--- {name}: top functions by own time ---")
        pstats.Stats(str(directory / f"{name}.prof")).sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    from streams.app import run_worker

    settings = Settings.from_env()
    if AS_WORKER in sys.argv[1:]:
        faust_internals.deliver_inline()
    raise SystemExit(run_worker(create_passthrough_app(settings), settings))
