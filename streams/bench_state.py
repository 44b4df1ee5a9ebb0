"""`shopguide bench state`: what N users' sessions cost a worker, and how long a restart takes to
recover them from the changelog.

The changelog is filled directly (kafka-python, each user's packed session on the partition its
events would use), not by pushing N users' events through a worker: the recovery a restarting
worker goes through is the same, and it takes seconds instead of minutes. Each session holds
ITEMS recent item ids, two searches, one purchase and the applied offsets, like a shopper's after
a short visit. Then a worker (no recommendations) starts on that changelog; the figures are the
seconds from its launch to holding every session, its resident memory beside an empty worker's,
and the memory per session beyond the packed record.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from pathlib import Path

from shopguide.config import Settings
from shopguide.kafka_security import client_kwargs
from streams.sessions import Session

ITEMS = 20


def sample_session(n: int) -> Session:
    items = tuple(f"item-{(n * 7 + k) % 500_000}" for k in range(ITEMS))
    return Session(items=items, searches=("lego", "lego city"), purchased=(items[-1],),
                   counts={"click": ITEMS, "search": 2, "add_to_cart": 1, "purchase": 1},
                   last_seen=1.7e9 + n, session=f"s{n}", applied={"shop.clicks:0": n, "shop.searches:0": n})


def run_state_bench(settings: Settings, users: int, bootstrap_given: bool) -> dict:
    from streams.broker import bench_broker

    with tempfile.TemporaryDirectory(prefix="shopguide-bench-") as home, \
            bench_broker(settings, Path(home), bootstrap_given) as settings:
        return _measure(settings, users, Path(home))


def _measure(settings: Settings, users: int, home: Path) -> dict:
    from shopguide.process import free_port
    from streams.topics import changelog_topic, delete_topics, ensure_topics

    suffix = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        settings, home=home, worker_id=f"bench-state-{suffix}", worker_port=free_port(),
        topic_clicks=f"bench-state-{suffix}.clicks", topic_searches=f"bench-state-{suffix}.searches",
        topic_purchases=f"bench-state-{suffix}.purchases", topic_deadletter=f"bench-state-{suffix}.deadletter",
        topic_recommendations=f"bench-state-{suffix}.recommendations")
    try:
        ensure_topics(settings)
        empty_rss = _worker_rss(dataclasses.replace(settings, worker_id=f"bench-state-empty-{suffix}"), home, 0)
        record_bytes = _fill(settings, changelog_topic(settings), users)
        started = time.monotonic()
        full_rss = _worker_rss(settings, home, users)
        recovery_s = time.monotonic() - started
    finally:
        delete_topics(settings, f"bench-state-{suffix}")
        delete_topics(settings, f"bench-state-empty-{suffix}")
    return {"users": users, "record_bytes": record_bytes / users, "recovery_s": recovery_s,
            "empty_rss_mb": empty_rss / 2**20, "full_rss_mb": full_rss / 2**20,
            "beyond_record_bytes": (full_rss - empty_rss) / users - record_bytes / users}


def _fill(settings: Settings, topic: str, users: int) -> int:
    """Write `users` sessions to the changelog (created by ensure_topics); returns the bytes written."""
    from kafka import KafkaProducer
    from tqdm import tqdm

    from streams.events import user_key

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=20,
                             batch_size=512 * 1024, compression_type=None, **client_kwargs(settings))
    written = 0
    for n in tqdm(range(users), desc="filling the changelog", unit=" sessions", unit_scale=True):
        packed = sample_session(n).pack()
        written += len(packed)
        producer.send(topic, key=user_key(f"user-{n}"), value=packed)
    producer.flush()
    producer.close()
    return written


def _worker_rss(settings: Settings, home: Path, users: int) -> int:
    """Start a worker on the changelog, wait until it holds `users` sessions; its RSS in bytes."""
    from streams.worker_process import WorkerProcess, wait_for

    worker = WorkerProcess(settings, home / f"{settings.worker_id}.log", "--no-recommendations")
    try:
        worker.wait_assigned(timeout_s=600)
        wait_for(lambda: worker.value("shopguide_session_table_size") >= users or worker.check_alive(),
                 timeout_s=600, what=f"{users:,} sessions recovered", poll_s=0.2)
        return _rss(worker.process.pid)
    except RuntimeError:
        print("the worker's log ends:\n" + "\n".join(worker.log_path.read_text().splitlines()[-15:]))
        raise
    finally:
        worker.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def report(result: dict) -> str:
    return "\n".join([
        f"users                          {result['users']:>12,}",
        f"packed session record          {result['record_bytes']:>12.0f} bytes",
        f"recovery (launch to holding all) {result['recovery_s']:>10.1f} s",
        f"worker RSS, empty              {result['empty_rss_mb']:>12.0f} MiB",
        f"worker RSS, all sessions       {result['full_rss_mb']:>12.0f} MiB",
        f"memory per session beyond the record {result['beyond_record_bytes']:>6.0f} bytes",
    ])
