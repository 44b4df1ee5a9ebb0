"""A data set's shoppers as a steady stream of clicks, for `bench e2e`.

Replaying a data set in time order is not steady: Amazon-style files give each user's items
ordinal times, so the replay goes round by round (every user's first item, then every second
one...), and the histories the model reads grow from 1 item to the longest as it goes (a mean of
2 items 20,000 clicks in, 43 at the end of the Toys data), then start over with the same users,
whose sessions still hold the first pass. Where a stage fell in the replay decided what it
measured.

Here `active` shoppers click at a time, in turn; one who has clicked all their items leaves and
the next arrives (the users in a seeded random order, pass after pass, each pass under fresh user
ids: `user~2`, `user~3`...; the first shoppers are `user~1`). It starts in its steady state: the
first shoppers are drawn in proportion to their number of items, each partway through (as they
would be in a shop open for a while), and the warm-up replays what they clicked before. From then
on the mean history is the data's own (7.9 items for Toys) wherever a stage starts.
"""
from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Iterator, Sequence

ACTIVE = 1000  # each shopper clicks once every ACTIVE clicks


def steady_clicks(pairs: Sequence[tuple[str, str]], active: int = ACTIVE,
                  seed: int = 0) -> tuple[list[tuple[str, str]], Iterator[tuple[str, str]]]:
    """(warm-up, clicks): the (user, item) pairs the first shoppers clicked before, then the steady
    stream. `pairs` in time order; each user's items keep their order."""
    rng = random.Random(seed)
    items: dict[str, list[str]] = defaultdict(list)
    for user, item in pairs:
        items[user].append(item)
    shoppers = _arriving(items, rng)
    first = _drawn_by_length(items, min(active, len(items)), rng)
    slots = [[f"{user}~1", items[user], rng.randrange(len(items[user]))] for user in first]
    warmup = [(user, seen[step]) for step in range(max(at for _, _, at in slots))
              for user, seen, at in slots if step < at]
    return warmup, _in_turn(slots, shoppers)


def _arriving(items: dict[str, list[str]], rng: random.Random) -> Iterator[tuple[str, list[str]]]:
    """Every user in a random order, pass after pass, each pass under fresh ids."""
    users = list(items)
    for number in itertools.count(2):
        rng.shuffle(users)
        for user in users:
            yield f"{user}~{number}", items[user]


def _drawn_by_length(items: dict[str, list[str]], count: int, rng: random.Random) -> list[str]:
    """`count` users without repeats, each drawn with odds in proportion to their items (a
    weighted sample: the largest random()**(1/weight))."""
    return sorted(items, key=lambda user: rng.random() ** (1 / len(items[user])), reverse=True)[:count]


def _in_turn(slots: list[list], shoppers: Iterator[tuple[str, list[str]]]) -> Iterator[tuple[str, str]]:
    while True:
        for slot in slots:
            user, clicks, at = slot
            yield user, clicks[at]
            if at + 1 < len(clicks):
                slot[2] = at + 1
            else:
                slot[:] = [*next(shoppers), 0]
