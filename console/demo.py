"""`shopguide demo`: the main job end to end on the local stack.

Starts what is not already running (Kafka, Triton with a model, trained on the shared Toys data
first if none exists, a worker), replays the Diginetica sample, prints live recommendations as
the storefront would receive them, then a summary: events, recommendations, latency
percentiles, fallbacks and the session table. Stops what it started.
"""
from __future__ import annotations

import statistics
from collections import Counter

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.extras import needs

DIGINETICA = "diginetica-sample/train-item-views.csv"


def register(commands) -> None:
    demo = commands.add_parser(
        "demo", help="run the pipeline end to end on the local stack and print a summary",
        description=__doc__)
    demo.add_argument("--limit", type=int, help="replay only the first N views (default: all 12,390)")
    demo.add_argument("--rate", type=float, default=500.0,
                      help="events per second to replay at (default 500; 0 = as fast as possible)")
    demo.add_argument("--show-every", type=int, default=500, help="print one live recommendation in N (default 500)")
    demo.add_argument("--train-minutes", type=float, default=10.0,
                      help="training budget when no model is published yet (default 10)")
    demo.set_defaults(handler=run)
    needs(demo, "train", "local")


def run(args, settings: Settings) -> int:
    from console.stack import local_stack
    from streams.replay import replay
    from streams.watch import RecommendationWatcher

    with local_stack(settings, args.train_minutes) as worker:
        watcher = RecommendationWatcher(settings, _printer(args.show_every)).start()
        try:
            sent = replay(settings, settings.data_dir / DIGINETICA, rate=args.rate or None, limit=args.limit)
            rejected = worker.value("shopguide_events_deadlettered_total")
            if not watcher.wait_for(sent - int(rejected), timeout_s=300):
                raise UserError(f"only {len(watcher.records)} of {sent} recommendations arrived; see {worker.log_path}")
        finally:
            watcher.stop()
        _summary(settings, sent, watcher, worker)
    return 0


def _printer(every: int):
    seen = Counter()

    def show(record: dict) -> None:
        seen["n"] += 1
        if seen["n"] % every == 1:
            version = f"v{record['model_version']}" if record["model_version"] else "popularity"
            print(f"  -> user {record['user']} ({record['source']}, {version}): {', '.join(map(str, record['items'][:5]))} ...")
    return show


def _summary(settings: Settings, sent: int, watcher, worker) -> None:
    from streams.topics import read_sessions

    latencies = sorted(watcher.latencies)
    sources = Counter(record["source"] for record in watcher.records)
    print(f"\nreplayed {sent:,} events; {len(watcher.records):,} recommendations "
          f"({sources['model']:,} from the model, {sources['fallback']:,} fallbacks); "
          f"dead letters: {worker.value('shopguide_events_deadlettered_total'):.0f}")
    if latencies:
        p50, p95, p99 = (latencies[min(int(q * len(latencies)), len(latencies) - 1)] * 1000 for q in (0.5, 0.95, 0.99))
        print(f"event-to-recommendation latency: p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms")
    sessions = read_sessions(settings)
    if sessions:
        lengths = [len(s.items) for s in sessions.values()]
        print(f"session table user_sessions: {len(sessions):,} users; recent items per user: "
              f"median {statistics.median(lengths):.0f}, max {max(lengths)} (kept up to {settings.session_length})")
