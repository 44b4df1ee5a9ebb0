"""What a training run learns from: the interaction log's split and, with a catalogue, the items'
content; optionally with a share of the items held out of training entirely, to measure how the
model serves items it never saw.

Held-out items are the last model ids of the index. Training histories lose them, validation
users whose target is one of them are left out, and the model is trained with a table that
stops before them; `grow_held_out` then adds them the way a new item is added in production
(content only, no id vector), so the test set scores them honestly.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from shopguide.catalogue import item_rows
from shopguide.errors import UserError
from trainer import data
from trainer.content import ITEM_TOKENS, Vocabulary
from trainer.item_index import ItemIndex


@dataclass
class Corpus:
    index: ItemIndex
    split: data.Split
    trained_ids: int  # model ids below this are trained; the rest are held out
    records: dict[str, dict]  # shop id -> catalogue fields (empty without a catalogue)
    vocabulary: Vocabulary | None = None

    @property
    def held_out(self) -> int:
        return self.index.num_ids - self.trained_ids

    def item_tokens(self, first: int = 0, end: int | None = None) -> torch.Tensor:
        """Content token rows [end - first, ITEM_TOKENS] of model ids first..end-1 (padding: none)."""
        end = self.index.num_ids if end is None else end
        if self.vocabulary is None:
            return torch.zeros(end - first, ITEM_TOKENS, dtype=torch.long)
        shop = [None] + self.index.to_list()
        records = [self.records.get(shop[i]) if shop[i] is not None else None for i in range(first, end)]
        return torch.from_numpy(self.vocabulary.item_rows(records))


def load(path: Path | str, catalogue: Path | str | None = None, hold_out: float = 0.0, seed: int = 0) -> Corpus:
    if not 0.0 <= hold_out < 1.0:
        raise UserError(f"--hold-out {hold_out}: expected a share of the items, at least 0 and below 1")
    index, sequences = data.load(path)

    if hold_out:
        index, sequences = _held_last(index, sequences, hold_out, seed)
    trained = index.num_ids - (round(hold_out * len(index)) if hold_out else 0)
    split = _without(data.leave_one_out(sequences), trained)
    records = read_catalogue(catalogue) if catalogue else {}
    known = [records[item] for item in index.to_list()[:trained - 1] if item in records]
    vocabulary = Vocabulary.learn(known) if catalogue else None
    return Corpus(index, split, trained, records, vocabulary)


def read_catalogue(path: Path | str) -> dict[str, dict]:
    """Shop id -> fields of every readable row of a catalogue file (shopguide/catalogue.py)."""
    return {row.fields["item"]: row.fields for row in item_rows(path) if row.fields is not None}


def grow_held_out(model, corpus: Corpus) -> None:
    model.grow(corpus.index.num_ids, corpus.item_tokens(corpus.trained_ids))


def _held_last(index: ItemIndex, sequences: list[list[int]], share: float, seed: int):
    shop = index.to_list()
    held = set(random.Random(seed).sample(shop, round(share * len(shop))))
    ordered = ItemIndex([item for item in shop if item not in held] + [item for item in shop if item in held])
    remap = [0] + ordered.to_model(shop)
    return ordered, [[remap[i] for i in seq] for seq in sequences]


def _without(split: data.Split, trained: int) -> data.Split:
    """Training and validation free of ids >= trained (the held-out items); test untouched."""
    def keep(seq):
        return [i for i in seq if i < trained]

    valid = [(keep(seq), target) for seq, target in zip(split.valid_inputs, split.valid_targets) if target < trained]
    return data.Split([keep(seq) for seq in split.train], [seq for seq, _ in valid], [t for _, t in valid],
                      split.test_inputs, split.test_targets)
