"""`shopguide demo`: a shopping guide at work on the local stack, in a few minutes.

Starts what is not already running (Kafka; Triton with a model: when none is published, a fast
first model is trained on the shared Toys data for --train-minutes; a worker), and serves a live
page on 127.0.0.1. Then it replays Toys shoppers' recent views in time order, in passes of
--shoppers shoppers, from a storefront process of its own, holding back each one's last item: the
model never trained on it (leave-one-out), and it is what the shopper did next.

While the fast first model is live, it is trained further in the background (--better-minutes,
at the lowest CPU priority) and the result is rolled out live when validation improved: passes
continue until one has run entirely on it. Each pass prints its live hit rate (the held-back item
among our top 10) beside popularity's (its 10 most viewed items) and its latency (event to
arrival at a storefront consumer); the end shows a few shoppers by title, the hit rate per model
version, the rollout and the latency over the whole replay. The models know items by their
catalogue content, so the end also shows what a search adds: the shoppers of the last pass, had
each searched two or three words of the title of the item they chose next (a simulated search),
asked of Triton. Stops what it started.
"""
from __future__ import annotations

import gc
import logging
import random
import time

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.extras import needs
from shopguide.stats import percentile
from console.demo_replay import TOP, Shopper

TOYS_CATALOGUE = "amazon-toys/items.tsv"
SEARCH_BATCH = 256  # simulated searches per Triton call


def register(commands) -> None:
    demo = commands.add_parser(
        "demo", help="a shopping guide at work on the local stack: live page, titles, live hit rate, a live rollout",
        description=__doc__)
    demo.add_argument("--shoppers", type=int, default=500, help="Toys shoppers per pass (default 500)")
    demo.add_argument("--history", type=int, default=20, help="recent views replayed per shopper (default 20)")
    demo.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    demo.add_argument("--show", type=int, default=5, help="shoppers printed in full (default 5)")
    demo.add_argument("--train-minutes", type=float, default=1.0,
                      help="training budget of the fast first model when none is published (default 1)")
    demo.add_argument("--better-minutes", type=float, default=4.0,
                      help="while the first model is live, train it this much further in the background "
                           "and roll the result out; 0: not (default 4)")
    demo.add_argument("--page-port", type=int, default=8765, help="port of the live page on 127.0.0.1 (default 8765)")
    demo.add_argument("--seed", type=int, default=0, help="which shoppers are drawn (default 0)")
    demo.set_defaults(handler=run)
    needs(demo, "train", "local")


def run(args, settings: Settings) -> int:
    from console.demo_model import BetterModel, first_is_live, first_model
    from console.stack import TOYS, local_stack
    from shopguide.catalogue import read_titles
    from shopguide.datasets import read, sequences

    if args.shoppers < 1 or args.history < 1 or args.rate <= 0 or args.train_minutes <= 0 or args.better_minutes < 0:
        raise UserError("--shoppers, --history, --rate and --train-minutes must be positive, --better-minutes not negative")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # metadata races while topics appear: noise here
    started = time.monotonic()
    titles = read_titles(settings.data_dir / TOYS_CATALOGUE)
    shoppers = draw(sequences(read(settings.data_dir / TOYS)), args.history, args.seed)
    groups = [shoppers[i:i + args.shoppers] for i in range(0, len(shoppers), args.shoppers)]
    catalogue = settings.data_dir / TOYS_CATALOGUE
    first_model(settings, settings.data_dir / TOYS, args.train_minutes, catalogue if catalogue.is_file() else None)
    better = None
    with local_stack(settings, args.train_minutes):
        if args.better_minutes > 0 and first_is_live(settings):
            better = BetterModel(settings, settings.data_dir / TOYS, args.better_minutes).start()
        try:
            passes = _replay(args, settings, titles, groups, better, started)
        finally:
            if better:
                better.stop()
        searched = _searched(settings, passes[-1].shoppers, titles)
    _show(passes[-1], titles, args.show, searched)
    _summary(passes, better)
    _search_summary(passes[-1], searched)
    return 0


def draw(by_user: dict[str, list[str]], history: int, seed: int) -> list[Shopper]:
    """Every shopper with at least three items in a seeded random order, each with their newest
    `history` views before the last item, which is held back."""
    eligible = sorted(user for user, items in by_user.items() if len(items) >= 3)
    random.Random(seed).shuffle(eligible)
    return [Shopper(user, tuple(by_user[user][-history - 1:-1]), by_user[user][-1]) for user in eligible]


def _replay(args, settings, titles, groups, better, started: float) -> list:
    """Passes until one ran entirely on the model that is live at the end (one pass without a
    better model training), or the shoppers run out."""
    from console.demo_replay import replay_pass
    from console.live_page import LivePage
    from console.live_view import LiveView
    from streams.watch import RecommendationWatcher

    view = LiveView(settings, titles).start()
    page = LivePage(view, port=args.page_port).start()
    watcher = RecommendationWatcher(settings).start()
    print(f"live page: {page.url}")
    # As in bench e2e: the watcher keeps every record, and the collector's passes over them
    # paused its thread (measured as delivery latency). Records hold no cycles.
    gc.disable()
    passes = []
    try:
        for number, group in enumerate(groups, start=1):
            passes.append(replay_pass(settings, watcher, group, args.rate, number))
            if number == 1 and watcher.first_arrival is not None:
                print(f"first recommendation {watcher.first_arrival - started:.0f} s after the demo started")
            if _last(passes[-1], better):
                break
        return passes
    finally:
        gc.enable()
        watcher.stop()
        page.stop()
        view.stop()


