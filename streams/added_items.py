"""Which items the answering model version knows by their content only: those `shopguide new-items`
added to it after its export (serving/wire.py ADDED_ITEMS), read from the model repository the
workers share with Triton, once per version that answers. They get the reason `new` (streams/picks.py).
"""
from __future__ import annotations

from pathlib import Path

from serving.repository import ModelRepository, added_items


class AddedItems:
    def __init__(self, models: ModelRepository):
        self.models = models
        self.version: int | None = None
        self.items: frozenset[str] = frozenset()

    def of(self, version: int | None) -> frozenset[str]:
        """The added items of `version` (none for None, or when its directory cannot be read: a
        repository this worker does not see, a version pruned since it answered)."""
        if version != self.version:
            self.version, self.items = version, self._read(version)
        return self.items

    def _read(self, version: int | None) -> frozenset[str]:
        if version is None:
            return frozenset()
        try:
            return frozenset(added_items(Path(self.models.model_dir) / str(version)))
        except (OSError, ValueError):
            return frozenset()
