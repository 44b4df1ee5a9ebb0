"""`shopguide demo`: a shopping guide at work on the local stack, in a few minutes.

Starts what is not already running (Kafka; Triton with a model, trained on the shared Toys data
first if none is published; a worker), and serves a live page on 127.0.0.1. Then it replays
Toys shoppers' recent views in time order (every chosen shopper's next view interleaved with
the others'), holding back each one's last item: the model never trained on it (leave-one-out),
and it is what the shopper did next. It prints, by title, what a few shoppers viewed, what we
recommended after their last view and what they chose next, and ends with the live hit rate (the
held-back item among our top 10) beside popularity's (the 10 items viewed most so far in the
replay) over every replayed shopper. Stops what it started.
"""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.extras import needs

TOYS_CATALOGUE = "amazon-toys/items.tsv"
TOP = 10


@dataclass(frozen=True)
class Shopper:
    user: str
    viewed: tuple[str, ...]  # replayed, oldest first
    next_item: str           # held back: what they chose next


def register(commands) -> None:
    demo = commands.add_parser(
        "demo", help="a shopping guide at work on the local stack: live page, titles, live hit rate",
        description=__doc__)
    demo.add_argument("--shoppers", type=int, default=500, help="Toys shoppers to replay (default 500)")
    demo.add_argument("--history", type=int, default=20, help="recent views replayed per shopper (default 20)")
    demo.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    demo.add_argument("--show", type=int, default=5, help="shoppers printed in full (default 5)")
    demo.add_argument("--train-minutes", type=float, default=2.0,
                      help="training budget when no model is published yet (default 2)")
    demo.add_argument("--page-port", type=int, default=8765, help="port of the live page on 127.0.0.1 (default 8765)")
    demo.add_argument("--seed", type=int, default=0, help="which shoppers are drawn (default 0)")
    demo.set_defaults(handler=run)
    needs(demo, "train", "local")


def run(args, settings: Settings) -> int:
    from console.stack import TOYS, local_stack
    from shopguide.catalogue import read_titles
    from shopguide.datasets import read, sequences

    if args.shoppers < 1 or args.history < 1 or args.rate <= 0:
        raise UserError("--shoppers, --history and --rate must be positive")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # metadata races while topics appear: noise here
    started = time.monotonic()
    titles = read_titles(settings.data_dir / TOYS_CATALOGUE)
    shoppers = draw(sequences(read(settings.data_dir / TOYS)), args.shoppers, args.history, args.seed)
    with local_stack(settings, args.train_minutes) as worker:
        records, first_s = _replay_with_page(args, settings, titles, shoppers, started)
        print(f"\nfirst recommendation {first_s:.0f} s after the demo started")
        answers = last_answers(shoppers, records)
        _show(shoppers[:args.show], answers, titles)
        _summary(shoppers, answers, worker)
    return 0


def draw(by_user: dict[str, list[str]], count: int, history: int, seed: int) -> list[Shopper]:
    """`count` shoppers with at least three items, each with their newest `history` views before
    the last item, which is held back."""
    eligible = sorted(user for user, items in by_user.items() if len(items) >= 3)
    chosen = random.Random(seed).sample(eligible, min(count, len(eligible)))
    return [Shopper(user, tuple(by_user[user][-history - 1:-1]), by_user[user][-1]) for user in chosen]


def interleave(shoppers: list[Shopper], start: float):
    """Events in time order: round k holds every shopper's k-th view (ends aligned: everyone's
    last view falls in the last round); event times are unique, `start` + 1 ms each."""
    from streams.events import Event

    rounds = max(len(s.viewed) for s in shoppers)
    n = 0
    for k in range(rounds):
        for shopper in shoppers:
            position = k - (rounds - len(shopper.viewed))
            if position >= 0:
                yield Event("click", shopper.user, shopper.user, start + n / 1000, items=(shopper.viewed[position],))
                n += 1


