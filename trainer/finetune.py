"""One incremental fine-tuning step: new events in, a candidate model and the gate's decision out.

The step starts from the live model's checkpoint, grows its item index and embedding table for
items it has never seen (old ids never move), and trains on each user's recent history plus the
new events, beside many older users' histories (rehearsal, against forgetting). The newest users
are held out whole: candidate and live both rank each one's last item against ALL items (the
candidate's catalogue, so the live model scores the items it does not know at the bottom, as it
does when serving), and the candidate is published only if its NDCG@20 is not worse. The Kafka
job (trainer/job.py) and `bench online` both call `fine_tune`.
"""
from __future__ import annotations

import copy
import dataclasses
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from trainer import data
from trainer.checkpoint import Checkpoint
from trainer.evaluate import evaluate_model, evaluate_scorer
from trainer.finetune_config import FinetuneConfig
from trainer.item_index import ItemIndex
from trainer.model import NEG_INF
from trainer.train import MONITOR, TrainConfig, train


@dataclass
class Result:
    outcome: str  # "published" (the gate passed), "rejected" or "skipped" (too few users to judge)
    candidate: Checkpoint | None
    candidate_metrics: dict[str, float]
    live_metrics: dict[str, float]
    users: int  # users with new events
    held_out: int  # users whose last new event was held out
    new_items: int


def user_sequences(events: Iterable) -> dict[str, list[str]]:
    """Each user's item ids (shop ids as str) in event-time order; searches carry no item.

    `events` are streams.events.Event objects from any topics and partitions, in any order.
    """
    by_user: dict[str, list[str]] = {}
    for event in sorted(events, key=lambda e: e.ts):
        if event.items:
            by_user.setdefault(str(event.user), []).extend(str(item) for item in event.items)
    return by_user


class Histories:
    """The newest items of each user seen so far (oldest user first), the context of new events."""

    def __init__(self, items: dict[str, list[str]] | None = None, max_len: int = 50, max_users: int = 200_000):
        self.items: OrderedDict[str, list[str]] = OrderedDict(items or {})
        self.max_len = max_len
        self.max_users = max_users

    def get(self, user: str) -> list[str]:
        return self.items.get(user, [])

    def update(self, new: dict[str, list[str]]) -> None:
        for user, items in new.items():
            self.items[user] = (self.items.pop(user, []) + items)[-self.max_len:]
        while len(self.items) > self.max_users:
            self.items.popitem(last=False)


def grow_index(index: ItemIndex, new: dict[str, list[str]]) -> ItemIndex:
    """A copy of `index` with the unseen items appended in order of first appearance."""
    grown = ItemIndex.from_list(index.to_list())
    for items in new.values():
        grown.grow(items)
    return grown


def build_split(index: ItemIndex, histories: Histories, new: dict[str, list[str]], max_len: int,
                rehearsal: float = 0.0, seed: int = 0, holdout: float = 0.2) -> data.Split:
    """Train on the users with new events except the newest `holdout` share of them, who are held
    out whole: the gate ranks each one's last item from the items before it (history + new), as
    the served model would meet a shopper it was not trained on. Early stopping watches the
    trained users' last items.

    `rehearsal` * len(new) histories of other users join the training part only: replaying some
    of what the model already learned keeps it from forgetting it while it learns the new events.
    """
    users = list(new)  # in order of each user's first new event
    held = set(users[len(users) - round(holdout * len(users)):]) if holdout > 0 else set()
    split = data.Split([], [], [], [], [])
    for user in users:
        seq = index.to_model(histories.get(user)[-max_len:] + new[user])
        if user in held:
            if len(seq) >= 2:
                split.test_inputs.append(seq[:-1])
                split.test_targets.append(seq[-1])
        elif len(seq) < 3:
            split.train.append(seq)
        else:
            split.train.append(seq[:-1])
            split.valid_inputs.append(seq[:-1])
            split.valid_targets.append(seq[-1])
    others = [user for user in histories.items if user not in new]
    count = min(len(others), int(rehearsal * len(new)))
    split.train += [index.to_model(histories.get(user)) for user in random.Random(seed).sample(others, count)]
    return split


