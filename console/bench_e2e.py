"""`shopguide bench e2e`: event-to-recommendation latency under a fixed offered load, and the
highest rate the local stack sustains.

Each stage offers clicks from the Toys sequences (users interleaved, items the model knows) at a
fixed rate for a fixed time; latency is the recommendation's arrival at a storefront consumer
minus its event's Kafka timestamp. A stage is sustained when the producer kept the rate, every
recommendation arrived within the drain time after the last event, and p99 latency stayed under
--max-p99 (a backlog that only drains after the load stops is not keeping up).

Every run starts from empty sessions on topics and a worker group of its own (deleted after), so
figures do not depend on what earlier runs left in the broker.
"""
from __future__ import annotations

import gc
import itertools
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shopguide.config import Settings
from shopguide.stats import percentile
from shopguide.extras import needs
from console.stack import TOYS

STOREFRONT_LINGER_MS = 5  # a storefront batches its events this long: part of the measured latency


def register(bench) -> None:
    e2e = bench.add_parser("e2e", help="event-to-recommendation latency and highest sustained rate",
                           description=__doc__)
    e2e.add_argument("--rate", type=float, default=1000.0, help="offered load of the latency stage (default 1000/s)")
    e2e.add_argument("--steps", type=float, nargs="*", default=[1500, 2000, 2500, 3000, 4000],
                     help="rates tried for the highest sustained rate (default 1500 2000 2500 3000 4000)")
    e2e.add_argument("--seconds", type=float, default=20.0, help="length of each stage (default 20 s)")
    e2e.add_argument("--warmup", type=float, default=5.0,
                     help="unreported seconds at --rate first: connections, topic metadata, caches (default 5)")
    e2e.add_argument("--drain", type=float, default=5.0, help="grace after a stage for late answers (default 5 s)")
    e2e.add_argument("--max-p99", type=float, default=1.0, help="p99 latency (s) a sustained stage stays under (default 1)")
    e2e.add_argument("--train-minutes", type=float, default=10.0, help="training budget if no model is published")
    e2e.add_argument("--report", type=Path, default=Path("reports/bench-e2e.png"), help="plot path")
    e2e.set_defaults(handler=run)
    needs(e2e, "train", "local")


@dataclass
class Stage:
    target: float
    offered: float
    sent: int
    received: int
    latencies: list[float]
    in_worker: list[float]  # event timestamp to the worker's send: the rest is delivery
    fallbacks: int  # answered from popularity, not the model
    max_p99_s: float

    def percentile(self, q: float, of: str = "latencies") -> float:
        return percentile(getattr(self, of), q) * 1000

    @property
    def sustained(self) -> bool:
        return (self.received >= self.sent and self.offered >= 0.95 * self.target
                and self.percentile(0.99) <= self.max_p99_s * 1000)


def run(args, settings: Settings) -> int:
    from shopguide.datasets import read
    from console.stack import local_stack
    from streams.topics import own_pipeline
    from streams.watch import RecommendationWatcher

    clicks = itertools.cycle([(i.user, i.item) for i in read(settings.data_dir / TOYS)])
    settings = own_pipeline(settings, f"bench-{uuid.uuid4().hex[:8]}")
    with local_stack(settings, args.train_minutes) as worker:
        watcher = RecommendationWatcher(settings).start()
        # The watcher keeps every record; full collections over them paused its thread for up to
        # 150 ms, which showed up as delivery latency. Records hold no cycles: no collector needed.
        gc.disable()
        try:
            if args.warmup > 0:
                print(f"warming up for {args.warmup:g} s")
                _stage(settings, watcher, clicks, args.rate, args.warmup, args.drain, args.max_p99)
            stages = [_stage(settings, watcher, clicks, rate, args.seconds, args.drain, args.max_p99)
                      for rate in [args.rate, *args.steps]]
        finally:
            gc.enable()
            watcher.stop()
            worker.stop()
            _drop_pipeline(settings)
    _print(stages)
    _plot(stages, args.report)
    return 0