def _replay_with_page(args, settings, titles, shoppers, started):
    from console.live_page import LivePage
    from console.live_view import LiveView
    from streams.replay import paced, produce
    from streams.watch import RecommendationWatcher

    view = LiveView(settings, titles).start()
    page = LivePage(view, port=args.page_port).start()
    watcher = RecommendationWatcher(settings).start()
    print(f"live page: {page.url}")
    try:
        events = list(interleave(shoppers, time.time()))
        sent = produce(settings, paced(events, rate=args.rate), total=len(events))
        if not watcher.wait_for(sent, timeout_s=120):
            raise UserError(f"only {len(watcher.records)} of {sent} recommendations arrived")
        first_s = watcher.first_arrival - started
        return list(watcher.records), first_s
    finally:
        watcher.stop()
        page.stop()
        view.stop()


def last_answers(shoppers: list[Shopper], records: list[dict]) -> dict[str, dict]:
    """Per shopper, the recommendation sent after their last replayed view (the newest event)."""
    answers: dict[str, dict] = {}
    for record in records:
        known = answers.get(str(record["user"]))
        if known is None or record["event_time"] > known["event_time"]:
            answers[str(record["user"])] = record
    return {s.user: answers[s.user] for s in shoppers if s.user in answers}


def replay_popularity(shoppers: list[Shopper]) -> list[str]:
    """The 10 items viewed most in the whole replay: what popularity shows in the last round,
    where every shopper's last view falls (its counts differ from the replay's by at most that
    round's views)."""
    counts = Counter(item for event in interleave(shoppers, 0.0) for item in event.items)
    return [item for item, _ in counts.most_common(TOP)]


def _show(shoppers: list[Shopper], answers: dict[str, dict], titles: dict[str, str]) -> None:
    from shopguide.catalogue import title

    print(f"\n{len(shoppers)} shoppers, the first drawn:")
    for shopper in shoppers:
        answer = answers.get(shopper.user)
        if answer is None:
            continue
        version = f"model v{answer['model_version']}" if answer["model_version"] else "popularity"
        viewed = " › ".join(title(titles, item, 30) for item in shopper.viewed[-4:])
        print(f"\nshopper {shopper.user} viewed: {viewed}")
        print(f"  we recommended ({version}): " + "; ".join(title(titles, i, 30) for i in answer["items"][:5]) + "; …")
        rank = answer["items"].index(shopper.next_item) + 1 if shopper.next_item in answer["items"][:TOP] else None
        verdict = f"in our top {TOP} at {rank}" if rank else f"not in our top {TOP}"
        print(f"  next they chose: {title(titles, shopper.next_item, 40)} ({verdict})")


def _summary(shoppers: list[Shopper], answers: dict[str, dict], worker) -> None:
    from shopguide.stats import histogram_quantile

    popular = replay_popularity(shoppers)
    answered = [s for s in shoppers if s.user in answers]
    model = sum(s.next_item in answers[s.user]["items"][:TOP] for s in answered)
    baseline = sum(s.next_item in popular for s in answered)
    sources = Counter(answers[s.user]["source"] for s in answered)
    print(f"\nlive hit rate @{TOP} over {len(answered)} shoppers (their held-back next item among the "
          f"{TOP} we sent after their last view): shopguide {model / len(answered):.3f} "
          f"({sources['model']} answered by the model, {sources['fallback']} by popularity), "
          f"popularity {baseline / len(answered):.3f}")
    buckets = [(s.labels["le"], s.value) for s in worker.samples()
               if s.name == "shopguide_event_to_recommendation_seconds_bucket"]
    p50, p99 = (histogram_quantile(buckets, q) * 1000 for q in (0.5, 0.99))
    print(f"in the worker, event to recommendation sent: p50 <= {p50:.0f} ms, p99 <= {p99:.0f} ms "
          "(bucket bounds of its histogram; delivery to the storefront adds a few ms)")
