"""`shopguide bench e2e`: the highest event rate the local stack sustains end to end, as a ratio
of its parts' capacities measured in the same run, and event-to-recommendation latency at half
that rate.

First the parts alone, on the run's broker and Triton: the Faust pass-through agent (events/s; the
yardstick is Faust as published, measured again with the session worker's hand-off from the
consumer to the streams, `faust_internals.deliver_inline`) and the served model (users/s over the
histories this run's events build); the pass-through runs once more after the stages, on a broker
whose JIT has done its work, and the fastest pass is the yardstick. Then the pipeline: Toys clicks
as a steady stream of shoppers (console/shoppers.py: a thousand clicking in turn, so every stage
reads histories as long as the data's, wherever it falls; the warm-up replays the first shoppers'
earlier clicks), each preceded with probability --search-share by the same user's search for two
or three consecutive words of the item's title in the Toys catalogue (items.tsv beside the clicks;
without it, or for a title of one word, the query is "wooden toys"), offered at fixed rates,
fractions of the pass-through rate, from a storefront process of its own; latency is the
recommendation's arrival at a storefront consumer minus its event's Kafka timestamp. A stage is
sustained when the producer kept the rate, every recommendation arrived within the drain time
after the last event, at most 1 % of them came from the popularity fallback (a Triton call that
timed out under load answers its batch from popularity, which keeps up without the model), and
p99 latency stayed under --max-p99 (a backlog that only drains after the load stops is not
keeping up). The steps stop at the first stage not sustained; --refine stages then bisect between
it and the step below it, and the latency stage follows at half the highest sustained rate.

Every run starts from empty sessions on topics and a worker group of its own (deleted after), so
figures do not depend on what earlier runs left in the broker.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shopguide.args import path_arg
from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.stats import percentile
from shopguide.extras import needs
from console.stack import TOYS
from console.shoppers import steady_clicks
from console.storefront import offer

MAX_FALLBACK_SHARE = 0.01  # a sustained stage's answers come from the model
SEARCH = "wooden toys"  # the query when the catalogue gives none
CATALOGUE = "amazon-toys/items.tsv"


def register(bench) -> None:
    e2e = bench.add_parser("e2e", help="highest sustained event rate as a ratio of the parts' capacities, latency",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e2e.add_argument("--steps", type=float, nargs="+", default=[0.4, 0.55, 0.7, 0.85, 1.0],
                     help="offered rates for the highest sustained rate, as fractions of the run's pass-through "
                          "rate (default 0.4 0.55 0.7 0.85 1.0)")
    e2e.add_argument("--refine", type=int, default=2,
                     help="stages that halve the gap between the highest sustained step and the first that was "
                          "not, for a finer highest sustained rate (default 2)")
    e2e.add_argument("--rate", type=float,
                     help="offered load of the latency stage (default: half the highest sustained rate)")
    e2e.add_argument("--search-share", type=float, default=0.1,
                     help="probability that a click is preceded by a search for words of its item's title (default 0.1)")
    e2e.add_argument("--seconds", type=float, default=10.0, help="length of each stage (default 10 s)")
    e2e.add_argument("--warmup", type=float, default=5.0,
                     help="unreported seconds at the first step's rate: connections, metadata, caches; at least as "
                          "long as the first shoppers' earlier clicks take (console/shoppers.py) (default 5)")
    e2e.add_argument("--drain", type=float, default=5.0, help="grace after a stage for late answers (default 5 s)")
    e2e.add_argument("--max-p99", type=float, default=1.0, help="p99 latency (s) a sustained stage stays under (default 1)")
    e2e.add_argument("--passthrough-events", type=int, default=40_000,
                     help="events through the pass-through agent for its capacity, in each of three passes (two "
                          "before the stages, one after, on a warm broker); the fastest counts (default 40000)")
    e2e.add_argument("--triton-batch", type=int, default=32, help="users per call for Triton's capacity (default 32)")
    e2e.add_argument("--triton-concurrency", type=int, default=2,
                     help="calls in flight for Triton's capacity (default 2)")
    e2e.add_argument("--profile", type=path_arg, metavar="DIR",
                     help="profile the latency stage: CPU per process from /proc, py-spy samples of the worker "
                          "and the model's stub into DIR (py-spy from PyPI, if installed)")
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
    inferred: float = float("nan")  # histories sent to Triton per event: the rest reused an answer
    steered: float = float("nan")  # model answers a query steered, per event
    batch: dict = field(default_factory=dict)  # the worker's mean batch: events, ms per phase (_batch_means)
    storefront_cpu_s: float = 0.0  # CPU seconds the storefront took to send the stage's events

    def percentile(self, q: float, of: str = "latencies") -> float:
        return percentile(getattr(self, of), q) * 1000

    @property
    def sustained(self) -> bool:
        return (self.received >= self.sent and self.offered >= 0.95 * self.target
                and self.fallbacks <= MAX_FALLBACK_SHARE * self.sent and self.percentile(0.99) <= self.max_p99_s * 1000)


def run(args, settings: Settings) -> int:
    from shopguide.datasets import read
    from console.stack import local_stack
    from streams.topics import own_pipeline

    if not 0 <= args.search_share < 1:
        raise UserError(f"--search-share {args.search_share:g}: expected a probability from 0 to below 1")
    if min(args.steps + [args.seconds, args.passthrough_events, args.triton_batch, args.triton_concurrency]) <= 0:
        raise UserError("--steps, --seconds, --passthrough-events, --triton-batch and --triton-concurrency must be positive")
    if args.refine < 0:
        raise UserError(f"--refine {args.refine}: expected 0 or more stages")
    warmup, clicks = steady_clicks([(i.user, i.item) for i in read(settings.data_dir / TOYS)])
    settings = own_pipeline(settings, f"bench-{uuid.uuid4().hex[:8]}")
    with local_stack(settings, args.train_minutes) as worker:
        try:
            titles = _titles(settings, args.search_share)
            warm = list(_with_searches(warmup, args.search_share, titles))
            events = itertools.chain(warm, _with_searches(clicks, args.search_share, titles, seed=1))
            result = _measure(args, settings, worker, events, len(warm))
        finally:
            worker.stop()
            _drop_pipeline(settings)
    _print(*result)
    _plot(result[2], args.report)
    return 0


def _measure(args, settings: Settings, worker, events, warmup: int):
    """(capacities, latency stage, every stage by rate, profile): the parts alone, then the pipeline,
    whose first `warmup` events are the warm-up's at least."""
    from console.bench_capacity import histories, passthrough_rate, triton_rate
    from serving.repository import ModelRepository
    from streams.watch import RecommendationWatcher

    passthrough = passthrough_rate(settings, args.passthrough_events)
    as_worker = passthrough_rate(settings, args.passthrough_events, as_worker=True)
    rates = [round(step * passthrough, -1) for step in sorted(args.steps)]
    planned = list(itertools.islice(events, int((sum(rates) + max(rates)) * args.seconds)))
    triton = triton_rate(settings, histories(planned, settings.session_length), args.triton_batch, args.seconds,
                         args.triton_concurrency)
    reads = ModelRepository.from_settings(settings).live_reads_queries()
    print(f"capacities: pass-through {passthrough:,.0f} events/s ({as_worker:,.0f} with the worker's hand-off), "
          f"Triton {triton['users_per_s']:,.0f} users/s; "
          f"the served version {'reads' if reads else 'ignores (no text tower)'} the queries")
    events = itertools.chain(planned, events)
    watcher = RecommendationWatcher(settings).start()
    # The watcher keeps every record; full collections over them paused its thread for up to
    # 150 ms, which showed up as delivery latency. Records hold no cycles: no collector needed.
    gc.disable()
    try:
        seconds = max(args.warmup, warmup / rates[0])
        print(f"warming up for {seconds:.1f} s")
        _stage(settings, watcher, events, rates[0], seconds, args.drain, args.max_p99, worker)
        stages = []
        for rate in rates:
            stages.append(_stage(settings, watcher, events, rate, args.seconds, args.drain, args.max_p99, worker))
            if not stages[-1].sustained:
                break
        for _ in range(args.refine):
            if (rate := _halfway(stages)) is None:
                break
            stages.append(_stage(settings, watcher, events, rate, args.seconds, args.drain, args.max_p99, worker))
        best = max((s.target for s in stages if s.sustained), default=rates[0])
        with _profiled(args.profile, settings, worker, args.seconds) as profile:
            latency = _stage(settings, watcher, events, args.rate or best / 2, args.seconds, args.drain,
                             args.max_p99, worker)
    finally:
        gc.enable()
        watcher.stop()
    # The passes before the stages meet a broker whose JIT is still compiling (its compilers run at
    # nice 19 and wait for idle time, streams/broker.py): the yardstick is the fastest pass, warm ones included.
    warm = passthrough_rate(settings, args.passthrough_events, passes=1, label="-warm")
    print(f"pass-through again after the stages, on a warm broker: {warm:,.0f} events/s")
    capacities = {"cold": passthrough, "warm": warm, "as_worker": as_worker, "triton": triton}
    return capacities, latency, sorted(stages, key=lambda s: s.target), profile