def _drop_pipeline(settings: Settings) -> None:
    """Its topics (events, recommendations, Faust's changelog and assignor) and worker directory."""
    import shutil

    from streams.topics import delete_topics

    delete_topics(settings, settings.worker_id)
    shutil.rmtree(settings.home / "worker" / settings.worker_id, ignore_errors=True)


def _stage(settings, watcher, clicks, rate: float, seconds: float, drain: float, max_p99_s: float) -> Stage:
    """Offer `rate` clicks/s for `seconds` from a storefront process of its own, so the load
    generator does not share an interpreter (and its lock) with the consumer taking the time."""
    first = len(watcher.records)
    count = int(rate * seconds)
    offered = offer(settings, list(itertools.islice(clicks, count)), rate)
    watcher.wait_for(first + count, drain)
    records = watcher.records[first:first + count]
    stage = Stage(rate, offered, count, len(watcher.records) - first, watcher.latencies[first:first + count],
                  [r["emit_time"] - r["produced_time"] for r in records],
                  sum(r["source"] == "fallback" for r in records), max_p99_s)
    print(f"  {rate:>6,.0f}/s offered {offered:,.0f}/s: {stage.received:,}/{count:,} answered, "
          f"p99 {stage.percentile(0.99):,.0f} ms")
    watcher.wait_for(first + count, 60)  # let a backlog clear before the next stage
    return stage


def offer(settings: Settings, clicks: list[tuple], rate: float) -> float:
    """Send `clicks` ((user, item) pairs) at `rate` per second from a storefront process of its
    own; returns the rate it achieved."""
    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    storefront = context.Process(target=_offer, args=(settings, clicks, rate, result))
    storefront.start()
    offered = result.get(timeout=2 * len(clicks) / rate + 60)  # raises queue.Empty if the storefront died
    storefront.join()
    return offered


def _offer(settings: Settings, clicks: list[tuple], rate: float, result) -> None:
    """The storefront: send `clicks` at `rate` per second; puts the rate it achieved on `result`."""
    from streams.events import Event
    from streams.replay import make_producer, publish

    producer = make_producer(settings, linger_ms=STOREFRONT_LINGER_MS)
    for topic in settings.event_topics:
        producer.partitions_for(topic)  # metadata now, not inside the timed loop
    start = time.monotonic()
    for n, (user, item) in enumerate(clicks):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        publish(producer, settings, Event("click", user, user, time.time(), items=(item,)))
    producer.flush()
    result.put(len(clicks) / (time.monotonic() - start))
    producer.close()


def _print(stages: list[Stage]) -> None:
    print(f"\n{'target/s':>9} {'offered/s':>10} {'answered':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
          f"  {'in worker p50/p99':>17} {'fallbacks':>9}  sustained")
    for s in stages:
        print(f"{s.target:>9,.0f} {s.offered:>10,.0f} {s.received:>5,}/{s.sent:<6,} {s.percentile(0.5):>6,.1f} "
              f"{s.percentile(0.95):>8,.1f} {s.percentile(0.99):>8,.1f}  "
              f"{s.percentile(0.5, 'in_worker'):>8,.1f}/{s.percentile(0.99, 'in_worker'):<8,.1f} {s.fallbacks:>9,}  "
              f"{'yes' if s.sustained else 'no'}")
    best = max((s.target for s in stages if s.sustained), default=None)
    print(f"highest sustained rate: {f'{best:,.0f} events/s' if best else 'none of the stages'}")


def _plot(stages: list[Stage], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        ax.plot([s.target for s in stages], [s.percentile(q) for s in stages], marker="o", label=label)
    ax.set_xlabel("offered load (events/s)")
    ax.set_ylabel("event-to-recommendation latency (ms)")
    ax.set_yscale("log")
    ax.set_title("shopguide end to end on the local stack")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"plot: {path}")
