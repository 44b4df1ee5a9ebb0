"""The Faust app: event topics in, per-user sessions (changelog-backed), dead letters out, /metrics served.

`create_app(settings, recommend)` is the one seam: it builds everything from Settings, and with
`recommend` plugs the recommendation stage (streams.recommender) in as the agent's sink, with the
catalogue it filters by (streams.catalog, followed by a task of its own).
`run_worker(app, settings)` runs it.
"""
from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shopguide.config import Settings
from shopguide.kafka_security import client_kwargs, faust_credentials
from shopguide.metrics import WorkerMetrics
from streams import faust_internals
from streams.agents import NullSink, SessionAgent
from streams.delivery import Outbox
from streams.session_store import SessionStore
from streams.stall_guard import StallGuard
from streams.topics import changelog_topic

def faust_config(settings: Settings) -> dict:
    servers = [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")]
    return dict(
        broker=servers,
        broker_credentials=faust_credentials(settings),
        store="memory://",  # Faust keeps no tables here: sessions live in streams.session_store
        datadir=str(settings.home / "worker" / settings.worker_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        consumer_auto_offset_reset="earliest",
        web_bind=settings.worker_host,
        web_port=settings.worker_port,
        # Faust also commits after every 10,000 acks, from inside the fetch loop and waiting for the
        # producer to flush: a second-long stall at 2,000 events/s. Commit on the timer only.
        broker_commit_every=1_000_000_000,
        producer_acks=-1,  # every in-sync replica: a confirmed send survives a broker's loss
        producer_linger_ms=5,  # recommendations are latency-bound; 5 ms still batches at 1,000/s
        producer_max_batch_size=256 * 1024,
    )


def create_app(settings: Settings, recommend: bool = True) -> faust.App:
    config = faust_config(settings)
    Path(config["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.worker_id, **config)
    faust_internals.serve_metrics_only(app)
    # A fetch waits up to SHOPGUIDE_FETCH_WAIT for SHOPGUIDE_FETCH_MIN_BYTES: at 700 events/s, 10 ms
    # against 5 ms took 11 % less of the worker's CPU per event (README, Headroom).
    faust_internals.fetch_in_batches(settings.fetch_min_bytes, max(1, round(settings.fetch_wait_s * 1000)))
    faust_internals.rewind_uncommitted()
    faust_internals.deliver_inline()
    metrics = WorkerMetrics(CollectorRegistry())

    async def send(*record):
        return await faust_internals.send(app, *record)

    def on_failure(kind):
        metrics.send_failures.labels(kind).inc()

    def send_now():
        faust_internals.send_now(app)

    outbox = Outbox(send, on_failure, send_now)
    sink, follower = NullSink(), None
    if recommend:
        from streams.catalog import Catalog, CatalogFollower
        from streams.recommender import Recommender

        # Its own outbox: its dead letters are confirmed apart from the agent's batches.
        follower = CatalogFollower(settings, Catalog(following=True), metrics, Outbox(send, on_failure, send_now))
        sink = Recommender(settings, outbox, metrics, catalog=follower.catalog)
        app.task(follower.run)
    events = app.topic(*settings.event_topics, key_serializer="raw", value_serializer="raw",
                       partitions=settings.partitions)
    # Session keys are the events' Kafka keys; each session is logged to the changelog partition
    # of its events, so state and events move together on a rebalance.
    store = SessionStore(settings.bootstrap_servers, changelog_topic(settings), client_kwargs(settings))
    guard = StallGuard(settings.session_timeout_s, settings.heartbeat_s)
    faust_internals.check_before_sends(guard.check)
    agent = SessionAgent(settings, store, metrics, sink, outbox, guard)
    app.agent(events, name="sessions")(agent.run)

    @app.on_partitions_assigned.connect
    async def hold_sessions(app, assigned, **kwargs):
        store.assign({tp.partition for tp in assigned if tp.topic in settings.event_topics})
        if follower is not None:
            follower.owned = {tp.partition for tp in assigned if tp.topic == settings.topic_clicks}

    @app.task
    async def watch_for_stalls():
        await guard.run()

    @app.timer(1.0)
    async def refresh_gauges():
        await agent.refresh_gauges(app.consumer)

    @app.page("/metrics")
    async def serve_metrics(web, request):
        body = generate_latest(metrics.registry)
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def use_event_loop(kind: str) -> None:
    """Every event loop made from now on (the main one and Faust's consumer thread's) is of this kind.
    uvloop runs the loops' own machinery (callbacks, timers, sockets, wake-ups from the consumer
    thread) in C: the worker took 7 % less CPU per event on it than on asyncio's (README, Headroom)."""
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def run_worker(app: faust.App, settings: Settings, loglevel: str = "warning") -> int:
    """Run until SIGINT/SIGTERM, then stop gracefully (commit offsets, flush the changelog)."""
    from streams.topics import ensure_topics

    ensure_topics(settings)
    use_event_loop(settings.event_loop)
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
