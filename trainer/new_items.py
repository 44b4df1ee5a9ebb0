"""`shopguide new-items`: an item new in the catalogue is recommendable within a minute, without a
fine-tune and without exporting the graph again (30-110 s here).

The process follows the catalogue topic from its beginning (every partition, in no consumer group:
the whole catalogue, as every worker holds it). The live model version knows the items of its
item index and those added to it since (serving/wire.py ADDED_ITEMS). Listed items that it does
not know are gathered for `batch_s`, their vectors computed from their content with the
checkpoint the version was exported from (the text tower alone, no id vector: what
`NextItemModel.grow` gives a new item), and a version derived from the live one is published: the
same graph and files (hard links), plus the added items and their vectors, earlier additions kept.
The publish is the normal one (serving/rollout.py): Triton loads it as a probe model and it answers
before it gets a number, then Triton swaps it in while the old version serves. model.py scores the
added items by the graph's hidden state and merges them into each answer.

It keeps no state of its own: a restarted process tidies what a killed publish left (rollout.recover)
and reads the catalogue again and adds what the live version lacks (nothing, when its last publish
went through). Publishes hold the repository's lock (ModelRepository.publishing), so this process
and the fine-tune job never probe or number versions at once. A fine-tuned version published
meanwhile gets the items its events did not teach it added back the same way. A delisted item
needs nothing here: the workers' catalogue filter drops it from answers.
"""
from __future__ import annotations

import io
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.repository import ModelRepository, added_items, export_meta
from serving.rollout import publish_staged, recover
from serving.wire import ADDED_ITEMS, ADDED_VECTORS
from shopguide.config import Settings
from shopguide.errors import UserError

BATCH_S = 2.0    # items arriving this soon after the first one share its publish
RETRY_S = 10.0   # after a failed publish (Triton down, probe refused)
POLL_MS = 500


@dataclass(frozen=True)
class Live:
    """What the live version knows: its index and the items added to it, with their vectors."""
    version: int
    directory: Path
    index: list[str]
    added: list[str]
    vectors: np.ndarray  # [len(added), hidden]
    known: frozenset[str]  # index and added

    @classmethod
    def read(cls, models: ModelRepository, version: int) -> "Live":
        directory = models.model_dir / str(version)
        index = [str(item) for item in json.loads((directory / "item_index.json").read_text())]
        added = added_items(directory)
        vectors = np.load(directory / ADDED_VECTORS) if added else np.zeros((0, 0), dtype=np.float32)
        return cls(version, directory, index, added, vectors, frozenset(index + added))

    def check(self) -> None:
        """A version whose graph cannot score added items (no text tower, no hidden output)."""
        if "hidden_output" not in export_meta(self.directory):
            raise UserError(f"version {self.version} has no text tower (export.json names no hidden_output): "
                            "new items need a model trained with --catalogue")


def content_vectors(checkpoint, records: list) -> np.ndarray:
    """[len(records), hidden] float32: each catalogue record's (streams.catalog_schema.CatalogItem)
    content vector, as the model's text tower reads it."""
    import torch

    from trainer.content import catalogue_fields

    if checkpoint.model.text is None or checkpoint.vocabulary is None:
        raise UserError("the checkpoint has no text tower: new items need a model trained with --catalogue")
    tokens = torch.from_numpy(checkpoint.vocabulary.item_rows([catalogue_fields(record) for record in records]))
    with torch.no_grad():
        return checkpoint.model.eval().text(tokens).numpy().astype(np.float32)