def _halfway(stages: list[Stage]) -> float | None:
    """The rate halfway between the highest sustained stage and the lowest one not sustained; None
    without both, or when a stage failed below one sustained (then the noise is wider than the gap)."""
    best = max((s.target for s in stages if s.sustained), default=None)
    failed = min((s.target for s in stages if not s.sustained), default=None)
    if best is None or failed is None or failed < best:
        return None
    return round((best + failed) / 2, -1)


def _profiled(directory: Path | None, settings: Settings, worker, seconds: float):
    if directory is None:
        return contextlib.nullcontext()
    from console.bench_profile import StageProfile, children
    from serving.triton import LocalTriton
    from streams.broker import LocalBroker

    server = LocalTriton(settings).pid()
    stubs = children(server) if server else []
    parts = {"Kafka broker": LocalBroker(settings.home, settings.cache, 0, 0, settings.partitions).pid(),
             "worker": worker.process.pid, "Triton server": server, "model stub": stubs[0] if stubs else None,
             "storefront consumer (measuring)": os.getpid()}
    return StageProfile(parts, directory, seconds)


def _titles(settings: Settings, share: float) -> dict[str, str]:
    """The Toys catalogue's titles, for the searches' queries; none (and a line saying so) without it."""
    from shopguide.catalogue import read_titles

    path = settings.data_dir / CATALOGUE
    if share and not path.exists():
        print(f"no catalogue at {path}: every search asks {SEARCH!r}")
        return {}
    return read_titles(path) if share else {}


