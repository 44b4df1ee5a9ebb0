"""What a shopper is shown: the model's answer less what they bought and what the catalogue cannot
sell, topped up to k with popular items that pass the same filter, each item with its reason.

The model answers with more than k (the served top_k, 20 by default, against k = 10) so that a few
filtered items still leave k of its own. Reasons (README "Recommendations") cost a string per item:
for the model's items, `searched:<query>` when a search steered the answer and the item's catalogue
title shares a word with the query, else `viewed:<item>`, naming the newest item of the shopper's
history (the position the model reads its next-item prediction from); `new` instead of `viewed` for
an item the answering version knows by its content only (streams/added_items.py); `popular` for
the top-up. A model item gets null when neither applies: this event's session holds no item (a query alone
steered it, or its answer was made for the same user's newer history later in the batch).
"""
from __future__ import annotations

import re
from typing import Container, Mapping

from streams.popularity import Popularity
from streams.sessions import Session

# Words too common in any shop's queries and titles to say why an item was picked
STOP_WORDS = frozenset({"and", "for", "the", "with", "from"})


def pick(session: Session, answer, k: int, popularity: Popularity, unbuyable: Container[str],
         query: str = "", titles: Mapping[str, str] | None = None,
         added: Container[str] = ()) -> tuple[list[str], list[float], list[str | None]]:
    """Items, scores and reasons for `session` from the model's (items, scores), or None; `query`
    is the search text that steered the answer ("" for none), `titles` the catalogue's, `added` the
    items the answering version knows by content only."""
    bought = {str(item) for item in session.purchased}
    items, scores = answer if answer is not None else ([], [])
    kept = [(item, score) for item, score in zip(items, scores) if item not in bought and item not in unbuyable][:k]
    items, scores = popularity.fill([item for item, _ in kept], [score for _, score in kept], k, bought, unbuyable)
    reasons = model_reasons(session, [item for item, _ in kept], query, titles or {}, added)
    return items, scores, reasons + ["popular"] * (len(items) - len(kept))


def model_reasons(session: Session, items: list[str], query: str, titles: Mapping[str, str],
                  added: Container[str] = ()) -> list[str | None]:
    viewed = f"viewed:{session.items[-1]}" if session.items else None
    wanted = words(query)
    searched = f"searched:{query}"
    return [searched if wanted and wanted & words(titles.get(item, "")) else "new" if item in added else viewed
            for item in items]


def words(text: str) -> set[str]:
    """Lower-case words of three or more letters or digits, common ones left out."""
    return set(re.findall(r"[^\W_]{3,}", text.lower())) - STOP_WORDS