class NewItems:
    def __init__(self, settings: Settings, checkpoint: Path | None = None, batch_s: float = BATCH_S,
                 progress: bool = True):
        self.settings = settings
        self.models = ModelRepository.from_settings(settings)
        self.fixed_checkpoint = checkpoint
        self.batch_s = batch_s
        self.progress = progress
        self.listed: dict[str, object] = {}   # item id -> its newest CatalogItem
        self.unknown: dict[str, object] = {}  # the listed items the live version does not know
        self.live: Live | None = None
        self.first_seen: float | None = None  # when the oldest unknown item arrived (monotonic)
        self.retry_at = 0.0
        self.said = ""
        self._checkpoint = (None, None)  # (path, Checkpoint) of the last one loaded

    def run(self) -> None:
        """Until interrupted."""
        from streams.catalog_reader import CatalogReader

        for note in recover(self.settings):  # what a killed publish, ours or the fine-tune job's, left
            self.say(f"recovered: {note}")
        reader = CatalogReader(self.settings, self.progress)
        try:
            while True:
                for item, record in reader.poll(POLL_MS):
                    self.apply(item, record)
                if reader.caught_up():
                    self.step()
        finally:
            reader.close()

    def apply(self, item: str, record) -> None:
        if record is None:
            self.listed.pop(item, None)
            self.unknown.pop(item, None)
            return
        self.listed[item] = record
        if self.live is None or item not in self.live.known:
            self.unknown[item] = record
            self.first_seen = self.first_seen or time.monotonic()

    def step(self) -> None:
        """Follow the live version, and publish the unknown items once their batch is complete."""
        version = self.models.live()
        if version is None:
            return self.say(f"no model version in {self.models.model_dir} yet")
        if self.live is None or self.live.version != version:
            try:
                self.live = Live.read(self.models, version)
            except (OSError, ValueError) as exc:  # pruned or rolled back meanwhile: asked again at the next poll
                self.live = None
                return self.say(f"version {version} cannot be read: {exc}")
            self.unknown = {item: record for item, record in self.listed.items() if item not in self.live.known}
            self.prepare()
        if not self.unknown:
            self.first_seen = None
            return self.say(f"version {version} knows every listed item ({len(self.listed)})")
        now = time.monotonic()
        self.first_seen = self.first_seen or now
        if now - self.first_seen >= self.batch_s and now >= self.retry_at:
            self.publish()

    def prepare(self) -> None:
        """Load the live version's checkpoint before an item arrives: torch, transformers and the
        checkpoint take seconds to load, which a new item should not wait for."""
        try:
            self.live.check()
            self.checkpoint(self.live)
        except UserError as exc:
            self.say(f"version {self.live.version}: {exc}")

    def publish(self) -> None:
        live, arrived = self.live, self.first_seen
        try:
            live.check()
            items, vectors = list(self.unknown), content_vectors(self.checkpoint(live), list(self.unknown.values()))
            started = time.monotonic()
            with self.models.publishing():
                if self.models.live() != live.version:  # a fine-tune published meanwhile: derive from that one
                    return
                staging = self.models.derive(live.version, {
                    ADDED_ITEMS: json.dumps(live.added + items).encode(),
                    ADDED_VECTORS: _npy(np.concatenate([live.vectors.reshape(-1, vectors.shape[1]), vectors]))})
                version, serving = publish_staged(self.settings, staging)
        except Exception as exc:  # the follower goes on; the next try comes after RETRY_S
            self.retry_at = time.monotonic() + RETRY_S
            if not isinstance(exc, UserError):
                traceback.print_exc()
            return self.say(f"not published, trying again in {RETRY_S:.0f} s: {exc}")
        self.say(f"version {version} (Triton serves {serving}) adds {len(items)} new items to version "
                 f"{live.version} ({len(live.added) + len(items)} added in all), "
                 f"{time.monotonic() - arrived:.1f} s after the first arrived ({time.monotonic() - started:.1f} s publishing)")

    def checkpoint(self, live: Live):
        """The checkpoint `live` was exported from, loaded once per path."""
        from trainer.checkpoint import Checkpoint
        from trainer.job import checkpoint_path

        path = self.fixed_checkpoint or checkpoint_path(self.models, live.version)
        if self._checkpoint[0] != path:
            self._checkpoint = (path, Checkpoint.load(path))
        checkpoint = self._checkpoint[1]
        if [str(item) for item in checkpoint.index.to_list()] != live.index:
            raise UserError(f"{path} does not hold version {live.version}'s items: not the checkpoint it was "
                            "exported from (--checkpoint)")
        return checkpoint

    def say(self, line: str) -> None:
        if line != self.said:  # a state is reported when it starts, not on every poll
            print(f"new-items: {line}", flush=True)
            self.said = line


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    return buffer.getvalue()