def _with_searches(clicks, share: float, titles: dict[str, str], seed: int = 0):
    """(user, item, None) per click of `clicks` ((user, item) pairs), each preceded with probability
    `share` by the user's search (user, None, query): words of the item's title, else SEARCH."""
    from shopguide.catalogue import simulated_query

    rng = random.Random(seed)
    for user, item in clicks:
        if share and rng.random() < share:
            yield user, None, simulated_query(titles.get(str(item), ""), rng) or SEARCH
        yield user, item, None


def _drop_pipeline(settings: Settings) -> None:
    """Its topics (events, recommendations, Faust's changelog and assignor, the pass-through's) and
    worker directories."""
    import shutil

    from streams.topics import delete_topics

    delete_topics(settings, settings.worker_id)
    for directory in (settings.home / "worker").glob(f"{settings.worker_id}*"):
        shutil.rmtree(directory, ignore_errors=True)


def _stage(settings, watcher, events, rate: float, seconds: float, drain: float, max_p99_s: float,
           worker) -> Stage:
    """Offer `rate` events/s for `seconds` from a storefront process of its own, so the load
    generator does not share an interpreter (and its lock) with the consumer taking the time."""
    first = len(watcher.records)
    count = int(rate * seconds)
    before = _counters(worker, settings)
    offered = offer(settings, list(itertools.islice(events, count)), rate)
    watcher.wait_for(first + count, drain)
    records = watcher.records[first:first + count]
    stage = Stage(rate, offered.rate, count, len(watcher.records) - first, watcher.latencies[first:first + count],
                  [r["emit_time"] - r["produced_time"] for r in records],
                  sum(r["source"] == "fallback" for r in records), max_p99_s, storefront_cpu_s=offered.cpu_s)
    print(f"  {rate:>6,.0f}/s offered {offered.rate:,.0f}/s: {stage.received:,}/{count:,} answered, "
          f"p99 {stage.percentile(0.99):,.0f} ms")
    watcher.wait_for(first + count, 60)  # let a backlog clear before the next stage
    _settle(worker)
    done = {name: value - before.get(name, 0.0) for name, value in _counters(worker, settings).items()}
    consumed = max(done["consumed"], 1)
    stage.inferred, stage.steered = done["inferred"] / consumed, done["steered"] / consumed
    stage.batch = _batch_means(done)
    return stage


