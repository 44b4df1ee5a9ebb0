"""`shopguide demo`: the main job end to end on the local stack.

Starts the local broker (unless one answers already) and a worker, replays the Diginetica sample,
waits until the worker has taken every event, prints a summary of the session table, and stops
what it started.
"""
from __future__ import annotations

import statistics
import time
from collections import Counter

from shopguide.config import Settings
from shopguide.errors import UserError

DIGINETICA = "diginetica-sample/train-item-views.csv"


def register(commands) -> None:
    demo = commands.add_parser(
        "demo", help="run the pipeline end to end on the local stack and print a summary",
        description=__doc__)
    demo.add_argument("--limit", type=int, help="replay only the first N views (default: all 12,390)")
    demo.set_defaults(handler=run)


def run(args, settings: Settings) -> int:
    from streams.broker import LocalBroker, port_open, parse_port

    port = parse_port(settings.bootstrap_servers)
    broker = None
    if not port_open(port):
        broker = LocalBroker(settings.home, settings.cache, port, port + 1, settings.partitions)
        print(f"starting Kafka on {broker.bootstrap_servers} (data in {broker.root})")
        broker.start()
    try:
        _with_worker(args, settings)
    finally:
        if broker is not None:
            print("stopping Kafka")
            broker.stop()
    return 0


def _with_worker(args, settings: Settings) -> None:
    from streams.replay import replay
    from streams.supervisor import WorkerProcess, wait_for
    from streams.topics import ensure_topics

    ensure_topics(settings)
    log = settings.home / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting a worker (log {log}, metrics http://127.0.0.1:{settings.worker_port}/metrics)")
    worker = WorkerProcess(settings, log)
    try:
        worker.wait_assigned()
        before = _taken(worker)
        started = time.monotonic()
        sent = replay(settings, settings.data_dir / DIGINETICA, limit=args.limit)
        wait_for(lambda: _taken(worker) >= before + sent, 300, "the worker taking every replayed event")
        elapsed = time.monotonic() - started
        print(f"\nreplayed {sent} events; the worker took them in {elapsed:.1f} s ({sent / elapsed:,.0f} events/s)")
        _summary(settings, worker)
    except TimeoutError as exc:
        raise UserError(f"{exc}; see {log}") from None
    finally:
        print("stopping the worker")
        worker.stop()


def _taken(worker) -> float:
    return worker.value("shopguide_events_consumed_total") + worker.value("shopguide_events_deadlettered_total")


def _summary(settings: Settings, worker) -> None:
    from streams.topics import read_sessions

    sessions = read_sessions(settings)
    if not sessions:
        raise UserError("the session table is empty")
    lengths = [len(s.items) for s in sessions.values()]
    items = Counter(item for s in sessions.values() for item in s.items)
    busiest_key, busiest = max(sessions.items(), key=lambda pair: pair[1].events)
    print(f"session table user_sessions: {len(sessions):,} users, "
          f"{sum(s.events for s in sessions.values()):,} events folded in")
    print(f"  recent items per user: median {statistics.median(lengths):.0f}, max {max(lengths)} "
          f"(kept up to {settings.session_length})")
    print(f"  most viewed items: {', '.join(f'{item} ({n})' for item, n in items.most_common(5))}")
    print(f"  busiest user {busiest_key.decode()}: {busiest.events} events, last items {list(busiest.items[-5:])}")
    print(f"  dead letters: {worker.value('shopguide_events_deadlettered_total'):.0f}")
