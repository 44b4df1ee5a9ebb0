"""The seen-item bias: one number added to the score of every item already in a shopper's history.

It is fitted after training, with every other weight fixed, to the training prefixes: the value
that makes their next items most likely. So it follows the shop's data, not a rule: where shoppers
never come back to an item (the Toys file: no target repeats its history) it goes to the lower
bound and the model stops answering a history with its own items; where they often do (23 % of the
Diginetica sample's next views) it can lift them.

Why not learn it with the rest: trained jointly, the bias buries the history's items at once, the
loss stops pushing their vectors away from the hidden state, and the model learns less about the
items around them (README, "Items already seen": lower HR@20 on validation than fitting it after).
"""
from __future__ import annotations

import random
from typing import Sequence

import torch

from trainer.data import left_pad
from trainer.item_index import PADDING
from trainer.model import NEG_INF, NextItemModel

ROWS = 10_000   # training prefixes the fit reads: one number needs few
BOUND = 20.0    # |bias| at most: e^-20 is as good as a mask, and a log with no repeat has no finite optimum
CHUNK_SCORES = 2 ** 24  # scores held at once: 256 prefixes on Toys, 16 at a million items
STEPS = 60      # bisection steps over [-BOUND, BOUND]


@torch.no_grad()
def fit(model: NextItemModel, prefixes: Sequence[list[int]], rng: random.Random) -> float:
    """The bias in [-BOUND, BOUND] that maximises the likelihood of each prefix's last item given
    the items before it (ROWS prefixes drawn with rng), the model's other weights fixed."""
    drawn = rng.sample(list(prefixes), min(ROWS, len(prefixes)))
    was_training = model.training
    model.eval()
    try:
        chunk = max(1, min(256, CHUNK_SCORES // model.num_ids))
        parts = [_sums(model, drawn[start:start + chunk]) for start in range(0, len(drawn), chunk)]
    finally:
        model.train(was_training)
    if not parts:
        return 0.0
    gap, repeats = (torch.cat(column) for column in zip(*parts))
    return _solve(gap, repeats.float().mean())


def _sums(model: NextItemModel, prefixes: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prefix: log-sum-exp of the scores of the seen items minus that of the others (without
    the bias), and whether the target is a seen item."""
    inputs = left_pad([p[:-1] for p in prefixes], model.args.max_len)
    targets = torch.tensor([p[-1] for p in prefixes])
    table = model.item_table()
    scores = model.encode_newest(inputs, None, table) @ table.T
    seen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, inputs, True)
    seen[:, PADDING] = False
    others = scores.masked_fill(seen, NEG_INF).index_fill(1, torch.tensor([PADDING]), NEG_INF)
    gap = scores.masked_fill(~seen, NEG_INF).logsumexp(1) - others.logsumexp(1)
    return gap, seen.gather(1, targets[:, None])[:, 0]


def _solve(gap: torch.Tensor, repeat_share: torch.Tensor) -> float:
    """The mean negative log-likelihood's derivative in the bias b is mean(sigmoid(gap + b)) minus
    the share of targets that repeat: increasing in b, so bisection finds its zero (or a bound)."""
    low, high = -BOUND, BOUND
    for _ in range(STEPS):
        middle = (low + high) / 2
        if torch.sigmoid(gap.double() + middle).mean() > repeat_share:
            high = middle
        else:
            low = middle
    return (low + high) / 2