def _settle(worker, timeout_s: float = 60.0) -> None:
    """Wait until the worker has read every event offered (its lag gauge, refreshed each second):
    events a stage lost or left behind must not land in the next stage's figures."""
    deadline = time.monotonic() + timeout_s
    time.sleep(1.5)
    while time.monotonic() < deadline:
        if sum(s.value for s in worker.samples() if s.name == "shopguide_consumer_lag") == 0:
            return
        time.sleep(0.5)
    print(f"  the worker still lags after {timeout_s:.0f} s: the next stage starts behind")


WORK = {"shopguide_triton_batch_size_sum": "inferred", "shopguide_events_consumed_total": "consumed",
        "shopguide_recommendations_steered_total": "steered", "shopguide_batch_events_sum": "events",
        "shopguide_batch_events_count": "batches", "shopguide_triton_request_seconds_sum": "triton",
        "shopguide_triton_request_seconds_count": "calls",
        # Triton's own counters (parsed with _total), summed over its requests (microseconds)
        "nv_inference_request_success_total": "requests", "nv_inference_request_duration_us_total": "server_us",
        "nv_inference_queue_duration_us_total": "queue_us", "nv_inference_compute_input_duration_us_total": "compute_us",
        "nv_inference_compute_infer_duration_us_total": "compute_us",
        "nv_inference_compute_output_duration_us_total": "compute_us"}
PHASES = ("queued", "fold", "answer", "wait", "send", "confirm")


def _work(samples: list) -> dict[str, float]:
    """The counters in `samples` that a stage's figures come from: the worker's (histories sent to
    Triton, events consumed, model answers a query steered, batches and their events, Triton calls
    and their seconds, seconds per batch phase) and Triton's (requests, and their time in the
    server, queued and computing)."""
    work = {}
    for sample in samples:
        name = WORK.get(sample.name)
        if sample.name == "shopguide_batch_phase_seconds_sum":
            name = sample.labels["phase"]
        if name:
            work[name] = work.get(name, 0.0) + sample.value
    return work


def _counters(worker, settings: Settings) -> dict[str, float]:
    """The worker's and Triton's counters now (`_work`)."""
    return _work(worker.samples() + _triton_samples(settings))


def _triton_samples(settings: Settings) -> list:
    """Every sample of Triton's metrics page (none if it does not answer)."""
    from serving.triton import split_address
    from shopguide.metrics import scrape

    return scrape(f"http://{split_address(settings.triton_grpc)[0]}:{settings.triton_metrics_port}/metrics")