def decide(candidate: dict[str, float], live: dict[str, float], min_gain: float = 0.0) -> bool:
    """Publish only a candidate that is not worse than the live model (by NDCG@20, plus min_gain)."""
    return candidate[MONITOR] >= live[MONITOR] + min_gain


@torch.no_grad()
def evaluate_live(live: Checkpoint, inputs: Sequence[list[int]], targets: Sequence[int], num_ids: int) -> dict[str, float]:
    """The live model on the grown catalogue: items it does not know drop out of its inputs (as in
    the served model) and rank below every item it knows."""
    known = live.model.num_ids
    model = live.model.eval()

    def score(batch):
        rows = [[item for item in seq if item < known] for seq in batch]
        scores = model(data.left_pad(rows, model.args.max_len))
        return torch.nn.functional.pad(scores, (0, num_ids - known), value=NEG_INF)

    return evaluate_scorer(score, inputs, targets)


def fine_tune(live: Checkpoint, histories: Histories, new: dict[str, list[str]],
              config: FinetuneConfig = FinetuneConfig(), progress: bool = True, catalogue: dict | None = None) -> Result:
    """Fine-tune a copy of `live` on the new items of each user; `live` itself is left untouched.
    With a text tower, `catalogue` (shop id -> fields for trainer/content.py) gives the items it
    grows by their content, and its listed items that no event named yet are grown too: the
    candidate keeps a content vector for every listed item (trainer/new_items.py served them so)."""
    index = grow_index(live.index, new)
    if catalogue and live.model.text is not None:
        index.grow(catalogue)
    max_len = live.model.args.max_len
    split = build_split(index, histories, new, max_len, config.rehearsal, config.seed, config.holdout)
    new_items, users, held_out = len(index) - len(live.index), len(new), len(split.test_targets)
    if held_out < max(config.min_users, 1):
        return Result("skipped", None, {}, {}, users, held_out, new_items)
    live_metrics = evaluate_live(live, split.test_inputs, split.test_targets, index.num_ids)
    candidate = _grown_copy(live, index, catalogue or {})
    torch.manual_seed(config.seed)
    train(candidate, split, _train_config(live, config), progress=progress)
    candidate_metrics = evaluate_model(candidate.model, split.test_inputs, split.test_targets)
    candidate.metrics = {"finetune_candidate": candidate_metrics, "finetune_live": live_metrics}
    outcome = "published" if decide(candidate_metrics, live_metrics, config.min_gain) else "rejected"
    return Result(outcome, candidate, candidate_metrics, live_metrics, users, held_out, new_items)


def _grown_copy(live: Checkpoint, index: ItemIndex, catalogue: dict) -> Checkpoint:
    model = copy.deepcopy(live.model)
    tokens = None
    if live.vocabulary is not None:  # an item the catalogue lacks gets a row of padding: no content
        added = index.to_list()[len(live.index):]
        tokens = torch.from_numpy(live.vocabulary.item_rows([catalogue.get(item) for item in added]))
    model.grow(index.num_ids, tokens)
    return Checkpoint(model, index, dict(live.config), list(live.history), {}, live.data, vocabulary=live.vocabulary)


def _train_config(live: Checkpoint, config: FinetuneConfig) -> TrainConfig:
    """The live model's own training settings (prefixes, weight decay ...), with the fine-tune budget."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in live.config.items() if k in known}
    args = live.model.args
    settings.update(max_len=args.max_len, hidden=args.hidden, layers=args.layers, heads=args.heads,
                    dropout=args.dropout, lr=config.lr, batch_size=config.batch_size, max_epochs=config.max_epochs,
                    patience=config.patience, max_minutes=config.max_minutes, seed=config.seed)
    return TrainConfig(**settings)
