"""bench e2e's steady stream of shoppers (console/shoppers.py), on a made-up data set (pure logic):
each shopper's clicks are their items in order, split between the warm-up and the stream; every
pass comes under fresh ids; and the histories are as long as the data's from the first click on."""
import itertools
import random
from collections import Counter, defaultdict

from console.shoppers import steady_clicks

ACTIVE = 50


def data_set(users: int = 400, seed: int = 3) -> list[tuple[str, str]]:
    """(user, item) pairs round by round, as read() orders an Amazon-style file: user k has 1 to 40 items."""
    rng = random.Random(seed)
    lengths = {f"u{k}": rng.choice([1, 2, 3, 5, 8, 13, 40]) for k in range(users)}
    return [(user, f"{user}-i{step}") for step in range(40) for user, length in lengths.items() if step < length]


def test_each_shopper_clicks_their_items_in_order_once_a_turn_and_passes_come_under_fresh_ids():
    pairs = data_set()
    items = defaultdict(list)
    for user, item in pairs:
        items[user].append(item)
    warmup, clicks = steady_clicks(pairs, ACTIVE)
    stream = list(itertools.islice(clicks, 3 * len(pairs)))
    clicked = defaultdict(list)
    for user, item in warmup + stream:
        clicked[user].append(item)
    finished = {user for user in clicked if user.endswith("~2")}
    assert len(finished) == len(items)  # the second pass (the first whole one) is done within three passes' clicks
    for user in finished:
        assert clicked[user] == items[user.split("~")[0]]
    for user in (user for user in clicked if user.endswith("~1")):  # the first shoppers, warm-up included
        assert clicked[user] == items[user.split("~")[0]][:len(clicked[user])]
    window = Counter(user for user, _ in stream[1000:1000 + ACTIVE])
    assert max(window.values()) == 1 and len(window) == ACTIVE


def test_histories_are_as_long_as_the_datas_wherever_a_stage_starts():
    pairs = data_set()
    per_user = Counter(user for user, _ in pairs)
    data_mean = sum(n * (n + 1) / 2 for n in per_user.values()) / len(pairs)  # each click's history, averaged
    warmup, clicks = steady_clicks(pairs, ACTIVE)
    held = Counter(user for user, _ in warmup)
    lengths = []
    for user, _ in itertools.islice(clicks, 20 * len(pairs)):
        held[user] += 1
        lengths.append(held[user])
    window = len(pairs) // 2
    means = [sum(lengths[at:at + window]) / window for at in range(0, len(lengths) - window + 1, window)]
    assert all(0.8 * data_mean < mean < 1.2 * data_mean for mean in means), (data_mean, means)
    in_file_order = [step + 1 for step in range(40) for n in per_user.values() if step < n]
    assert sum(in_file_order[:window]) / window < 0.5 * data_mean  # what a replay in time order starts with