def _last(done, better) -> bool:
    """Whether `done` ran on the model that stays live: no better one is coming, or it served
    before the pass began."""
    if better is None or not better.done:
        return better is None
    return better.published is None or better.published[1] < done.started


def _searched(settings: Settings, shoppers: list, titles: dict[str, str]) -> dict[str, tuple[str, list[str]]]:
    """user -> (query, the live model's items) had each shopper, after their views, searched two or
    three words of the item they chose next's title: a simulated search (the public data has no
    query log), asked of Triton directly. Empty when the live model has no text tower."""
    import asyncio
    import random

    from serving.client import TritonClient
    from serving.repository import ModelRepository
    from shopguide.catalogue import simulated_query

    if not ModelRepository.from_settings(settings).live_reads_queries():
        return {}
    rng = random.Random(0)
    asks = {shopper.user: (list(shopper.viewed), simulated_query(titles.get(shopper.next_item, ""), rng))
            for shopper in shoppers}
    asks = {user: (viewed, query) for user, (viewed, query) in asks.items() if query}
    rows = list(asks.values())

    async def ask():
        client, answers = TritonClient(settings.triton_grpc, settings.model_name), []
        try:
            for start in range(0, len(rows), SEARCH_BATCH):
                batch = rows[start:start + SEARCH_BATCH]
                answers += (await client.recommend([viewed for viewed, _ in batch], 30.0, [query for _, query in batch]))[0]
            return answers
        finally:
            await client.close()
    answers = asyncio.run(ask()) if rows else []
    return {user: (query, items) for (user, (_, query)), (items, _) in zip(asks.items(), answers)}


def _show(last, titles: dict[str, str], count: int, searched: dict[str, tuple[str, list[str]]]) -> None:
    from shopguide.catalogue import title

    answers = last.answers
    print(f"\n{count} shoppers of the last pass:")
    for shopper in last.shoppers[:count]:
        answer = answers.get(shopper.user)
        if answer is None:
            continue
        version = f"model v{answer['model_version']}" if answer["model_version"] else "popularity"
        viewed = " › ".join(title(titles, item, 30) for item in shopper.viewed[-4:])
        print(f"\nshopper {shopper.user} viewed: {viewed}")
        print(f"  we recommended ({version}): " + "; ".join(title(titles, i, 30) for i in answer["items"][:5]) + "; …")
        print(f"  next they chose: {title(titles, shopper.next_item, 40)} ({_verdict(answer['items'], shopper.next_item)})")
        if shopper.user in searched:
            query, items = searched[shopper.user]
            print(f'  had they searched "{query}" (words of that title) first: '
                  + "; ".join(title(titles, i, 30) for i in items[:5]) + f"; … ({_verdict(items, shopper.next_item)})")


def _search_summary(last, searched: dict[str, tuple[str, list[str]]]) -> None:
    if not searched:
        print("searches do not steer this model: it was trained without a catalogue")
        return
    chosen = {shopper.user: shopper.next_item for shopper in last.shoppers}
    answers = last.answers
    users = [user for user in searched if user in answers]
    with_search = sum(chosen[user] in searched[user][1][:TOP] for user in users) / max(len(users), 1)
    without = sum(chosen[user] in answers[user]["items"][:TOP] for user in users) / max(len(users), 1)
    print(f"searches, simulated (each of the {len(users):,} shoppers of the last pass searching two or three words "
          f"of the title of the item they chose next, asked of Triton after their views): hit rate @{TOP} "
          f"{with_search:.3f} with the search, {without:.3f} with what we sent after their last view")


def _verdict(items: list[str], chosen: str) -> str:
    rank = items.index(chosen) + 1 if chosen in items[:TOP] else None
    return f"in our top {TOP} at {rank}" if rank else f"not in our top {TOP}"


def _summary(passes: list, better) -> None:
    from collections import Counter

    from console.demo_replay import replay_popularity, version_of

    shoppers, hits, popular = Counter(), Counter(), Counter()
    for done in passes:
        top = replay_popularity(done.shoppers)
        for shopper in done.shoppers:
            answer = done.answers.get(shopper.user)
            if answer is not None:
                by = version_of(answer)
                shoppers[by] += 1
                hits[by] += shopper.next_item in answer["items"][:TOP]
                popular[by] += shopper.next_item in top
    print(f"\nlive hit rate @{TOP} (each shopper's held-back next item among the {TOP} we sent after their last view), "
          "by what answered that view:")
    for by in sorted(shoppers):
        print(f"  {by}: {hits[by] / shoppers[by]:.3f} over {shoppers[by]:,} shoppers; popularity over the same "
              f"shoppers {popular[by] / shoppers[by]:.3f}")
    if better is not None:
        print(f"rollout: {better.outcome or 'the better model was still training'}")
    sent, latencies = sum(p.sent for p in passes), [x for p in passes for x in p.latencies]
    answered = sum(len(p.records) for p in passes)
    versions = sum((p.by_version for p in passes), Counter())
    print(f"events {sent:,}, recommendations {answered:,} ({', '.join(f'{by} {n:,}' for by, n in sorted(versions.items()))}); "
          f"{max(sent - answered, 0):,} events unanswered (popularity answers when a Triton call fails or takes "
          "longer than SHOPGUIDE_TRITON_TIMEOUT, e.g. while Triton loads a new version on busy cores)")
    p50, p95, p99 = (percentile(latencies, q) * 1000 for q in (0.5, 0.95, 0.99))
    print(f"latency, event (its Kafka timestamp) to arrival at a storefront consumer, the events sent by a "
          f"storefront process of its own: p50 {p50:,.0f} ms, p95 {p95:,.0f} ms, p99 {p99:,.0f} ms")
