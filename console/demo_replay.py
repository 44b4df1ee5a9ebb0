"""The demo's replay, in passes: each pass sends a group of Toys shoppers' recent views in time
order from a storefront process of its own (console/bench_e2e.py `offer`), and a storefront
consumer in this process (streams/watch.py) takes every recommendation's latency: its arrival
minus its event's Kafka timestamp, as `shopguide bench e2e` measures it.

Each shopper's last item is held back: the model never trained on it (leave-one-out) and it is
what they chose next. A pass scores the recommendation sent after each shopper's last view
against it (the live hit rate) beside popularity's.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from shopguide.stats import percentile

TOP = 10
DRAIN_S = 30.0  # after a pass's last event, how long its recommendations may still take


@dataclass(frozen=True)
class Shopper:
    user: str
    viewed: tuple[str, ...]  # replayed, oldest first
    next_item: str           # held back: what they chose next


@dataclass
class Pass:
    number: int
    started: float  # time.time()
    shoppers: list[Shopper]
    offered: float  # events/s the storefront achieved
    sent: int
    records: list[dict]
    latencies: list[float]  # seconds, event timestamp to arrival here

    @property
    def answers(self) -> dict[str, dict]:
        return last_answers(self.shoppers, self.records)

    @property
    def by_version(self) -> Counter:
        return Counter(version_of(r) for r in self.records)

    def hits(self) -> tuple[int, int, int]:
        """(shoppers answered, model hits, popularity hits) over this pass's last views."""
        answers, popular = self.answers, replay_popularity(self.shoppers)
        answered = [s for s in self.shoppers if s.user in answers]
        return (len(answered), sum(s.next_item in answers[s.user]["items"][:TOP] for s in answered),
                sum(s.next_item in popular for s in answered))


def version_of(record: dict) -> str:
    return f"v{record['model_version']}" if record["model_version"] else "popularity"


def interleave(shoppers: list[Shopper]):
    """(user, item, None) clicks in time order (bench e2e's `offer` events): round k holds every
    shopper's k-th view (ends aligned: everyone's last view falls in the last round)."""
    rounds = max(len(s.viewed) for s in shoppers)
    for k in range(rounds):
        for shopper in shoppers:
            position = k - (rounds - len(shopper.viewed))
            if position >= 0:
                yield shopper.user, shopper.viewed[position], None


def replay_pass(settings, watcher, shoppers: list[Shopper], rate: float, number: int) -> Pass:
    from console.storefront import offer

    first = len(watcher.records)
    clicks = list(interleave(shoppers))
    started = time.time()
    offered = offer(settings, clicks, rate).rate
    watcher.wait_for(first + len(clicks), DRAIN_S)
    done = Pass(number, started, shoppers, offered, len(clicks), watcher.records[first:], watcher.latencies[first:])
    answered, model, popular = done.hits()
    versions = ", ".join(f"{by} {n:,}" for by, n in sorted(done.by_version.items()))
    print(f"pass {number}: {len(shoppers)} shoppers, {len(clicks):,} events at {offered:,.0f}/s; "
          f"{len(done.records):,} answered ({versions}); p50 {percentile(done.latencies, 0.5) * 1000:,.0f} ms, "
          f"p99 {percentile(done.latencies, 0.99) * 1000:,.0f} ms; hit rate@{TOP} "
          f"{model / max(answered, 1):.3f}, popularity {popular / max(answered, 1):.3f}")
    return done


def last_answers(shoppers: list[Shopper], records: list[dict]) -> dict[str, dict]:
    """Per shopper, the recommendation sent after their last replayed view (the newest event)."""
    answers: dict[str, dict] = {}
    for record in records:
        known = answers.get(str(record["user"]))
        if known is None or record["event_time"] > known["event_time"]:
            answers[str(record["user"])] = record
    return {s.user: answers[s.user] for s in shoppers if s.user in answers}


def replay_popularity(shoppers: list[Shopper]) -> list[str]:
    """The 10 items viewed most in the pass: what popularity shows in its last round, where every
    shopper's last view falls (its counts differ from the pass's by at most that round's views)."""
    counts = Counter(item for _, item, _ in interleave(shoppers))
    return [item for item, _ in counts.most_common(TOP)]
