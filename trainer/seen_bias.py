"""The seen-item bias: one number added to the score of every item already in a shopper's history.

It is chosen after training, with every other weight fixed, on the validation users, as early
stopping is: the value on a grid over [-BOUND, BOUND] whose answers rank their held-out next items
best (NDCG@20, the monitored metric). So it follows the shop's data, not a rule: where shoppers
never come back to an item (the Toys file: no target repeats its history) it goes to the lower
bound and the model stops answering a history with its own items; where they often do (24 % of the
Diginetica sample's validation targets) it can lift them.

Not the likelihood's optimum: the model spreads much of its probability over the history's items,
so the most likely bias buries them even where shoppers come back (-3.7 on Diginetica, whose
rankings are best near +1). Not learnt with the other weights: trained jointly, the bias buries
the history's items at once, the loss stops pushing their vectors away from the hidden state, and
the model ends lower on validation (README, "What moved the numbers").
"""
from __future__ import annotations

from typing import Sequence

import torch

from trainer.data import left_pad
from trainer.evaluate import KS
from trainer.item_index import PADDING
from trainer.model import NEG_INF, NextItemModel

BOUND = 20.0            # e^-20 is as good as a mask
GRID = torch.linspace(-BOUND, BOUND, 161)  # steps of 0.25
CUT = KS[-1]            # NDCG@20
CHUNK_SCORES = 2 ** 24  # scores held at once: 256 histories on Toys, 16 at a million items


@torch.no_grad()
def fit(model: NextItemModel, inputs: Sequence[list[int]], targets: Sequence[int]) -> float:
    """The bias on GRID whose scores give the targets after their histories (inputs) the best
    NDCG@20 (ties against the target, as trainer/evaluate.py counts them; the lowest such bias
    when several tie), the model's other weights fixed. 0 without histories."""
    if not len(inputs):
        return 0.0
    was_training = model.training
    model.eval()
    try:
        chunk = max(1, min(256, CHUNK_SCORES // model.num_ids))
        gains = sum(_gains(model, inputs[start:start + chunk], targets[start:start + chunk])
                    for start in range(0, len(inputs), chunk))
    finally:
        model.train(was_training)
    return GRID[int(torch.argmax(gains))].item()  # argmax: the first, lowest, of equal bests


def _gains(model: NextItemModel, inputs: Sequence[list[int]], targets: Sequence[int]) -> torch.Tensor:
    """Summed NDCG@20 of these rows at each bias on GRID [len(GRID)]. Only the CUT best other
    items outside the history can outrank a target within the cut, so they and the history's items
    are all each bias needs."""
    ids = left_pad(inputs, model.args.max_len)
    wanted = torch.tensor(targets)[:, None]
    table = model.item_table()
    scores = model.encode_newest(ids, None, table) @ table.T
    target = scores.gather(1, wanted)
    seen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, ids, True)
    seen[:, PADDING] = False
    repeat = seen.gather(1, wanted).double()
    seen.scatter_(1, wanted, False)  # from here on: the other items
    others = scores.masked_fill(seen, NEG_INF).index_fill(1, torch.tensor([PADDING]), NEG_INF)
    others = others.scatter(1, wanted, NEG_INF).topk(min(CUT, others.shape[1]), dim=1).values
    history = torch.where(seen.gather(1, ids), scores.gather(1, ids), NEG_INF)
    history = torch.where(_first(ids), history, NEG_INF)  # an item held twice counts once
    bias = GRID.double()[:, None, None]
    at = target.double()[None] + bias * repeat[None]                       # [grid, rows, 1]
    rank = (others.double()[None] >= at).sum(-1) + (history.double()[None] + bias >= at).sum(-1)
    return torch.where(rank < CUT, 1.0 / torch.log2(rank.double() + 2.0), 0.0).sum(1)


def _first(ids: torch.Tensor) -> torch.Tensor:
    """Where each row of ids [rows, length] holds an item for the first time."""
    return ~(ids[:, :, None] == ids[:, None, :]).tril(-1).any(-1)
