"""From an interaction log to model-id sequences, the leave-one-out split, and training batches.

Leave-one-out (shared/data/README.md): each user's last item is the test target, the one before
it the validation target, everything earlier is training input. Users with fewer than three
items only contribute training pairs.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from serving import wire
from serving.wire import PADDING
from shopguide import datasets
from trainer.item_index import ItemIndex


@dataclass
class Split:
    train: list[list[int]]  # per user, the items the model may learn from
    valid_inputs: list[list[int]]
    valid_targets: list[int]
    test_inputs: list[list[int]]
    test_targets: list[int]


def load(path: Path | str, index: ItemIndex | None = None) -> tuple[ItemIndex, list[list[int]]]:
    """Each user's model-id sequence.

    Without an index, a new one is built from every item of the file; with one (a trained
    model's), it is left as it is and items it does not know become padding.
    """
    by_user = datasets.sequences(datasets.read(path))
    if index is None:
        index = ItemIndex()
        for items in by_user.values():
            index.grow(items)
    return index, [index.to_model(items) for items in by_user.values()]


def leave_one_out(sequences: Sequence[list[int]]) -> Split:
    split = Split([], [], [], [], [])
    for seq in sequences:
        if len(seq) < 3:
            split.train.append(list(seq))
            continue
        split.train.append(seq[:-2])
        split.valid_inputs.append(seq[:-2])
        split.valid_targets.append(seq[-2])
        split.test_inputs.append(seq[:-1])
        split.test_targets.append(seq[-1])
    return split


def training_windows(sequences: Sequence[list[int]], max_len: int) -> list[list[int]]:
    """Sequences of at most max_len + 1 items (one input window plus its shifted targets).

    Longer histories are cut into consecutive windows so no training pair is dropped.
    """
    windows = []
    for seq in sequences:
        if len(seq) < 2:
            continue
        for end in range(len(seq), 1, -max_len):
            windows.append(seq[max(0, end - max_len - 1):end])
    return windows


def training_prefixes(sequences: Sequence[list[int]], max_len: int) -> list[list[int]]:
    """Every prefix of every history with the item that followed it (at most max_len + 1 items).

    Trained with the loss on the last item only, each target is predicted from the position the
    served model answers from (the newest slot), with the history that preceded it.
    """
    return [seq[max(0, end - max_len - 1):end] for seq in sequences for end in range(2, len(seq) + 1)]


def left_pad(sequences: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """[batch, length] int64 (serving/wire.py's padding); length = the longest sequence, at most max_len."""
    return torch.from_numpy(wire.left_pad(sequences, max_len))


class TrainingSet:
    """Training windows padded once into one tensor, so a batch is a row gather, not Python padding.

    With last_only, a batch's targets are [batch]: each sequence's next item after its newest.
    """

    def __init__(self, windows: Sequence[Sequence[int]], last_only: bool = False):
        self.lengths = [len(w) for w in windows]
        self.rows = torch.from_numpy(wire.left_pad(windows, dtype=np.int32))  # int32: half the memory
        self.last_only = last_only

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self, batch_size: int, rng: random.Random) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (inputs, targets) batches, grouped by length so little padding is computed."""
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        pool = batch_size * 32
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=self.lengths.__getitem__)
            batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        lengths = torch.tensor(self.lengths)
        for batch in torch.tensor(list(itertools.chain(*batches))).split([len(b) for b in batches]):
            yield self._batch(batch, lengths[batch])

    def _batch(self, batch: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = int(lengths.max())
        rows = self.rows.index_select(0, batch)[:, -width:].long()
        if self.last_only:
            return rows[:, :-1], rows[:, -1]
        # a shorter window's first item sits in the column after the inputs' padding: not a target
        before = torch.arange(width - 1) < (width - lengths)[:, None]
        return rows[:, :-1], rows[:, 1:].masked_fill(before, PADDING)
