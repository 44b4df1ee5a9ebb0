"""The Faust app: event topics in, per-user session table, dead letters out, /metrics served.

`create_app(settings, sink)` builds everything from Settings; `sink` receives every accepted
event after its session was updated (see streams.agents.SessionSink): the seam where the
recommendation stage plugs in.
"""
from __future__ import annotations

import gc
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shopguide.config import Settings
from shopguide.metrics import WorkerMetrics
from streams.agents import NullSink, SessionAgent, SessionSink

TABLE = "user_sessions"


def faust_config(settings: Settings) -> dict:
    servers = [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")]
    return dict(
        broker=servers,
        store="memory://",  # state lives in the changelog; a restart replays it
        datadir=str(settings.home / "worker" / settings.worker_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_auto_offset_reset="earliest",
        web_port=settings.worker_port,
        # Faust also commits after every 10,000 acks, from inside the fetch loop and waiting for the
        # producer to flush: a second-long stall at 2,000 events/s. Commit on the timer only.
        broker_commit_every=1_000_000_000,
        producer_linger_ms=5,  # recommendations are latency-bound; 5 ms still batches at 1,000/s
        producer_max_batch_size=256 * 1024,
    )


def create_app(settings: Settings, sink: SessionSink | None = None, recommend: bool = False) -> faust.App:
    """With `recommend`, the sink is the recommendation stage (streams.recommender)."""
    config = faust_config(settings)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.worker_id, **config)
    app.shopguide_settings = settings
    app.worker_metrics = WorkerMetrics(CollectorRegistry())
    app.session_sink = sink or NullSink()

    async def produce(topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Straight to the Kafka producer: Faust's `topic.send` (declare checks, futures, sensors)
        costs more per message than the send. Commits flush this producer first, so what was
        produced for a batch is in Kafka before the batch's offsets are committed."""
        await app.producer.send(topic, key, value, partition, None, None)

    if recommend:
        from streams.recommender import Recommender

        app.session_sink = Recommender(settings, produce, app.worker_metrics)
    events = app.topic(*settings.event_topics, key_serializer="raw", value_serializer="raw",
                       partitions=settings.partitions)
    deadletter = app.topic(settings.topic_deadletter, key_serializer="raw", value_serializer="raw",
                           partitions=settings.partitions)
    # Table keys are the events' Kafka keys; the agent writes each session to the changelog
    # partition of its events, so state and events move together on a rebalance.
    table = app.Table(TABLE, default=None, key_type=bytes, value_type=bytes, partitions=settings.partitions)
    agent = SessionAgent(settings, table, deadletter, app.worker_metrics, lambda: app.session_sink, produce)
    app.agent(events, name="sessions")(agent.run)

    @app.timer(1.0)
    async def refresh_gauges():
        await agent.refresh_gauges(app.consumer)

    @app.page("/metrics")
    async def metrics(web, request):
        body = generate_latest(app.worker_metrics.registry)
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def run_worker(app: faust.App, loglevel: str = "warning") -> int:
    """Run until SIGINT/SIGTERM, then stop gracefully (commit offsets, flush the changelog)."""
    from streams.topics import ensure_topics

    ensure_topics(app.shopguide_settings)
    # Everything loaded so far lives as long as the worker: moved out of the collector's sight, a
    # full collection walks a few thousand objects instead of ~40 ms worth of modules.
    gc.freeze()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # The terminal spinner turns the root logger to DEBUG (it spins on every record), which costs
    # a log record per message sent.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0
