"""From an interaction log to model-id sequences, the leave-one-out split, and training batches.

Leave-one-out (shared/data/README.md): each user's last item is the test target, the one before
it the validation target, everything earlier is training input. Users with fewer than three
items only contribute training pairs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from serving import wire
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


def training_batches(windows: list[list[int]], batch_size: int, rng: random.Random, last_only: bool = False
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (inputs, targets) batches, grouped by length so little padding is computed.

    With last_only, targets are [batch]: each sequence's next item after its newest.
    """
    order = list(range(len(windows)))
    rng.shuffle(order)
    pool = batch_size * 32
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: len(windows[i]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    for batch in batches:
        seqs = [windows[i] for i in batch]
        width = max(len(s) for s in seqs) - 1
        inputs = left_pad([s[:-1] for s in seqs], width)
        if last_only:
            yield inputs, torch.tensor([s[-1] for s in seqs], dtype=torch.long)
        else:
            yield inputs, left_pad([s[1:] for s in seqs], width)
