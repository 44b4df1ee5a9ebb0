"""Does a search steer the answer? Measured on the test users, with simulated queries.

No query log comes with the public data, so a query is simulated: for each test user whose target
item's catalogue title has at least two words, two or three consecutive words of that title,
drawn with a fixed seed (the words a shopper who then opens that item might have typed). The same
full-ranking protocol as `trainer/evaluate.py` (all items, seen items kept, ties against the
target) scores four ways of asking, on the same users:

- history only: what the model answers without a search;
- history + query: the shopper searched, then opened the target;
- history + unrelated query: the query of another user's target (a search that the next item
  does not answer): how much a misleading query costs;
- query only: no history, as for a shopper who arrives by searching.
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch

from shopguide.catalogue import simulated_query
from trainer.data import left_pad
from trainer.evaluate import evaluate_scorer

WAYS = ("history only", "history + query", "history + unrelated query", "query only")


def evaluate_search(model, vocabulary, inputs: Sequence[list[int]], targets: Sequence[int],
                    titles: dict[int, str], seed: int = 0) -> dict[str, dict[str, float]]:
    """Metrics per way of asking (WAYS) over the users whose target title gives a query; titles:
    model id -> catalogue title. The row names say how many users were scored."""
    rng = random.Random(seed)
    users, queries = [], []
    for n, target in enumerate(targets):
        query = simulated_query(titles.get(target, ""), rng)
        if query is not None:
            users.append(n)
            queries.append(query)
    unrelated = _unrelated(queries, [targets[n] for n in users], rng)
    histories = [inputs[n] for n in users]
    wanted = [targets[n] for n in users]
    asked = {WAYS[0]: (histories, [""] * len(users)), WAYS[1]: (histories, queries),
             WAYS[2]: (histories, unrelated), WAYS[3]: ([[] for _ in users], queries)}
    was_training = model.training
    model.eval()
    try:
        return {f"{way} ({len(users)} users)": _metrics(model, vocabulary, seqs, texts, wanted)
                for way, (seqs, texts) in asked.items()}
    finally:
        model.train(was_training)


def _unrelated(queries: list[str], targets: list[int], rng: random.Random) -> list[str]:
    """Each user gets the query of another user with a different target."""
    order = list(range(len(queries)))
    rng.shuffle(order)
    shifted = order[1:] + order[:1]
    other = dict(zip(order, shifted))
    return [queries[other[n]] if targets[other[n]] != targets[n] else "" for n in range(len(queries))]


@torch.no_grad()
def _metrics(model, vocabulary, histories, texts, targets) -> dict[str, float]:
    rows = list(zip(histories, vocabulary.query_rows(texts)))

    def score(batch):
        items = left_pad([history for history, _ in batch], model.args.max_len)
        return model(items, torch.from_numpy(np.stack([query for _, query in batch])))

    return evaluate_scorer(score, rows, targets)


def content_sections(checkpoint, path) -> dict[str, dict[str, dict[str, float]]]:
    """The report's tables for a model with a text tower: searches on the test users of `path`
    (queries from the training catalogue, checkpoint.config["catalogue"]) and, for a run that held
    items out (`--hold-out`), its held-out test figures as measured when training ended."""
    from trainer import data
    from trainer.corpus import read_catalogue

    sections = {}
    catalogue = checkpoint.config.get("catalogue")
    if checkpoint.vocabulary is not None and catalogue:
        records = read_catalogue(catalogue)
        shop = checkpoint.index.to_list()
        titles = {n: records[item]["title"] for n, item in enumerate(shop, start=1) if item in records}
        _, sequences = data.load(path, checkpoint.index)
        split = data.leave_one_out(sequences)
        sections["Search: the test users, a query simulated from the target's title"] = evaluate_search(
            checkpoint.model, checkpoint.vocabulary, split.test_inputs, split.test_targets, titles)
    held = checkpoint.metrics.get("held_out")
    if held:
        users = int(held["users"]["count"])
        sections[f"Items held out of training ({checkpoint.config.get('hold_out')} of them): the {users} test users "
                 "whose target is one"] = {name: held[name] for name in ("this model", "popularity")}
    return sections
