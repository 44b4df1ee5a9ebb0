"""The recommendation stage: one recommendation per accepted event, pushed to the storefront topic.

Plugged into the session agent as its sink, in two steps: `answer` asks the model (it may run while
the batch before is still sent and confirmed), `deliver` queues the recommendations (in batch
order). Each agent batch becomes at most one Triton call (with a timeout) for the distinct model
inputs in it (a session's items and the search text that still steers it, streams/sessions.py)
that no earlier answer covers (streams/answers.py); answers are mapped to what a shopper should see
(nothing just bought, topped up with popular items), and each is sent to `shop.recommendations`.
When Triton fails, the batch is answered from popularity (`source: fallback`) and Triton is tried
again after a short pause, so model answers resume by themselves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import msgpack

from serving.client import ServingError, TritonClient
from serving.repository import ModelRepository
from shopguide.config import Settings
from shopguide.metrics import WorkerMetrics
from streams.added_items import AddedItems
from streams.agents import SessionUpdate
from streams.answers import AnswerCache
from streams.catalog import Catalog
from streams.delivery import Outbox, Record
from streams.picks import pick
from streams.popularity import Popularity
from streams.sessions import steering_query

VERSION = 1
RETRY_AFTER_S = 1.0  # after a failed call, answer from popularity this long before trying Triton again


@dataclass(frozen=True, slots=True)
class Answers:
    newest: dict      # user key -> the model input asked (model_inputs)
    found: list       # (answer, version) per update, None where popularity answers
    cause: str | None  # why the model did not answer, when it did not


class Recommender:
    def __init__(self, settings: Settings, outbox: Outbox, metrics: WorkerMetrics,
                 client: TritonClient | None = None, popularity: Popularity | None = None,
                 catalog: Catalog | None = None):
        self.k = settings.recommend_k
        self.timeout_s = settings.triton_timeout_s
        self.outbox = outbox
        self.topic = settings.topic_recommendations
        self.metrics = metrics
        self.client = client or TritonClient(settings.triton_grpc, settings.model_name)
        self.popularity = popularity or Popularity()
        self.catalog = catalog or Catalog()
        self.added = AddedItems(ModelRepository.from_settings(settings))
        self.cache = AnswerCache(settings.answer_cache)
        self.query_events = settings.query_events
        self.query_ttl_s = settings.query_ttl_s
        self.retry_at = 0.0
        self.last_cause = "unavailable"

    async def answer(self, updates: Sequence[SessionUpdate]) -> Answers:
        """The model's answers to a batch, not yet sent (they may overlap the batch before's sends)."""
        await self.catalog.ready()
        self.popularity.observe(item for update in updates for item in update.event.items)
        newest = self.model_inputs(updates)
        found, cause = await self.ask_model(updates, newest)
        return Answers(newest, found, cause)

    async def deliver(self, updates: Sequence[SessionUpdate], answers: Answers) -> None:
        """One recommendation per update into the outbox, from `answers` (answer's result)."""
        newest, cause = answers.newest, answers.cause
        for update, found in zip(updates, answers.found):
            answer, version = found if found is not None else (None, None)
            source = "model" if answer is not None else "fallback"
            if answer is None:
                self.metrics.fallbacks.labels(cause or "new_user").inc()
            query = newest[update.key][1] if answer is not None else ""
            if query:
                self.metrics.steered.inc()
            items, scores, reasons = self.finalise(update, answer, query, version)
            await self.send(update, items, scores, reasons, version, source)

    def model_inputs(self, updates: Sequence[SessionUpdate]) -> dict:
        """Per user, the model input of the newest session in the batch: (items, steering query).
        Users with neither are left out: popularity answers them."""
        newest = {update.key: (update.session.items, steering_query(update.session, self.query_events, self.query_ttl_s))
                  for update in updates}
        return {key: asked for key, asked in newest.items() if any(asked)}

    async def ask_model(self, updates: Sequence[SessionUpdate], newest: dict):
        """(answer, version) per update (None where popularity must answer) and the failure cause.
        One inference per distinct model input (`newest`, from model_inputs): a user's events in the
        batch all get the answer to the user's newest input, and an input answered before (an
        unchanged history and query) is answered from the cache."""
        found = {asked: self.cache.get(asked) for asked in set(newest.values())}
        missing = [asked for asked, answer in found.items() if answer is None]
        self.metrics.inferences_saved.inc(sum(1 for update in updates if update.key in newest) - len(missing))
        cause = await self.infer(missing, found) if missing else None
        return [found.get(newest.get(update.key)) for update in updates], cause

    async def infer(self, inputs: list, found: dict) -> str | None:
        """One Triton call for `inputs` ((items, query) each); answers go into `found` and the cache.
        The failure cause."""
        if time.monotonic() < self.retry_at:
            return self.last_cause
        started = time.perf_counter()
        try:
            answers, version = await self.client.recommend([items for items, _ in inputs], self.timeout_s,
                                                           [query for _, query in inputs])
        except ServingError as failure:
            self.retry_at = time.monotonic() + RETRY_AFTER_S
            self.last_cause = failure.cause
            return failure.cause
        self.metrics.triton_latency.observe(time.perf_counter() - started)
        self.metrics.triton_batch.observe(len(inputs))
        self.metrics.model_version.set(version)
        self.cache.confirm(version)
        for asked, answer in zip(inputs, answers):
            found[asked] = (answer, version)
            self.cache.put(asked, answer, version)
        return None

    def finalise(self, update: SessionUpdate, answer, query: str = "",
                 version: int | None = None) -> tuple[list[str], list[float], list[str | None]]:
        """Nothing this shopper bought nor what the catalogue cannot sell; up to k with popular items.
        `query` is the search text that steered the model's answer, `version` the version that gave it."""
        return pick(update.session, answer, self.k, self.popularity, self.catalog.unbuyable, query, self.catalog.titles,
                    self.added.of(version))

    async def send(self, update: SessionUpdate, items, scores, reasons, version, source: str) -> None:
        emitted = time.time()
        record = {
            "v": VERSION, "user": update.user, "items": items, "scores": scores, "reasons": reasons,
            "model_version": version, "source": source,
            "event_type": update.event.type, "event_time": update.event.ts,
            "event_offset": f"{update.topic}:{update.partition}:{update.offset}",
            "produced_time": update.timestamp, "emit_time": emitted,
        }
        await self.outbox.put(Record("recommendation", self.topic, update.key, msgpack.packb(record, use_bin_type=True)))
        self.metrics.recommendations.labels(source).inc()
        self.metrics.latency.observe(max(emitted - update.timestamp, 0.0))