def _batch_means(done: dict[str, float]) -> dict[str, float]:
    """A stage's mean batch: its events, milliseconds per phase and in a Triton call, and a request's
    milliseconds inside Triton (all of it, queued, computing)."""
    batches = max(done.get("batches", 0.0), 1)
    requests = max(done.get("requests", 0.0), 1)
    means = {"events": done.get("events", 0.0) / batches,
             "triton": 1000 * done.get("triton", 0.0) / max(done.get("calls", 0.0), 1)}
    means |= {part: done.get(f"{part}_us", 0.0) / 1000 / requests for part in ("server", "queue", "compute")}
    return means | {phase: 1000 * done.get(phase, 0.0) / batches for phase in PHASES}


def _print(capacities: dict, latency: Stage, stages: list[Stage], profile) -> None:
    print(f"\n{'target/s':>9} {'offered/s':>10} {'answered':>13} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
          f"  {'in worker p50/p99':>17} {'fallbacks':>9} {'inferred':>8} {'steered':>7}  sustained")
    for s in [*stages, latency]:
        print(f"{s.target:>9,.0f} {s.offered:>10,.0f} {s.received:>6,}/{s.sent:<6,} {s.percentile(0.5):>8,.1f} "
              f"{s.percentile(0.95):>8,.1f} {s.percentile(0.99):>8,.1f}  "
              f"{s.percentile(0.5, 'in_worker'):>8,.1f}/{s.percentile(0.99, 'in_worker'):<8,.1f} {s.fallbacks:>9,} "
              f"{s.inferred:>8.2f} {s.steered:>7.2f}  {'yes' if s.sustained else 'no'}")
    cold, warm, as_worker, triton = (capacities[part] for part in ("cold", "warm", "as_worker", "triton"))
    passthrough = max(cold, warm)  # the yardstick
    best = max((s.target for s in stages if s.sustained), default=0.0)
    print(f"\ncapacities in this run: Faust pass-through {passthrough:,.0f} events/s (the fastest of three passes: "
          f"{cold:,.0f} before the stages, the faster of two, and {warm:,.0f} after them; "
          f"{as_worker:,.0f} with the worker's hand-off from the consumer to the streams); "
          f"Triton {triton['users_per_s']:,.0f} users/s (micro-batches of {triton['batch']:.0f}, p50 {triton['p50_ms']:.1f} ms)")
    bound = "at least " if all(s.sustained for s in stages) else ""  # the top step is then a lower bound
    if best:
        print(f"highest sustained rate: {bound}{best:,.0f} events/s = {best / passthrough:.2f} x pass-through "
              f"({best / as_worker:.2f} x the one with the worker's hand-off), "
              f"{best / triton['users_per_s']:.2f} x Triton's users/s (goal >= 0.7 x pass-through)")
    else:
        print(f"highest sustained rate: below {stages[0].target:,.0f} events/s = {stages[0].target / passthrough:.2f} "
              f"x pass-through, the lowest step (goal >= 0.7 x pass-through)")
    print(f"at {latency.target:,.0f} events/s ({latency.target / passthrough:.2f} x pass-through): "
          f"p50 {latency.percentile(0.5):,.1f} ms, p99 {latency.percentile(0.99):,.1f} ms (goal p99 <= 100 ms)")
    if latency.batch:
        b = latency.batch
        print(f"its mean batch: {b['events']:.1f} events; the oldest queued {b['queued']:.1f} ms (the storefront's "
              f"tick, Kafka, the fetch, the batch wait), then fold {b['fold']:.1f} ms, answer {b['answer']:.1f} ms "
              f"(a Triton call {b['triton']:.1f} ms: {b['server']:.1f} in the server, {b['queue']:.1f} of it queued "
              f"and {b['compute']:.1f} computing), the batch before {b['wait']:.1f} ms, send {b['send']:.1f} ms, "
              f"confirm {b['confirm']:.1f} ms")
    if profile is not None:
        print(profile.report(latency.sent, {"storefront (sending)": latency.storefront_cpu_s}))


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
