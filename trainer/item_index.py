"""The shop's item ids <-> the model's item ids.

Model id 0 is padding (and "unknown"); known items get 1, 2, ... in the order they were first
added. The index only grows: fine-tuning appends new items and never renumbers old ones, so a
model version and the index saved beside it always agree. Saved as a JSON list whose position i
holds the shop id of model id i + 1.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from serving.wire import PADDING


class ItemIndex:
    def __init__(self, items: Iterable = ()):
        self._shop: list[str] = []
        self._model: dict[str, int] = {}
        self.grow(items)

    def __len__(self) -> int:
        """Known items (the padding id not counted)."""
        return len(self._shop)

    def __contains__(self, item) -> bool:
        return str(item) in self._model

    @property
    def num_ids(self) -> int:
        """Rows an embedding table needs: every known item plus padding."""
        return len(self._shop) + 1

    def grow(self, items: Iterable) -> int:
        """Append the items not yet known (ints are str()-ed); returns how many were added."""
        added = 0
        for item in items:
            key = str(item)
            if key not in self._model:
                self._shop.append(key)
                self._model[key] = len(self._shop)
                added += 1
        return added

    def to_model(self, items: Iterable, unknown: int = PADDING) -> list[int]:
        return [self._model.get(str(item), unknown) for item in items]

    def to_shop(self, model_ids: Iterable[int]) -> list[str | None]:
        """Shop ids of model ids; None for padding or ids this index does not hold."""
        return [self._shop[i - 1] if 0 < i <= len(self._shop) else None for i in map(int, model_ids)]

    def to_list(self) -> list[str]:
        return list(self._shop)

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self._shop))

    @classmethod
    def load(cls, path: Path | str) -> "ItemIndex":
        return cls.from_list(json.loads(Path(path).read_text()))

    @classmethod
    def from_list(cls, items: Sequence[str]) -> "ItemIndex":
        index = cls(items)
        if len(index) != len(items):
            raise ValueError("item index list holds duplicate ids")
        return index
