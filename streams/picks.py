"""What a shopper is shown: the model's answer less what they bought and what the catalogue cannot
sell, topped up to k with popular items that pass the same filter, each item with its reason.

The model answers with more than k (the served top_k, 20 by default, against k = 10) so that a few
filtered items still leave k of its own. Reasons (README "Recommendations") cost a string per item:
`viewed:<item>` for the model's items, naming the newest item of the shopper's history (the
position the model reads its next-item prediction from), and `popular` for the top-up; null for a
model item when this event's session holds no item (its answer was made for the same user's newer
history later in the batch).
"""
from __future__ import annotations

from typing import Container

from streams.popularity import Popularity
from streams.sessions import Session


def pick(session: Session, answer, k: int, popularity: Popularity,
         unbuyable: Container[str]) -> tuple[list[str], list[float], list[str | None]]:
    """Items, scores and reasons for `session` from the model's (items, scores), or None."""
    bought = {str(item) for item in session.purchased}
    items, scores = answer if answer is not None else ([], [])
    kept = [(item, score) for item, score in zip(items, scores) if item not in bought and item not in unbuyable][:k]
    items, scores = popularity.fill([item for item, _ in kept], [score for _, score in kept], k, bought, unbuyable)
    cue = f"viewed:{session.items[-1]}" if session.items else None
    return items, scores, [cue] * len(kept) + ["popular"] * (len(items) - len(kept))
